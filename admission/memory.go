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
// MemAvailable, or less when the server's cgroup (a container, a systemd
// MemoryMax) has a limit nearer. Paths are fields so tests can point them
// at a fake tree.
type Memory struct {
	Meminfo    string // /proc/meminfo
	SelfCgroup string // /proc/self/cgroup
	CgroupRoot string // /sys/fs/cgroup
}

// SystemMemory reads the running system's files.
func SystemMemory() Memory {
	return Memory{Meminfo: "/proc/meminfo", SelfCgroup: "/proc/self/cgroup", CgroupRoot: "/sys/fs/cgroup"}
}

// Available returns the bytes available (at least 1), or 0 when nothing
// says.
func (m Memory) Available() int64 {
	avail := int64(-1)
	if b, err := os.ReadFile(m.Meminfo); err == nil {
		avail = meminfoAvailable(b)
	}
	if left, ok := m.cgroupLeft(); ok && (avail < 0 || left < avail) {
		avail = left
	}
	if avail < 0 {
		return 0
	}
	return max(1, avail)
}

// cgroupLeft is the cgroup's limit less what it uses that cannot be
// reclaimed (its inactive page cache can), cgroup v2 or v1; ok is false
// when it has no limit or none can be read.
func (m Memory) cgroupLeft() (int64, bool) {
	b, err := os.ReadFile(m.SelfCgroup)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, limit, usage, inactive string
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			dir = filepath.Join(m.CgroupRoot, parts[2])
			limit, usage, inactive = "memory.max", "memory.current", "inactive_file"
		case strings.Contains(","+parts[1]+",", ",memory,"): // v1
			dir = filepath.Join(m.CgroupRoot, "memory", parts[2])
			limit, usage, inactive = "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
		default:
			continue
		}
		lim, ok1 := readInt(filepath.Join(dir, limit))
		use, ok2 := readInt(filepath.Join(dir, usage))
		if !ok1 || !ok2 || lim >= 1<<60 { // "max", or v1's page-rounded "no limit"
			continue
		}
		if stat, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
			use -= statField(stat, inactive)
		}
		return max(0, lim-use), true
	}
	return 0, false
}

// meminfoAvailable returns MemAvailable from /proc/meminfo text in bytes,
// or -1.
func meminfoAvailable(b []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemAvailable:" {
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
