package wheel

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPeriodicWaiters: 200 goroutines woken once a second at random
// phases (a session's checks, a connection's status), each on a runtime
// timer of its own or on the wheel's grid. One op is one second; the
// figures are the process's context switches and CPU per second.
//
//	go test -run '^$' -bench PeriodicWaiters -benchtime 5x ./internal/wheel
func BenchmarkPeriodicWaiters(b *testing.B) {
	for _, mode := range []string{"own-timers", "wheel"} {
		b.Run(mode, func(b *testing.B) {
			const n = 200
			w := New(0)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if mode == "wheel" {
						t := w.NewTimer()
						defer t.Stop()
						for {
							t.Reset(w.Grid(time.Now(), time.Second))
							select {
							case <-t.C:
							case <-stop:
								return
							}
						}
					}
					t := time.NewTimer(rand.N(time.Second))
					defer t.Stop()
					for {
						select {
						case <-t.C:
							t.Reset(time.Second)
						case <-stop:
							return
						}
					}
				}()
			}
			time.Sleep(time.Second) // all armed
			sw0, cpu0 := switches(), cpuTime()
			b.ResetTimer()
			for range b.N {
				time.Sleep(time.Second)
			}
			b.StopTimer()
			secs := float64(b.N)
			b.ReportMetric(float64(switches()-sw0)/secs, "switches/s")
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/secs, "cpu-ms/s")
			close(stop)
			wg.Wait()
		})
	}
}

// switches is the process's context switches so far.
func switches() int {
	b, _ := os.ReadFile("/proc/self/status")
	total := 0
	for _, l := range strings.Split(string(b), "\n") {
		var v int
		if _, err := fmt.Sscanf(l, "voluntary_ctxt_switches: %d", &v); err == nil {
			total += v
		} else if _, err := fmt.Sscanf(l, "nonvoluntary_ctxt_switches: %d", &v); err == nil {
			total += v
		}
	}
	return total
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
