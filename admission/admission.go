// Package admission decides whether the server takes new streams. It looks
// at how well the running streams keep up (their lag, the ffmpegs still
// starting, the machine's CPU pressure) and, past a threshold, refuses new
// streams so that the live ones keep their pace; streams already running
// are never refused. It turns back only after every measure has stayed
// under its threshold for a while, so it does not flap.
package admission

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Load is one look at the server.
type Load struct {
	// Streams is the number of publishing streams Lag was taken over.
	Streams int
	// Lag is the 90th percentile of those streams' lag: audio accepted
	// that their ffmpeg has not reported sending (media clock against
	// ffmpeg's output time).
	Lag time.Duration
	// Starting counts streams whose ffmpeg has not published yet: waiting
	// for a start slot, loading, or connecting.
	Starting int
	// CPU is the share of time some runnable task waited for a CPU over
	// the last 10 s (PSI "some avg10"), in percent; negative when the
	// kernel does not say.
	CPU float64
	// Memory is the bytes new streams could still use (the kernel's
	// MemAvailable, or the cgroup's limit if nearer); 0 when unknown.
	Memory int64
	// MemoryTotal is what Memory is part of (MemTotal, or that cgroup's
	// limit); 0 when unknown.
	MemoryTotal int64
}

// Probe takes one look. It is called from one goroutine at a time.
type Probe func() Load

// Thresholds say when the server is saturated: when any measure reaches
// its threshold. A zero threshold turns its measure off.
type Thresholds struct {
	Lag      time.Duration
	Starting int
	CPU      float64 // percent
	Memory   int64   // bytes: saturated while less is available (at most a tenth of the total)
}

// Defaults, from BENCHMARKS.md (Admission control).
const (
	// DefaultLag: a healthy stream's lag reads up to ~0.6 s, since
	// ffmpeg reports its output every 0.5 s.
	DefaultLag = 1500 * time.Millisecond
	// DefaultStarting: more ffmpegs than this not yet publishing means
	// starts fall behind the arrivals.
	DefaultStarting = 8
	// DefaultCPU: runnable tasks waiting this share of the time.
	DefaultCPU = 60
	// DefaultMemory: room for the starts one look can admit
	// (DefaultStarting × ~14 MiB per stream), twice over; a small
	// container keeps a tenth of its limit instead (memoryShare).
	DefaultMemory = 256 << 20
	// memoryShare: the reserve is at most this share of the total, so a
	// 256 MiB container is not refused everything.
	memoryShare = 10
)

// DefaultThresholds returns the defaults above.
func DefaultThresholds() Thresholds {
	return Thresholds{Lag: DefaultLag, Starting: DefaultStarting, CPU: DefaultCPU, Memory: DefaultMemory}
}

// Hysteresis: saturation ends once every measure has stayed under calmShare
// of its threshold for calmFor. A wider band kept a server whose neighbours
// hold the CPU pressure near the threshold refusing for minutes.
const (
	calmShare = 0.8
	calmFor   = 5 * time.Second
	// Every is how often Run looks: often enough that a herd of arrivals is
	// seen within a few starts, rarely enough to cost nothing.
	Every = 500 * time.Millisecond
	// calmLooks is calmFor in looks.
	calmLooks = int(calmFor / Every)
)

// Reasons for saturation, as metric labels.
const (
	ReasonLag      = "lag"
	ReasonStarting = "starting"
	ReasonCPU      = "cpu"
	ReasonMemory   = "memory"
)

// Reasons lists every reason, for metrics.
func Reasons() []string { return []string{ReasonLag, ReasonStarting, ReasonCPU, ReasonMemory} }

// Saturated refuses a new stream; RetryAfter is when to ask again.
type Saturated struct {
	Reason     string // ReasonLag, ReasonStarting, ReasonCPU
	RetryAfter time.Duration
}

func (e *Saturated) Error() string {
	var why string
	switch e.Reason {
	case ReasonLag:
		why = "its streams fall behind"
	case ReasonStarting:
		why = "too many streams are starting"
	case ReasonCPU:
		why = "its CPU is saturated"
	case ReasonMemory:
		why = "its memory is nearly full"
	}
	return fmt.Sprintf("this server takes no new streams now (%s), try again later", why)
}

// Status is a snapshot, for /readyz, metrics and the stream API.
type Status struct {
	Saturated bool   `json:"saturated"`
	Reason    string `json:"reason,omitempty"` // while saturated
	Last      Load   `json:"-"`
	// The latest look, for people: Last in seconds and percent (CPU -1:
	// unknown).
	LagSeconds float64 `json:"lag_seconds"`
	Starting   int     `json:"starting"`
	CPU        float64 `json:"cpu_pressure"`
	Memory     int64   `json:"memory_available_bytes,omitempty"` // 0: unknown
	// Since is when the current state began (zero before the first look).
	Since time.Time `json:"since"`
	// Refused counts new streams refused, by reason.
	Refused map[string]int64 `json:"refused"`
}

