package ffpipe

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"

	"golang.org/x/sys/unix"
)

// A start waits while every start slot is held by an ffmpeg still loading,
// and goes on once one of them has loaded (its first words on stderr).
func TestStartWaitsForLoadingFFmpegs(t *testing.T) {
	l := NewLauncher(2)
	defer l.Close()
	l.loadedAfter = time.Minute // only the fakes' words give slots back
	slow, _ := fake(t, fakeffmpeg.SlowStart)
	slow.Launcher = l
	var procs []*Proc
	defer func() {
		for _, p := range procs {
			p.Kill()
			waitDone(t, p)
		}
	}()
	for range cap(l.slots) {
		p, err := Start(t.Context(), slow, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
	}
	normal, _ := fake(t, fakeffmpeg.Normal)
	normal.Launcher = l
	got := make(chan *Proc, 1)
	go func() {
		p, err := Start(context.Background(), normal, quietLog())
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	select {
	case p := <-got:
		procs = append(procs, p)
		t.Fatal("an ffmpeg started while every start slot was held by a loading one")
	case <-time.After(300 * time.Millisecond): // the fakes load for 1.5 s
	}
	select {
	case p := <-got:
		procs = append(procs, p)
	case <-time.After(10 * time.Second):
		t.Fatal("a start still waits after the loading ffmpegs spoke")
	}
}

// The wait for a start slot ends with its context (a stream that ends
// while in line) or with its Launcher.
func TestStartSlotWaitIsCancellable(t *testing.T) {
	l := NewLauncher(1)
	defer l.Close()
	l.slots <- struct{}{} // a start still loading holds the only slot
	cfg, _ := fake(t, fakeffmpeg.Normal)
	cfg.Launcher = l
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := Start(ctx, cfg, quietLog())
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Start after cancel = %v, want context.Canceled", err)
	}
	go func() {
		_, err := Start(t.Context(), cfg, quietLog())
		errc <- err
	}()
	l.Close()
	if err := <-errc; !errors.Is(err, ErrLauncherClosed) {
		t.Errorf("Start after Close = %v, want ErrLauncherClosed", err)
	}
}

// ffmpeg is forked from the Launcher's own thread: a caller whose thread
// ends (a goroutine that exits locked to it) does not take the child with
// it through Pdeathsig.
func TestChildOutlivesTheThreadThatStartedIt(t *testing.T) {
	l := NewLauncher(0)
	defer l.Close()
	cfg, _ := fake(t, fakeffmpeg.Normal)
	cfg.Launcher = l
	type started struct {
		p   *Proc
		tid int
		err error
	}
	var s started
	for {
		ch := make(chan started, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: Go ends this thread with the goroutine
			p, err := Start(t.Context(), cfg, quietLog())
			ch <- started{p, unix.Gettid(), err}
		}()
		s = <-ch
		if s.err != nil {
			t.Fatal(s.err)
		}
		defer func(p *Proc) { p.Kill(); waitDone(t, p) }(s.p)
		if s.tid != os.Getpid() {
			break
		}
		// The main thread is kept by Go even then; try from another.
	}
	task := "/proc/self/task/" + strconv.Itoa(s.tid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break // the thread is gone: a Pdeathsig tied to it has fired
		}
		if time.Now().After(deadline) {
			t.Fatal("the locked thread did not end with its goroutine")
		}
	}
	// A SIGKILL sent at the thread's exit is acted on before the child
	// runs again: a child that reads this and reports it is alive.
	before := s.p.Progress().Reports
	if _, err := s.p.Write([]byte("still there?")); err != nil {
		t.Fatalf("write: %v (the child died with the thread)", err)
	}
	for deadline := time.Now().Add(10 * time.Second); s.p.Progress().Reports == before; time.Sleep(10 * time.Millisecond) {
		select {
		case <-s.p.Done():
			t.Fatalf("ffmpeg died with the thread that started it: %v", s.p.Err())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress after the write")
		}
	}
}
