package session

import (
	"errors"
	"fmt"
	"time"

	"ffmpeg-publisher/ffpipe"
)

// An RTMP server that stops reading (a hung process, SIGSTOP) does not show
// in ffmpeg for a long time: its kernel keeps acknowledging into its receive
// buffer, so ffmpeg's output advances and its send queue stays near empty.
// The stall watch looks at the server's reads instead, through the kernel's
// view of ffmpeg's own connection (ffpipe.Proc.Conn), without sending the
// server a byte: when the server runs on this host, the bytes its socket
// holds and the bytes it has read; otherwise the bytes ffmpeg wrote and the
// bytes the server acknowledged, which stop once its buffers are full or the
// path is dead. Bytes that wait while none are consumed for the stall
// timeout mean the server stopped reading; that is reported, and the publish
// kept: restarting ffmpeg would throw away the audio held in TCP buffers,
// and a new connection would hang too. Only when ffmpeg's own output stops
// advancing while audio arrives (the buffers are full) is ffmpeg restarted.

// upstreamStalled is Info.Upstream while the RTMP server does not read; the
// value clients already match on (the demo page does).
const upstreamStalled = "not answering"

// stallObs is one look at the current ffmpeg, taken by Session.checkStall.
type stallObs struct {
	at        time.Time
	proc      *ffpipe.Proc // compared only: a new one resets the watch
	published bool         // its output is open: the clocks run
	out       time.Duration
	lastWrite time.Time        // last client audio into stdin
	conn      ffpipe.ConnState // valid if connErr is nil
	connErr   error            // ffpipe.ErrNoConn: no TCP output (not RTMP, or gone)
}

// lookAt observes p; lastWrite is when client audio last went in.
func lookAt(p *ffpipe.Proc, lastWrite, now time.Time) stallObs {
	o := stallObs{at: now, proc: p, out: p.Progress().OutTime, lastWrite: lastWrite, connErr: ffpipe.ErrNoConn}
	select {
	case <-p.Ready():
		o.published = true
		o.conn, o.connErr = p.Conn()
	default:
	}
	return o
}

// stallVerdict is what a look calls for; the zero value is nothing.
type stallVerdict struct {
	restart string // kill ffmpeg (its watcher restarts it), for this reason
	stalled string // report that the server stopped reading, for this reason
	reads   bool   // the server reads again after a reported stall
}

// stallWatch is run's memory of the current ffmpeg's output progress and of
// its server's reads. The zero value is ready; no clock inside.
type stallWatch struct {
	proc       *ffpipe.Proc
	out        time.Duration // latest output time
	advance    time.Time     // when out last grew
	published  bool          // proc's output is open: the stall clock runs
	drain      drainMeter    // the server's reads on proc's connection
	notReading bool          // the server's stall was reported; kept across processes
}

// observe takes one look and says what to do. timeout is the stall
// timeout.
func (w *stallWatch) observe(o stallObs, timeout time.Duration) stallVerdict {
	if o.proc != w.proc {
		*w = stallWatch{proc: o.proc, advance: o.at, notReading: w.notReading}
	}
	if o.published && !w.published {
		// The clock starts at the publish: a start slowed by a busy
		// machine is not a stalled server.
		w.published, w.advance = true, o.at
	}
	if o.out > w.out {
		w.out, w.advance = o.out, o.at
	}
	if !o.published {
		return stallVerdict{}
	}
	var v stallVerdict
	if o.connErr == nil {
		v = w.observeConn(o.at, o.conn, timeout)
	}
	if o.lastWrite.After(w.advance) && o.at.Sub(w.advance) >= timeout {
		v.restart = fmt.Sprintf("ffmpeg's output has not advanced for %s while audio kept arriving: the RTMP server stopped reading", o.at.Sub(w.advance).Round(time.Second))
		w.advance = o.at // one kill per stall
	}
	return v
}

// observeConn watches the server's reads: on this host, the bytes it took
// from its socket; elsewhere, the bytes it acknowledged.
func (w *stallWatch) observeConn(now time.Time, c ffpipe.ConnState, timeout time.Duration) stallVerdict {
	queued, consumed, what := c.Unacked, c.Acked, "acknowledged"
	if c.PeerSeen {
		queued, consumed, what = c.Unread, c.Read, "read"
	}
	stuck, flowing := w.drain.observe(now, queued, consumed)
	switch {
	case stuck >= timeout && !w.notReading:
		w.notReading = true
		return stallVerdict{stalled: fmt.Sprintf("the RTMP server at %s has %s nothing of ffmpeg's connection for %s with %d bytes waiting: it is stalled; the publish is kept and its audio waits in TCP buffers", c.Remote, what, stuck.Round(time.Second), queued)}
	case flowing && w.notReading:
		w.notReading = false
		return stallVerdict{reads: true}
	}
	return stallVerdict{}
}

// drainMeter follows one queue and the count of bytes taken from it.
type drainMeter struct {
	seen     bool
	consumed uint64
	since    time.Time // first look of the current run of held bytes with none consumed; zero: none
}

// observe returns how long bytes have waited with none consumed (0 while
// the queue drains or is empty), and whether it was seen empty or
// draining since the previous look.
func (d *drainMeter) observe(now time.Time, queued int, consumed uint64) (stuck time.Duration, flowing bool) {
	moved := d.seen && consumed != d.consumed
	first := !d.seen
	d.seen, d.consumed = true, consumed
	switch {
	case queued <= 0:
		d.since = time.Time{}
		return 0, true
	case moved || first || d.since.IsZero():
		d.since = now
		return 0, moved
	}
	return now.Sub(d.since), false
}

// checkStall looks at the current ffmpeg's output and at its server's
// reads (see stallWatch): an ffmpeg whose output stopped advancing while
// input kept arriving is restarted; a server that stopped reading is
// reported, and its return too.
func (s *Session) checkStall(w *stallWatch, now time.Time) {
	s.mu.Lock()
	p, lastWrite := s.running, s.lastWrite
	s.mu.Unlock()
	if p == nil {
		return
	}
	o := lookAt(p, lastWrite, now)
	if o.connErr != nil && !errors.Is(o.connErr, ffpipe.ErrNoConn) {
		s.log.WithError(o.connErr).Debug("cannot read ffmpeg's connection state")
	}
	v := w.observe(o, s.cfg.StallTimeout)
	switch {
	case v.stalled != "":
		s.log.Warn(v.stalled)
		s.mu.Lock()
		s.upstream = upstreamStalled
		s.err = &UpstreamError{Reason: v.stalled}
		s.mu.Unlock()
	case v.reads:
		s.log.Info("the RTMP server reads again")
		s.mu.Lock()
		s.upstream = ""
		s.mu.Unlock()
	}
	if v.restart != "" {
		s.log.WithField("pid", p.Pid()).Warn(v.restart + "; restarting ffmpeg")
		s.killOnPurpose(p, v.restart)
	}
}
