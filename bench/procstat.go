package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times (100 on
// Linux everywhere that matters).
const clockTicks = 100.0

func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// cpuSeconds is the CPU time (user + system) pid has used, in seconds; 0
// for a process that is gone.
func cpuSeconds(pid int) float64 {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64) // utime (field 14 of stat)
	s, _ := strconv.ParseFloat(f[12], 64) // stime
	return (u + s) / clockTicks
}

// childPIDs lists the live children of pid.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	want := strconv.Itoa(pid)
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(n); len(f) > 1 && f[1] == want {
			out = append(out, n)
		}
	}
	return out
}

// cpuOf sums cpuSeconds over pids, keyed by pid so that a window's
// difference only counts processes alive at both ends.
func cpuOf(pids []int) map[int]float64 {
	m := make(map[int]float64, len(pids))
	for _, p := range pids {
		m[p] = cpuSeconds(p)
	}
	return m
}

// cpuDelta is the CPU used between two samples by the processes in both.
func cpuDelta(before, after map[int]float64) float64 {
	var sum float64
	for p, a := range after {
		if b, ok := before[p]; ok {
			sum += a - b
		}
	}
	return sum
}

// pssKiB is the proportional set size of pid, in KiB: shared pages (the
// libraries every ffmpeg maps) are split between the processes sharing
// them, so a sum over processes is the memory they really take.
func pssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func pssSum(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		sum += pssKiB(p)
	}
	return sum
}

func cpuModel() string {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(info), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
		}
	}
	return "unknown"
}