// Controller holds the admission state. The zero value is not usable; see
// New. Methods are safe for concurrent use.
type Controller struct {
	probe Probe
	th    Thresholds
	log   *logrus.Entry // nil: silent

	mu        sync.Mutex // guards the fields below
	saturated bool
	reason    string
	since     time.Time
	calm      int  // consecutive calm looks while saturated
	last      Load // the latest look
	// admitted counts streams admitted since the latest look, which it
	// could not see starting yet.
	admitted int
	refused  map[string]int64
}

// New returns a Controller that looks through probe (see Run or Look) and
// logs its changes of state to log (nil: nowhere).
func New(probe Probe, th Thresholds, log *logrus.Entry) *Controller {
	return &Controller{probe: probe, th: th, log: log, refused: map[string]int64{}, last: Load{CPU: -1}}
}

// Run looks every Every until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(Every)
	defer t.Stop()
	for {
		c.Look()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Look takes one look through the probe and moves the state.
func (c *Controller) Look() { c.observe(c.probe(), time.Now()) }

// over returns the first measure of l at or past its threshold (scaled by
// share), or "".
func (th Thresholds) over(l Load, share float64) string {
	switch {
	case th.Starting > 0 && float64(l.Starting) >= share*float64(th.Starting):
		return ReasonStarting
	case th.Lag > 0 && l.Streams > 0 && float64(l.Lag) >= share*float64(th.Lag):
		return ReasonLag
	case th.CPU > 0 && l.CPU >= 0 && l.CPU >= share*th.CPU:
		return ReasonCPU
	case th.Memory > 0 && l.Memory > 0 && float64(l.Memory)*share < float64(th.memoryReserve(l)):
		return ReasonMemory // calm (share < 1) needs more than the threshold free
	}
	return ""
}

// memoryReserve is th.Memory, or a tenth of l's total if that is less.
func (th Thresholds) memoryReserve(l Load) int64 {
	if l.MemoryTotal > 0 {
		return min(th.Memory, l.MemoryTotal/memoryShare)
	}
	return th.Memory
}

func (c *Controller) observe(l Load, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last, c.admitted = l, 0
	if c.since.IsZero() {
		c.since = now
	}
	if why := c.th.over(l, 1); why != "" {
		if !c.saturated {
			c.saturated, c.since = true, now
			c.logf(l, logrus.WarnLevel, "saturated ("+why+"): refusing new streams, the running ones go on")
		}
		c.reason, c.calm = why, 0
		return
	}
	if !c.saturated {
		return
	}
	if c.th.over(l, calmShare) != "" {
		c.calm = 0
		return
	}
	if c.calm++; c.calm >= calmLooks {
		c.logf(l, logrus.InfoLevel, fmt.Sprintf("taking new streams again, after %s saturated (%d refused in all)", now.Sub(c.since).Round(time.Second), c.totalRefused()))
		c.saturated, c.reason, c.since, c.calm = false, "", now, 0
	}
}

// logf logs a change of state with the look that caused it.
func (c *Controller) logf(l Load, level logrus.Level, msg string) {
	if c.log == nil {
		return
	}
	c.log.WithFields(logrus.Fields{"lag_p90": l.Lag.Round(time.Millisecond).String(), "starting": l.Starting,
		"publishing": l.Streams, "cpu_pressure": l.CPU, "memory_available_mib": l.Memory >> 20}).Log(level, "admission control: "+msg)
}

// totalRefused sums the refusals. Must hold mu.
func (c *Controller) totalRefused() int64 {
	var n int64
	for _, v := range c.refused {
		n += v
	}
	return n
}

// Check tells whether a new stream would be refused now, without taking a
// place (the server is saturated: a *Saturated).
func (c *Controller) Check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.saturated {
		return &Saturated{Reason: c.reason, RetryAfter: calmFor}
	}
	return nil
}

// Admit takes a place for one new stream, or refuses it (a *Saturated,
// counted). Between looks, the streams it admits count as starting: a herd
// that arrives at once is let in no faster than the start threshold allows.
func (c *Controller) Admit() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	why := c.reason
	if !c.saturated {
		why = ""
		if c.th.Starting > 0 && c.last.Starting+c.admitted >= c.th.Starting {
			why = ReasonStarting
		}
	}
	if why != "" {
		c.refused[why]++
		retry := calmFor
		if !c.saturated {
			retry = time.Second // the next looks see the starts end
		}
		return &Saturated{Reason: why, RetryAfter: retry}
	}
	c.admitted++
	return nil
}

// Status returns a snapshot.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Saturated: c.saturated, Reason: c.reason, Last: c.last, Since: c.since, Refused: make(map[string]int64, len(c.refused)),
		LagSeconds: c.last.Lag.Seconds(), Starting: c.last.Starting, CPU: c.last.CPU, Memory: c.last.Memory}
	for k, v := range c.refused {
		st.Refused[k] = v
	}
	return st
}
