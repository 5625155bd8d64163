package admission

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(text, "ROOT", root)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The memory a new stream could use is the nearer of the machine's
// MemAvailable and the least, over the server's memory cgroup and its
// ancestors, of limit less usage (without the page cache it could drop),
// found where mountinfo says each hierarchy is mounted, cgroup v2 and v1.
// Without a limit, or with files that cannot be read, MemAvailable stands;
// with nothing at all, it is unknown (0).
func TestMemoryAvailable(t *testing.T) {
	const meminfo = "MemTotal: 8000000 kB\nMemFree: 10 kB\nMemAvailable: 4000000 kB\n"
	const v2mount = "30 25 0:26 / ROOT/cg rw,nosuid - cgroup2 cgroup2 rw\n"
	const v1mount = "31 25 0:27 / ROOT/cg/memory rw - cgroup cgroup rw,memory\n32 25 0:28 / ROOT/cg/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
	machine := [2]int64{4000000 << 10, 8000000 << 10}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  [2]int64 // available, total
	}{
		{"machine only", map[string]string{"meminfo": meminfo, "self": "0::/\n", "mountinfo": v2mount}, machine},
		{"v2 limit nearer", map[string]string{"meminfo": meminfo, "self": "0::/svc\n", "mountinfo": v2mount,
			"cg/svc/memory.max": "1073741824\n", "cg/svc/memory.current": "900000000\n", "cg/svc/memory.stat": "anon 1\ninactive_file 100000000\n"},
			[2]int64{1073741824 - 800000000, 1073741824}},
		{"v2 limit on a parent slice", map[string]string{"meminfo": meminfo, "self": "0::/app.slice/pub.service\n", "mountinfo": v2mount,
			"cg/app.slice/pub.service/memory.max": "max\n", "cg/app.slice/pub.service/memory.current": "100\n",
			"cg/app.slice/memory.max": "1000000\n", "cg/app.slice/memory.current": "400000\n"},
			[2]int64{600000, 1000000}},
		{"v2 in a container: the mount is its own cgroup", map[string]string{"meminfo": meminfo, "self": "0::/docker/abc\n",
			"mountinfo":     "30 25 0:26 /docker/abc ROOT/cg rw - cgroup2 cgroup2 rw\n",
			"cg/memory.max": "536870912\n", "cg/memory.current": "36870912\n"}, [2]int64{500000000, 536870912}},
		{"v2 no limit", map[string]string{"meminfo": meminfo, "self": "0::/svc\n", "mountinfo": v2mount, "cg/svc/memory.max": "max\n", "cg/svc/memory.current": "5\n"}, machine},
		{"v1 limit nearer", map[string]string{"meminfo": meminfo, "self": "4:memory:/box\n1:cpu,cpuacct:/\n0::/\n", "mountinfo": v1mount,
			"cg/memory/box/memory.limit_in_bytes": "536870912\n", "cg/memory/box/memory.usage_in_bytes": "436870912\n", "cg/memory/box/memory.stat": "total_inactive_file 0\n"},
			[2]int64{100000000, 536870912}},
		{"v1 without a cgroup namespace: a path the mount does not hold", map[string]string{"meminfo": meminfo, "self": "4:memory:/docker/abc\n", "mountinfo": v1mount,
			"cg/memory/memory.limit_in_bytes": "268435456\n", "cg/memory/memory.usage_in_bytes": "68435456\n"}, [2]int64{200000000, 268435456}},
		{"v1 no limit", map[string]string{"meminfo": meminfo, "self": "4:memory:/\n", "mountinfo": v1mount,
			"cg/memory/memory.limit_in_bytes": "9223372036854771712\n", "cg/memory/memory.usage_in_bytes": "1005219840\n"}, machine},
		{"over the limit", map[string]string{"meminfo": meminfo, "self": "0::/svc\n", "mountinfo": v2mount, "cg/svc/memory.max": "100\n", "cg/svc/memory.current": "200\n"}, [2]int64{1, 100}},
		{"cgroup only", map[string]string{"self": "0::/svc\n", "mountinfo": v2mount, "cg/svc/memory.max": "1000\n", "cg/svc/memory.current": "200\n"}, [2]int64{800, 1000}},
		{"no mountinfo", map[string]string{"meminfo": meminfo, "self": "0::/svc\n", "cg/svc/memory.max": "1000\n", "cg/svc/memory.current": "200\n"}, machine},
		{"nothing", nil, [2]int64{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			m := Memory{Meminfo: filepath.Join(dir, "meminfo"), SelfCgroup: filepath.Join(dir, "self"), Mountinfo: filepath.Join(dir, "mountinfo")}
			if avail, total := m.Read(); avail != tc.want[0] || total != tc.want[1] {
				t.Errorf("Read() = %d, %d; want %d, %d", avail, total, tc.want[0], tc.want[1])
			}
		})
	}
	if avail, total := SystemMemory().Read(); avail <= 0 || total < avail {
		t.Errorf("this machine's memory: %d of %d", avail, total)
	}
}

// A small container keeps a tenth of its limit, not the whole reserve: a
// 256 MiB one with 227 MiB free takes streams.
func TestMemoryReserveScalesDown(t *testing.T) {
	th := Thresholds{Memory: DefaultMemory}
	if why := th.over(Load{CPU: -1, Memory: 227 << 20, MemoryTotal: 256 << 20}, 1); why != "" {
		t.Errorf("227 of 256 MiB free: saturated (%s)", why)
	}
	if why := th.over(Load{CPU: -1, Memory: 20 << 20, MemoryTotal: 256 << 20}, 1); why != ReasonMemory {
		t.Errorf("20 of 256 MiB free: %q, want memory", why)
	}
	if why := th.over(Load{CPU: -1, Memory: 200 << 20, MemoryTotal: 24 << 30}, 1); why != ReasonMemory {
		t.Errorf("200 MiB of 24 GiB free: %q, want memory", why)
	}
}
