package ffpipe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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

// ExitError is how an ffmpeg that did not stop cleanly ended.
type ExitError struct {
	State *os.ProcessState // nil if the process could not be waited for
	Tail  []string         // ffmpeg's last stderr lines, oldest first
}

func (e *ExitError) Error() string {
	how := "ffmpeg exited"
	if e.State != nil {
		if ws, ok := e.State.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			how = "ffmpeg was killed (" + ws.Signal().String() + ")"
		} else {
			how = "ffmpeg exited with status " + strconv.Itoa(e.State.ExitCode())
		}
	}
	if r := Reason(e.Tail); r != "" {
		return how + ": " + r
	}
	return how
}

// ExitCause names how a process ended, for metrics: "clean" (err is nil),
// "killed" (by a signal) or "error" (a non-zero exit status).
func ExitCause(err error) string {
	var ee *ExitError
	switch {
	case err == nil:
		return "clean"
	case errors.As(err, &ee) && ee.State != nil:
		if ws, ok := ee.State.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed"
		}
	}
	return "error"
}

// Reason picks the lines of an ffmpeg stderr tail that explain a failure:
// the error and fatal lines, or the last line if there are none.
func Reason(tail []string) string {
	var picked []string
	for _, l := range tail {
		if strings.Contains(l, "[error]") || strings.Contains(l, "[fatal]") {
			picked = append(picked, cleanLine(l))
		}
	}
	if len(picked) == 0 && len(tail) > 0 {
		picked = append(picked, cleanLine(tail[len(tail)-1]))
	}
	if len(picked) > 3 {
		picked = picked[len(picked)-3:]
	}
	return strings.Join(picked, "; ")
}

// cleanLine drops ffmpeg's "[component @ 0xADDR] [level] " prefixes, which
// mean nothing to a client.
func cleanLine(l string) string {
	for strings.HasPrefix(l, "[") {
		end := strings.Index(l, "] ")
		if end < 0 {
			break
		}
		l = l[end+2:]
	}
	return strings.TrimSpace(l)
}

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
	cmd   *exec.Cmd
	stdin *os.File
	log   *logrus.Entry

	ready  chan struct{} // closed at the first progress report
	done   chan struct{} // closed after Wait returned
	loaded sync.Once     // gives back the start slot, then lowers the priority
	nice   int           // Config.Nice
	slots  chan struct{} // the start slots it holds one of
	conn   connFinder    // which socket is ffmpeg's output connection

	mu       sync.Mutex // guards the fields below
	tail     []string
	progress Progress
	err      error // set before done is closed
	stopping bool  // SIGINT was sent by us
}

// starting admits ffmpegs to their start, one per core. Debian's ffmpeg
// links 215 shared libraries and binds every symbol at load (BIND_NOW): a
// start costs 100-200 ms of CPU before ffmpeg runs a line of its own, more
// when many load together. A herd of starts (clients reconnecting after a
// network blip, every stream republishing after the RTMP server's restart)
// starved the running streams and one another: measured on 2 cores, 100
// WebSocket streams starting at once, the slowest ffmpegs took 10 s to
// read their input, the write timeout killed them, they started again, and
// 3% of the audio arrived. In line, the same herd delivered 100% of the
// audio with one publish per stream (the late streams catch up on what
// their clients sent meanwhile). One slot per two cores delivered it too,
// but with streams starting 6 per second the line grew: starts then took
// ~1 s to reach a subscriber instead of ~0.25 s.
// nil (the default) admits every start at once; SetMaxStarting sets it.
var starting chan struct{}

// SetMaxStarting bounds the ffmpegs loading at once to n (0: no bound).
// Call it before the first Start. Off by default: with many streams
// starting under test load (the race detector, 16 parallel tests) the
// line made restarts seconds late.
func SetMaxStarting(n int) {
	if n <= 0 {
		starting = nil
		return
	}
	starting = make(chan struct{}, n)
}

// loadedAfter gives the start slot back even if ffmpeg stays silent
// (nothing on stderr, no progress): a start is never held up longer. A
// variable for tests.
var loadedAfter = time.Second

