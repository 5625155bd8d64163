package wheel

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func recv(t *testing.T, tm *Timer) time.Time {
	t.Helper()
	select {
	case <-tm.C:
		return time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("timer never fired")
		return time.Time{}
	}
}

func TestFiresNotBeforeItsTime(t *testing.T) {
	w := New(0)
	tm := w.NewTimer()
	at := time.Now().Add(30 * time.Millisecond)
	tm.Reset(at)
	if got := recv(t, tm); got.Before(at) {
		t.Fatalf("fired %s early", at.Sub(got))
	}
}

// Timers due within one slot are woken by the same expiry: when one has
// fired, the other has too.
func TestSameSlotFiresTogether(t *testing.T) {
	w := New(time.Second)
	a, b := w.NewTimer(), w.NewTimer()
	at := time.Now().Add(20 * time.Millisecond)
	a.Reset(at)
	b.Reset(at.Add(time.Millisecond))
	recv(t, a)
	w.mu.Lock() // expire holds mu until it has woken every due timer
	w.mu.Unlock()
	select {
	case <-b.C:
	default:
		t.Fatal("a timer of the same slot did not fire with the first")
	}
}

func TestStopAndEarlierReset(t *testing.T) {
	w := New(0)
	late, stopped, early := w.NewTimer(), w.NewTimer(), w.NewTimer()
	late.Reset(time.Now().Add(time.Hour))
	stopped.Reset(time.Now().Add(10 * time.Millisecond))
	stopped.Stop()
	early.Reset(time.Now().Add(time.Hour))
	early.Reset(time.Now().Add(10 * time.Millisecond)) // moves before late: the runtime timer is re-armed
	recv(t, early)
	select {
	case <-stopped.C:
		t.Fatal("a stopped timer fired")
	default:
	}
	late.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.due) != 0 {
		t.Fatalf("%d timers still due", len(w.due))
	}
}

func TestGridSharesPhase(t *testing.T) {
	w := New(0)
	now := time.Now()
	a, b := w.Grid(now, time.Second), w.Grid(now.Add(300*time.Millisecond), time.Second)
	if !a.After(now) || a.Sub(now) > time.Second {
		t.Fatalf("grid point %s not within a period after now", a.Sub(now))
	}
	if d := b.Sub(a); d != 0 && d != time.Second {
		t.Fatalf("grid points %s apart, not a whole period", d)
	}
	if d := w.base.Sub(a) % time.Second; d != 0 {
		t.Fatalf("grid point off the grid by %s", d)
	}
}
