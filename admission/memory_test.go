package admission

import (
	"os"
	"path/filepath"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The memory a new stream could use is the nearer of the machine's
// MemAvailable and the server's cgroup limit less its usage (without the
// page cache it could drop), for cgroup v2 and v1; a cgroup without a
// limit, or files that cannot be read, leave MemAvailable, and nothing
// at all is unknown (0).
func TestMemoryAvailable(t *testing.T) {
	const meminfo = "MemTotal: 8000000 kB\nMemFree: 10 kB\nMemAvailable: 4000000 kB\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"machine only", map[string]string{"meminfo": meminfo, "self": "0::/\n"}, 4000000 << 10},
		{"v2 limit nearer", map[string]string{"meminfo": meminfo, "self": "0::/svc\n",
			"cg/svc/memory.max": "1073741824\n", "cg/svc/memory.current": "900000000\n", "cg/svc/memory.stat": "anon 1\ninactive_file 100000000\n"},
			1073741824 - 800000000},
		{"v2 no limit", map[string]string{"meminfo": meminfo, "self": "0::/svc\n", "cg/svc/memory.max": "max\n", "cg/svc/memory.current": "5\n"}, 4000000 << 10},
		{"v1 limit nearer", map[string]string{"meminfo": meminfo, "self": "4:memory:/box\n1:cpu:/\n0::/\n",
			"cg/memory/box/memory.limit_in_bytes": "536870912\n", "cg/memory/box/memory.usage_in_bytes": "436870912\n", "cg/memory/box/memory.stat": "total_inactive_file 0\n"},
			100000000},
		{"v1 no limit", map[string]string{"meminfo": meminfo, "self": "4:memory:/\n",
			"cg/memory/memory.limit_in_bytes": "9223372036854771712\n", "cg/memory/memory.usage_in_bytes": "1005219840\n"}, 4000000 << 10},
		{"over the limit", map[string]string{"meminfo": meminfo, "self": "0::/svc\n", "cg/svc/memory.max": "100\n", "cg/svc/memory.current": "200\n"}, 1},
		{"cgroup only", map[string]string{"self": "0::/svc\n", "cg/svc/memory.max": "1000\n", "cg/svc/memory.current": "200\n"}, 800},
		{"nothing", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			m := Memory{Meminfo: filepath.Join(dir, "meminfo"), SelfCgroup: filepath.Join(dir, "self"), CgroupRoot: filepath.Join(dir, "cg")}
			if got := m.Available(); got != tc.want {
				t.Errorf("Available() = %d, want %d", got, tc.want)
			}
		})
	}
	if SystemMemory().Available() <= 0 {
		t.Error("this machine's memory is unknown")
	}
}
