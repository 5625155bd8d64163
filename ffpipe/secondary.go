package ffpipe

import (
	"strconv"
	"strings"
	"time"
)

// How a stop keeps the primary clear of the other outputs. ffmpeg's tee
// closes its slaves in order at the end, the primary first; each restream
// and the archive then waits for its fifo's thread, which a hung server or
// a slow disk can hold for ever. Once ffmpeg has closed the primary's
// connection without reporting a failure of it, the primary has all that
// a clean exit would have given it; the others get secondaryGrace to
// finish, then ffmpeg is killed and the stop still counts as clean.
const (
	secondaryGrace = 2 * time.Second
	// primaryPoll is how often a stop looks for the primary's socket
	// among ffmpeg's files: one short directory read.
	primaryPoll = 20 * time.Millisecond
)

// primaryFailure tells the stderr lines by which ffmpeg reports that the
// primary failed: with tee, a write error that reaches ffmpeg is the
// primary's (the others are ignored on failure), and so is a failure of
// slave #0 at the end.
func primaryFailure(line string) bool {
	return strings.Contains(line, "av_interleaved_write_frame()") || strings.Contains(line, "Slave muxer #0 failed")
}

// primarySocket returns the inode of the primary's socket while ffmpeg has
// other outputs and the primary is a TCP one; ok is false otherwise, and a
// stop then waits for ffmpeg alone.
func (p *Proc) primarySocket() (inode uint64, ok bool) {
	if p.conn.isPrimary == nil {
		return 0, false
	}
	if _, err := p.Conn(); err != nil {
		return 0, false
	}
	p.conn.mu.Lock()
	defer p.conn.mu.Unlock()
	return p.conn.inode, p.conn.found
}

// waitExit waits up to grace for ffmpeg to exit after its input closed.
// With other outputs it also returns, true, once the primary finished and
// the others had secondaryGrace: it kills ffmpeg then (see above).
func (p *Proc) waitExit(grace time.Duration, primary uint64, watch bool) bool {
	if !watch {
		return p.waitFor(grace)
	}
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(primaryPoll)
	defer tick.Stop()
	for !p.primaryClosed(primary) {
		select {
		case <-p.done:
			return true
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	if p.waitFor(secondaryGrace) {
		return true
	}
	p.mu.Lock()
	// ffmpeg reports a failure of the primary just after closing it:
	// by now its words have been read.
	p.detached = !p.primaryFailed
	detached := p.detached
	p.mu.Unlock()
	if !detached {
		return false
	}
	p.log.WithField("waited", secondaryGrace.String()).
		Warn("the primary output has the whole stream; a restream or the archive did not finish: ffmpeg is ended without them")
	p.Kill()
	<-p.done
	return true
}

// primaryClosed tells whether ffmpeg closed the primary's socket and never
// reported a failure of the primary.
func (p *Proc) primaryClosed(inode uint64) bool {
	p.mu.Lock()
	failed, exited := p.primaryFailed, p.exited
	p.mu.Unlock()
	if failed || exited {
		return false
	}
	inodes, err := socketInodes("/proc/" + strconv.Itoa(p.Pid()) + "/fd")
	return err == nil && !inodes[inode]
}
