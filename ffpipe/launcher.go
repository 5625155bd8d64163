package ffpipe

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLauncherClosed is Start's error once its Launcher was closed.
var ErrLauncherClosed = errors.New("ffpipe: launcher closed")

// defaultLoadedAfter gives a start slot back even if ffmpeg stays silent
// (nothing on stderr, no progress): a start is never held up longer.
const defaultLoadedAfter = time.Second

// Launcher starts the ffmpegs of one server: it forks them all from one OS
// thread and admits them to their start a few at a time. Share one between
// all sessions.
//
// One thread: the kernel sends Pdeathsig when the thread that forked the
// child exits, not the process, and Go ends a thread whose goroutine exits
// while locked to it. Forking from whatever thread a caller runs on would
// let any such goroutine kill our ffmpegs; the Launcher's thread is locked
// to its own goroutine and ends only with the process.
//
// Start slots: Debian's ffmpeg binds 215 shared libraries at load, and a
// herd of starts (clients reconnecting after a blip, every stream
// republishing after the RTMP server's restart) starved the running
// streams and one another; in line they all delivered. BENCHMARKS.md has
// the numbers.
type Launcher struct {
	slots       chan struct{} // a start holds one until ffmpeg has loaded; nil: no bound
	loadedAfter time.Duration // a silent ffmpeg gives its slot back after this
	forks       chan fork     // served on the locked thread
	quit        chan struct{} // closed by Close
	done        chan struct{} // closed when the fork goroutine has returned
}

type fork struct {
	cmd *exec.Cmd
	err chan<- error
}

// NewLauncher returns a Launcher that lets at most maxStarting ffmpegs load
// at once (0: no bound). Close it once every ffmpeg it started has ended.
func NewLauncher(maxStarting int) *Launcher {
	l := &Launcher{
		loadedAfter: defaultLoadedAfter,
		forks:       make(chan fork),
		quit:        make(chan struct{}),
		done:        make(chan struct{}),
	}
	if maxStarting > 0 {
		l.slots = make(chan struct{}, maxStarting)
	}
	go l.forkLoop()
	return l
}

// Close stops the fork thread; later starts fail with ErrLauncherClosed.
// Call it after the last ffmpeg it started has ended: from then on its
// thread is an ordinary one, which guards no child.
func (l *Launcher) Close() {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
}

func (l *Launcher) forkLoop() {
	defer close(l.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread() // unlocked, the thread lives on: Go ends only locked threads
	for {
		select {
		case f := <-l.forks:
			f.err <- f.cmd.Start()
		case <-l.quit:
			return
		}
	}
}

// start runs cmd.Start on the fork thread; a nil Launcher runs it here.
func (l *Launcher) start(cmd *exec.Cmd) error {
	if l == nil {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	select {
	case l.forks <- fork{cmd, errc}:
		return <-errc
	case <-l.quit:
		return ErrLauncherClosed
	}
}

// acquire waits for a start slot until ctx ends. It returns the slots the
// start holds one of (nil: none held) and how long it waited.
func (l *Launcher) acquire(ctx context.Context) (chan struct{}, time.Duration, error) {
	if l == nil || l.slots == nil {
		return nil, 0, ctx.Err()
	}
	queued := time.Now()
	select {
	case l.slots <- struct{}{}:
		if err := ctx.Err(); err != nil { // both were ready
			<-l.slots
			return nil, 0, err
		}
		return l.slots, time.Since(queued), nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-l.quit:
		return nil, 0, ErrLauncherClosed
	}
}

// watchLoad gives p's slot back when ffmpeg has loaded, or after
// loadedAfter if it stays silent.
func (l *Launcher) watchLoad(p *Proc) {
	t := time.AfterFunc(l.loadedAfter, p.hasLoaded)
	go func() {
		<-p.done
		t.Stop()
		p.hasLoaded()
	}()
}

// hasLoaded gives back p's start slot and lowers its priority, once. A
// start runs at the server's priority, ahead of the encoders already
// running: niced, with 90 streams running, loads grew long enough that
// late streams started seconds behind their clients.
func (p *Proc) hasLoaded() {
	p.loaded.Do(func() {
		p.isLoaded.Store(true)
		if p.slots != nil {
			<-p.slots
		}
		if p.nice > 0 {
			p.deprioritize()
		}
	})
}

// Loaded tells whether ffmpeg has loaded (or exited): it no longer costs
// the CPU of a start.
func (p *Proc) Loaded() bool { return p.isLoaded.Load() }

// deprioritize runs every thread of ffmpeg niced under SCHED_BATCH; threads
// it makes later inherit this.
func (p *Proc) deprioritize() {
	pid := p.cmd.Process.Pid
	tids, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	for _, t := range tids {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		err = unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_BATCH, Nice: int32(p.nice)}, 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			p.log.WithError(err).Warn("cannot lower ffmpeg's scheduling priority")
			return
		}
	}
}
