// Package leakcheck counts what a server in the test's own process still
// holds (sockets on its port, goroutines in its packages, file
// descriptors), so that a test can tell the server's side of a connection
// from the client's while both live in one process. Linux only: it reads
// /proc.
package leakcheck

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// FDs is the number of open file descriptors of this process.
func FDs() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

// ServerSockets returns this process's file descriptors of connected
// sockets whose local port is port: the server's ends of its connections
// (the listener itself is left out).
func ServerSockets(port int) []int {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] == "0A" || fields[9] == "0" { // listening, or no longer held by an fd
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		f.Close()
	}
	var fds []int
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && inodes[link] {
			n, _ := strconv.Atoi(e.Name())
			fds = append(fds, n)
		}
	}
	return fds
}

// Goroutines counts the goroutines whose stack mentions any of funcs
// (substrings of qualified function names, such as
// "transport.(*wsConn)").
func Goroutines(funcs ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		for _, f := range funcs {
			if bytes.Contains(g, []byte(f)) {
				count++
				break
			}
		}
	}
	return count
}

// Until polls cond every 50 ms until it returns "" or timeout passes, and
// returns how long that took and cond's last complaint ("" if met).
func Until(timeout time.Duration, cond func() string) (time.Duration, string) {
	start := time.Now()
	for {
		msg := cond()
		if msg == "" || time.Since(start) > timeout {
			return time.Since(start), msg
		}
		time.Sleep(50 * time.Millisecond)
	}
}
