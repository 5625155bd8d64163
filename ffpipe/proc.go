package ffpipe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"ffmpeg-publisher/internal/redact"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Stop stages. ffmpeg exits on stdin EOF after flushing, which takes a few
// milliseconds for audio; it ignores SIGINT while blocked on an idle stdin,
// so the SIGKILL stage is what makes Stop bounded.
const (
	// DefaultFlushGrace is how long Stop waits after closing stdin.
	DefaultFlushGrace = 5 * time.Second
	// interruptGrace is how long Stop waits after SIGINT before SIGKILL:
	// enough for ffmpeg to write the FLV trailer when it does react.
	interruptGrace = 2 * time.Second
	// tailLines is how many stderr lines are kept to explain an exit.
	tailLines = 20
)

// Progress is ffmpeg's latest -progress report.
type Progress struct {
	At        time.Time     // when the report was read; zero before the first
	OutTime   time.Duration // media time written to the output
	TotalSize int64         // bytes written to the output
	Reports   int           // number of reports so far
}

// Proc is one running ffmpeg. Its methods are safe for concurrent use, but
// Write must be called by one goroutine at a time (the session's writer).
type Proc struct {
	cmd    *exec.Cmd
	stdin  *os.File
	log    *logrus.Entry
	redact *redact.Target // hides the outputs' secrets in ffmpeg's words

	ready    chan struct{}  // closed at the first progress report
	done     chan struct{}  // closed after Wait returned
	loaded   sync.Once      // gives back the start slot, then lowers the priority
	isLoaded atomic.Bool    // set by loaded
	nice     int            // Config.Nice
	slots    chan struct{}  // the start slots it holds one of
	conn     connFinder     // which socket is ffmpeg's output connection
	rconns   *restreamConns // and each restream's

	mu       sync.Mutex // guards the fields below
	outs     restreams
	tail     []string
	progress Progress
	err      error // set before done is closed
	stopping bool  // SIGINT was sent by us
	detached bool  // killed by us once the primary had everything (see waitExit)
	// primaryFailed: ffmpeg reported a failure of the primary output
	primaryFailed bool
	exited        bool // the process has exited: its PID must not be signalled
	discarded     bool // given no input and ended on purpose (Discard)
}

// Start launches ffmpeg for cfg. It returns an error only if the process
// could not be started at all (binary missing, no file descriptors), or if
// ctx ended or cfg.Launcher was closed while it waited for a start slot.
//
// With cfg.Nice, ffmpeg runs niced under SCHED_BATCH once it has loaded
// (see hasLoaded): a batch task does not preempt the task that woke it, so
// a chunk written to stdin is acknowledged before ffmpeg encodes it. Off by
// default: with many streams the delayed encoders fell behind
// (BENCHMARKS.md).
//
// With a bounded cfg.Launcher, Start waits while its slots are held by
// ffmpegs still loading; an ffmpeg has loaded once it writes to stderr or
// reports progress, exits, or after a second.
func Start(ctx context.Context, cfg Config, log *logrus.Entry) (*Proc, error) {
	l := cfg.Launcher
	slots, waited, err := l.acquire(ctx)
	if err != nil {
		return nil, err
	}
	p, err := start(cfg, log, slots)
	if err != nil {
		if slots != nil {
			<-slots
		}
		return nil, err
	}
	if slots != nil {
		if waited >= time.Second {
			p.log.WithField("waited", waited.Round(time.Millisecond)).Info("ffmpeg started late: many streams are starting at once")
		}
		l.watchLoad(p)
	}
	return p, nil
}