// Start launches ffmpeg for cfg. It returns an error only if the process
// could not be started at all (binary missing, no file descriptors).
//
// With cfg.Nice, ffmpeg runs niced under SCHED_BATCH once it has loaded
// (see hasLoaded): a batch task does not preempt the task that woke it.
// Writing a chunk into ffmpeg's stdin wakes ffmpeg, and on a busy machine
// ffmpeg then took the CPU from the writer for its decode and encode
// before the chunk could be acknowledged. Measured on 2 cores with nice
// 10: 20 streams of 100 ms POSTs, stdin writes over 0.8 ms 2.3% → 0.6%,
// ack p99 (after a stream's first) 10.3 → 5.3 ms at the client; but 100
// WebSocket streams, steady lag p99 0.16 s → 11-17 s and ffmpeg CPU
// 107% → 131%: the encoders, delayed, fell behind. Hence off by default.
//
// Start waits while as many ffmpegs as there are cores are loading (see
// starting); an ffmpeg has loaded once it writes to stderr or reports
// progress, exits, or after loadedAfter.
func Start(cfg Config, log *logrus.Entry) (*Proc, error) {
	if starting == nil {
		return start(cfg, log, nil) // hasLoaded still lowers it once loaded
	}
	slots := starting
	queued := time.Now()
	slots <- struct{}{}
	p, err := start(cfg, log, slots)
	if err != nil {
		<-slots
		return nil, err
	}
	if waited := time.Since(queued); waited >= time.Second {
		p.log.WithField("waited", waited.Round(time.Millisecond)).Info("ffmpeg started late: many streams are starting at once")
	}
	t := time.AfterFunc(loadedAfter, p.hasLoaded)
	go func() {
		<-p.done
		t.Stop()
		p.hasLoaded()
	}()
	return p, nil
}

// hasLoaded gives back p's start slot and lowers its priority, once. A
// start runs at the server's priority, ahead of the encoders already
// running: niced, with 90 streams running, loads grew long enough that
// late streams started seconds behind their clients.
func (p *Proc) hasLoaded() {
	p.loaded.Do(func() {
		if p.slots != nil {
			<-p.slots
		}
		p.lower()
	})
}

func (p *Proc) lower() {
	if p.nice > 0 {
		p.deprioritize()
	}
}

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
	if err := cmd.Start(); err != nil {
		closeAll(stdinR, stdinW, progR, progW, errR, errW)
		return nil, fmt.Errorf("start %s: %w", cfg.binary(), err)
	}
	// The child has its copies; ours of the child's ends must go, or the
	// readers below would never see EOF.
	closeAll(stdinR, progW, errW)

	p := &Proc{
		cmd:   cmd,
		stdin: stdinW,
		log:   log.WithField("pid", cmd.Process.Pid),
		ready: make(chan struct{}),
		done:  make(chan struct{}),
		nice:  cfg.Nice,
		slots: slots,
	}
	p.log.WithField("cmd", CommandLine(cfg)).Debug("ffmpeg started")

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
func (p *Proc) wait(readers *sync.WaitGroup) {
	readers.Wait()
	waitErr := p.cmd.Wait()
	p.stdin.Close() // further writes fail with os.ErrClosed, not EPIPE races

	p.mu.Lock()
	state := p.cmd.ProcessState
	clean := waitErr == nil || (p.stopping && state != nil && state.ExitCode() == 255)
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
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		p.mu.Lock()
		if len(p.tail) == tailLines {
			copy(p.tail, p.tail[1:])
			p.tail = p.tail[:tailLines-1]
		}
		p.tail = append(p.tail, line)
		p.mu.Unlock()
		p.hasLoaded()
		if strings.Contains(line, "[error]") || strings.Contains(line, "[fatal]") {
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

// Tail returns ffmpeg's last stderr lines, oldest first.
func (p *Proc) Tail() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.tail...)
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
// SIGKILL. flushGrace <= 0 means DefaultFlushGrace.
func (p *Proc) Stop(flushGrace time.Duration) error {
	if flushGrace <= 0 {
		flushGrace = DefaultFlushGrace
	}
	p.CloseInput()
	if p.waitFor(flushGrace) {
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

// Kill sends SIGKILL to ffmpeg's process group. Done is closed soon after.
func (p *Proc) Kill() { p.signalGroup(syscall.SIGKILL) }

func (p *Proc) signalGroup(sig syscall.Signal) {
	select {
	case <-p.done:
		return // reaped: the pid may belong to someone else now
	default:
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
