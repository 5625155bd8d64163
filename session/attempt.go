package session

import (
	"os"
	"time"

	"ffmpeg-publisher/ffpipe"
)

// attempt is one ffmpeg reading one segment of the log from a position.
// Not safe for concurrent use: the session's writer owns it.
type attempt struct {
	proc     *ffpipe.Proc
	segStart int64 // its segment
	start    int64 // the first position it was given
	cursor   int64 // the next position to give it
	// Its progress reports confirmed every unit before sent, which ends
	// sentAt into its output.
	sent   int64
	sentAt time.Duration
	framer framer // nil unless the units go wrapped (MP3 in FLV tags, WebM retimed)
	opened bool   // it got the segment's init data
	buf    []byte
	// deadline is its stdin's write deadline.
	deadline time.Time
}

func newAttempt(proc *ffpipe.Proc, l *streamLog, start int64, f framer) *attempt {
	seg, _ := l.segmentAt(start)
	return &attempt{proc: proc, segStart: seg.start, start: start, cursor: start, sent: start, framer: f}
}

// segmentDone tells whether it was given its whole segment and the log
// goes on in another.
func (a *attempt) segmentDone(l *streamLog) bool {
	end := l.segmentEnd(a.segStart)
	return a.cursor >= end && end < l.end()
}

// pump gives it the units of its segment it does not have yet, init data
// first. A write blocked beyond timeout returns os.ErrDeadlineExceeded.
func (a *attempt) pump(l *streamLog, timeout time.Duration) (written bool, err error) {
	end := l.segmentEnd(a.segStart)
	if a.cursor >= end {
		return false, nil
	}
	seg, _ := l.segmentAt(a.segStart)
	var out []byte
	if a.framer != nil {
		out = a.framer.frame(seg.init, l.units[a.cursor-l.base:end-l.base], !a.opened)
	} else {
		buf := a.buf[:0]
		if !a.opened {
			buf = append(buf, seg.init...)
		}
		for p := a.cursor; p < end; p++ {
			buf = append(buf, l.at(p).data...)
		}
		a.buf, out = buf, buf
	}
	a.opened = true
	a.cursor = end
	// Moving the deadline re-arms a runtime timer: it moves once half of
	// it has passed, so a blocked write fails after half to all of timeout.
	if now := time.Now(); a.deadline.Sub(now) < timeout/2 {
		a.deadline = now.Add(timeout)
		a.proc.SetWriteDeadline(a.deadline)
	}
	_, err = a.proc.Write(out)
	return true, err
}

// progress moves sent on to what the ffmpeg's output time out covers and
// returns it: every unit before it was sent on.
func (a *attempt) progress(l *streamLog, out time.Duration) int64 {
	for a.sent < min(a.cursor, l.end()) && a.sent >= l.base {
		u := l.at(a.sent)
		if a.sentAt+u.dur > out {
			break
		}
		a.sentAt += u.dur
		a.sent++
	}
	return a.sent
}

// stuck tells a write that timed out.
func stuck(err error) bool { return err != nil && os.IsTimeout(err) }