func start(cfg Config, log *logrus.Entry, slots chan struct{}) (*Proc, error) {
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	progR, progW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW)
		return nil, fmt.Errorf("progress pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW, progR, progW)
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}

	cmd := exec.Command(cfg.binary(), Args(cfg)...)
	cmd.Stdin = stdinR
	cmd.Stdout = nil // ffmpeg writes nothing useful there; /dev/null
	cmd.Stderr = errW
	cmd.ExtraFiles = []*os.File{progW} // fd 3
	cmd.Env = append(os.Environ(), cfg.ExtraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // so Stop can signal ffmpeg and anything it spawned
		Pdeathsig: syscall.SIGKILL, // no orphan publishing if we die
	}
	if err := cfg.Launcher.start(cmd); err != nil {
		closeAll(stdinR, stdinW, progR, progW, errR, errW)
		return nil, fmt.Errorf("start %s: %w", cfg.binary(), err)
	}
	// The child has its copies; ours of the child's ends must go, or the
	// readers below would never see EOF.
	closeAll(stdinR, progW, errW)

	p := &Proc{
		cmd:    cmd,
		stdin:  stdinW,
		log:    log.WithField("pid", cmd.Process.Pid),
		redact: redact.All(cfg.LiveID, shownForms(cfg.Outputs())...),
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		nice:   cfg.Nice,
		slots:  slots,
		outs:   newRestreams(cfg.Also, cfg.Record),
		rconns: newRestreamConns(cfg.Also),
	}
	if len(cfg.Also) > 0 || cfg.Record != "" {
		p.conn.isPrimary = primaryPeer(cfg.Target)
	}
	p.log.WithField("cmd", p.redact.Line(CommandLine(cfg))).Debug("ffmpeg started")

	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); p.readProgress(progR) }()
	go func() { defer readers.Done(); p.readStderr(errR) }()
	go p.wait(&readers)
	return p, nil
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// wait reaps the process exactly once, after both pipe readers reached EOF
// (os/exec: Wait before the readers finish would lose ffmpeg's last words).
// It first waits for the exit without reaping and marks it under mu: until
// reaped the PID cannot be reused, so signalGroup never hits a stranger.
func (p *Proc) wait(readers *sync.WaitGroup) {
	readers.Wait()
	var info unix.Siginfo
	for unix.Waitid(unix.P_PID, p.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil) == unix.EINTR {
	}
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	waitErr := p.cmd.Wait()
	p.stdin.Close() // further writes fail with os.ErrClosed, not EPIPE races

	p.mu.Lock()
	state := p.cmd.ProcessState
	clean := waitErr == nil || (p.stopping && state != nil && state.ExitCode() == 255) || p.detached || p.discarded
	if !clean {
		p.err = &ExitError{State: state, Tail: append([]string(nil), p.tail...)}
	}
	err := p.err
	p.mu.Unlock()

	l := p.log
	if state != nil {
		l = l.WithField("status", state.String())
	}
	if err != nil {
		l.WithError(err).Warn("ffmpeg ended")
	} else {
		l.Debug("ffmpeg ended")
	}
	p.conn.close()
	close(p.done)
}

// splitCRLF splits ffmpeg output on \n and on \r (progress lines end in \r).
func splitCRLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func (p *Proc) readStderr(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64*1024)
	sc.Split(splitCRLF)
	for sc.Scan() {
		raw := strings.TrimSpace(sc.Text())
		line := p.redact.Line(raw)
		if line == "" {
			continue
		}
		p.mu.Lock()
		quiet := p.outs.line(raw, p.redact.Line) || (len(p.outs.urls) > 0 && p.isReady() && restreamWords(raw) && !primaryFailure(raw)) || p.discarded
		if primaryFailure(raw) {
			p.primaryFailed = true
		}
		if len(p.tail) == tailLines {
			copy(p.tail, p.tail[1:])
			p.tail = p.tail[:tailLines-1]
		}
		p.tail = append(p.tail, line)
		p.mu.Unlock()
		p.hasLoaded()
		if !quiet && (strings.Contains(line, "[error]") || strings.Contains(line, "[fatal]")) {
			p.log.WithField("ffmpeg", line).Warn("ffmpeg error")
		} else {
			p.log.WithField("ffmpeg", line).Debug("ffmpeg")
		}
	}
	// A line longer than the buffer ends scanning; keep draining so
	// ffmpeg never blocks on a full stderr pipe.
	io.Copy(io.Discard, r)
}

