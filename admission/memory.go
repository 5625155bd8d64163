package admission

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory finds how much memory new streams could still use: the kernel's
// MemAvailable, or less when a cgroup the server is in (a container, a
// systemd slice's MemoryMax) has a limit nearer. Paths are fields so tests
// can point them at a fake tree.
type Memory struct {
	Meminfo    string // /proc/meminfo
	SelfCgroup string // /proc/self/cgroup
	Mountinfo  string // /proc/self/mountinfo: where each hierarchy is mounted
}

// SystemMemory reads the running system's files.
func SystemMemory() Memory {
	return Memory{Meminfo: "/proc/meminfo", SelfCgroup: "/proc/self/cgroup", Mountinfo: "/proc/self/mountinfo"}
}

// Read returns the bytes available (at least 1) and the total they are
// part of (MemTotal, or the binding cgroup's limit); 0, 0 when nothing
// says.
func (m Memory) Read() (avail, total int64) {
	avail, total = -1, -1
	if b, err := os.ReadFile(m.Meminfo); err == nil {
		avail, total = meminfoField(b, "MemAvailable:"), meminfoField(b, "MemTotal:")
	}
	if left, limit, ok := m.cgroupLeft(); ok && (avail < 0 || left < avail) {
		avail, total = left, limit
	}
	if avail < 0 {
		return 0, 0
	}
	return max(1, avail), max(0, total)
}

// cgroup files, v2 and v1: the limit, the usage, and the memory.stat field
// of page cache the kernel can drop.
var (
	cgroupV2 = [3]string{"memory.max", "memory.current", "inactive_file"}
	cgroupV1 = [3]string{"memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"}
)

// cgroupLeft is the least, over the server's memory cgroup and its
// ancestors within the mount, of limit less unreclaimable usage; ok is
// false when none has a limit.
func (m Memory) cgroupLeft() (left, limit int64, ok bool) {
	b, err := os.ReadFile(m.SelfCgroup)
	if err != nil {
		return 0, 0, false
	}
	mounts, _ := os.ReadFile(m.Mountinfo)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var files [3]string
		var root, point string
		switch {
		case parts[0] == "0" && parts[1] == "":
			files = cgroupV2
			root, point = findMount(mounts, func(fstype, _ string) bool { return fstype == "cgroup2" })
		case strings.Contains(","+parts[1]+",", ",memory,"):
			files = cgroupV1
			root, point = findMount(mounts, func(fstype, opts string) bool {
				return fstype == "cgroup" && strings.Contains(","+opts+",", ",memory,")
			})
		default:
			continue
		}
		if point == "" {
			continue
		}
		if l, lim, found := walkUp(leafDir(parts[2], root, point), point, files); found && (!ok || l < left) {
			left, limit, ok = l, lim, true
		}
	}
	return left, limit, ok
}

// findMount returns the root and mount point of the first mount in
// mountinfo text that match accepts (by filesystem type and super
// options).
func findMount(mountinfo []byte, match func(fstype, opts string) bool) (root, point string) {
	for _, line := range strings.Split(string(mountinfo), "\n") {
		pre, post, found := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !found || len(f) < 5 || len(g) < 3 || !match(g[0], g[2]) {
			continue
		}
		return f[3], f[4]
	}
	return "", ""
}

// leafDir maps the server's cgroup path to a directory under the mount:
// the path relative to the mount's root, or the mount point itself when
// the path is outside what is mounted (a container that sees only its
// own cgroup, mounted at the top).
func leafDir(path, root, point string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return point
	}
	dir := filepath.Join(point, rel)
	if _, err := os.Stat(dir); err != nil {
		return point
	}
	return dir
}

// walkUp reads each cgroup from dir up to the mount point and returns the
// least limit less unreclaimable usage, with that cgroup's limit.
func walkUp(dir, point string, files [3]string) (left, limit int64, found bool) {
	for {
		lim, ok1 := readInt(filepath.Join(dir, files[0]))
		use, ok2 := readInt(filepath.Join(dir, files[1]))
		if ok1 && ok2 && lim < 1<<60 { // not "max", nor v1's page-rounded "no limit"
			if stat, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
				use -= statField(stat, files[2])
			}
			if l := max(0, lim-use); !found || l < left {
				left, limit, found = l, lim, true
			}
		}
		if dir == point || len(dir) <= len(point) {
			return left, limit, found
		}
		dir = filepath.Dir(dir)
	}
}

// meminfoField returns a /proc/meminfo field in bytes, or -1.
func meminfoField(b []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == name {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return kb * 1024
			}
		}
	}
	return -1
}

// statField returns a memory.stat field, 0 when absent.
func statField(b []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// readInt reads a file holding one integer; "max" is not one.
func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}
