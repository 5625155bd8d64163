// Package wheel wakes many waiters from one runtime timer. Each waiter
// (a session's checks and gap fill, a WebSocket's status) asks to be woken
// at a time; times are rounded up to the wheel's granularity, so waiters
// due within the same slot wake together, and periodic waiters that use
// Grid share their phase: N streams cost one OS-level wakeup per slot
// rather than N at scattered instants.
package wheel

import (
	"container/heap"
	"sync"
	"time"
)

// DefaultGranularity: below an MP3 frame (26 ms) and far below gap fill's
// step, so no deadline moves by an amount a listener could notice.
const DefaultGranularity = 10 * time.Millisecond

// Wheel is a set of one-shot timers served by one runtime timer. The zero
// value is not usable; call New. It owns no goroutine: nothing to close.
type Wheel struct {
	gran time.Duration
	base time.Time // slots are counted from here, on the monotonic clock

	mu    sync.Mutex // guards the fields below
	due   timerHeap
	fire  *time.Timer // armed for due[0]'s slot; nil while due is empty
	armed time.Time   // the slot fire is armed for
}

// New returns a wheel with the given granularity (0: DefaultGranularity).
func New(gran time.Duration) *Wheel {
	if gran <= 0 {
		gran = DefaultGranularity
	}
	return &Wheel{gran: gran, base: time.Now()}
}

// Timer is one waiter. C receives a value at or after the time it was
// reset to; a fire that finds C full is merged into the pending one.
type Timer struct {
	C   chan struct{}
	w   *Wheel
	at  time.Time // slot; zero while stopped
	idx int       // position in w.due; -1 while stopped
}

// NewTimer returns a stopped timer of w.
func (w *Wheel) NewTimer() *Timer {
	return &Timer{C: make(chan struct{}, 1), w: w, idx: -1}
}

// Reset (re)arms t for at, rounded up to the wheel's granularity.
func (t *Timer) Reset(at time.Time) {
	w := t.w
	slot := w.ceil(at)
	w.mu.Lock()
	defer w.mu.Unlock()
	t.at = slot
	if t.idx >= 0 {
		heap.Fix(&w.due, t.idx)
	} else {
		heap.Push(&w.due, t)
	}
	w.armLocked()
}

// Stop disarms t; a value already in C stays there.
func (t *Timer) Stop() {
	w := t.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.idx >= 0 {
		heap.Remove(&w.due, t.idx)
	}
	t.at = time.Time{}
}

// Grid returns the first multiple of period (counted from the wheel's
// start) after now: periodic waiters that reset to it wake in the same
// slot whatever their phase.
func (w *Wheel) Grid(now time.Time, period time.Duration) time.Time {
	if period <= 0 {
		return now
	}
	return w.base.Add((now.Sub(w.base)/period + 1) * period)
}

// ceil rounds at up to a slot boundary. Arithmetic from base keeps the
// monotonic reading (Truncate drops it), so a step of the wall clock moves
// no timer.
func (w *Wheel) ceil(at time.Time) time.Time {
	n := (at.Sub(w.base) + w.gran - 1) / w.gran
	return w.base.Add(max(n, 0) * w.gran)
}

// armLocked points the runtime timer at the earliest slot. Must hold mu.
func (w *Wheel) armLocked() {
	if len(w.due) == 0 {
		if w.fire != nil {
			w.fire.Stop()
			w.armed = time.Time{}
		}
		return
	}
	next := w.due[0].at
	if w.fire != nil && !w.armed.IsZero() && !w.armed.After(next) {
		return // armed already for this slot or an earlier one
	}
	w.armed = next
	d := time.Until(next)
	if w.fire == nil {
		w.fire = time.AfterFunc(d, w.expire)
		return
	}
	w.fire.Reset(d)
}

// expire wakes every timer whose slot has come and re-arms for the rest.
func (w *Wheel) expire() {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = time.Time{}
	for len(w.due) > 0 && !w.due[0].at.After(now) {
		t := heap.Pop(&w.due).(*Timer)
		t.at = time.Time{}
		select {
		case t.C <- struct{}{}:
		default:
		}
	}
	w.armLocked()
}

// timerHeap orders timers by slot.
type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.idx = -1
	*h = old[:len(old)-1]
	return t
}