// readProgress parses "key=value" blocks ending in "progress=continue|end".
func (p *Proc) readProgress(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	var cur Progress
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		switch k {
		case "out_time_us":
			if us, err := strconv.ParseInt(v, 10, 64); err == nil && us >= 0 {
				cur.OutTime = time.Duration(us) * time.Microsecond
			}
		case "total_size":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				cur.TotalSize = n
			}
		case "progress":
			p.mu.Lock()
			cur.At = time.Now()
			cur.Reports = p.progress.Reports + 1
			p.progress = cur
			p.mu.Unlock()
			if cur.Reports == 1 {
				close(p.ready)
				p.hasLoaded()
			}
		}
	}
	io.Copy(io.Discard, r)
}

func (p *Proc) isReady() bool {
	select {
	case <-p.ready:
		return true
	default:
		return false
	}
}

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Ready is closed when ffmpeg reported progress for the first time: its
// output is open (for RTMP: connected and publishing).
func (p *Proc) Ready() <-chan struct{} { return p.ready }

// Done is closed once the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (see the package comment); call after Done.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Interrupted tells whether Stop had to interrupt ffmpeg (it did not exit
// on its own after stdin closed): what it had not sent then is lost.
func (p *Proc) Interrupted() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// Tail returns ffmpeg's last stderr lines, oldest first, redacted.
func (p *Proc) Tail() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
}

// Outputs returns the state of each output, in the order of
// Config.Outputs.
func (p *Proc) Outputs() []OutputState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]OutputState{{}}, p.outs.state...)
}

// RecordErr is why the archive stopped (a write error, a file that
// could not be opened), redacted; "" while it is written.
func (p *Proc) RecordErr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outs.recordErr
}

// Progress returns the latest progress report.
func (p *Proc) Progress() Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.progress
}

// Write writes b to ffmpeg's stdin. Only one goroutine may write at a time.
func (p *Proc) Write(b []byte) (int, error) { return p.stdin.Write(b) }

// SetWriteDeadline bounds the next writes: a Write blocked on a full pipe
// returns os.ErrDeadlineExceeded after t.
func (p *Proc) SetWriteDeadline(t time.Time) error { return p.stdin.SetWriteDeadline(t) }

// Pending is how many bytes written to stdin ffmpeg has not read yet.
func (p *Proc) Pending() (int, error) {
	rc, err := p.stdin.SyscallConn() // not Fd(): that would make the pipe blocking
	if err != nil {
		return 0, err
	}
	var n int
	var ioErr error
	err = rc.Control(func(fd uintptr) {
		n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
	})
	if err == nil {
		err = ioErr
	}
	return n, err
}

// CloseInput closes stdin: ffmpeg flushes what it has and exits.
func (p *Proc) CloseInput() error {
	err := p.stdin.Close()
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

// Stop ends the process and returns once it has been reaped: stdin is
// closed, then after flushGrace SIGINT goes to the process group, then
// SIGKILL. flushGrace <= 0 means DefaultFlushGrace. With restreams or an
// archive, the wait ends once the primary has everything and the others
// had secondaryGrace (see waitExit): they never hold the primary's end.
func (p *Proc) Stop(flushGrace time.Duration) error {
	if flushGrace <= 0 {
		flushGrace = DefaultFlushGrace
	}
	primary, watch := p.primarySocket()
	p.CloseInput()
	if p.waitExit(flushGrace, primary, watch) {
		return p.Err()
	}
	p.log.Warn("ffmpeg did not exit after stdin closed; interrupting")
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	p.signalGroup(syscall.SIGINT)
	if p.waitFor(interruptGrace) {
		return p.Err()
	}
	p.log.Warn("ffmpeg ignored SIGINT; killing")
	p.Kill()
	<-p.done
	return p.Err()
}

// Discard marks an ffmpeg that was given no input and is being ended on
// purpose: its complaint about an empty input and its exit are no errors.
func (p *Proc) Discard() {
	p.mu.Lock()
	p.discarded = true
	p.mu.Unlock()
}

// Kill sends SIGKILL to ffmpeg's process group. Done is closed soon after.
func (p *Proc) Kill() { p.signalGroup(syscall.SIGKILL) }

func (p *Proc) signalGroup(sig syscall.Signal) {
	p.mu.Lock() // held until the signal is sent: wait reaps only after exited is set
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	// Negative pid: the whole group created by Setpgid.
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.log.WithError(err).Warn("signal ffmpeg")
	}
}

func (p *Proc) waitFor(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}
