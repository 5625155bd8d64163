package session

import (
	"errors"
	"syscall"

	"ffmpeg-publisher/ffpipe"
)

// An ffmpeg stopped by a signal from outside the server while the server
// drains or closes is not replaced: the stream ends instead, and its held
// audio is dropped. systemd's KillMode=control-group sends SIGTERM to every
// process of the unit at once, and an operator may kill ffmpegs by hand;
// republishing from a server that is going away would give the stream a
// second publish (split it) on the RTMP server. At other times such an
// exit is restarted like any failure.

// stoppedFromOutside tells whether ffmpeg's exit error says a stop request
// we did not send ended it: SIGTERM, SIGINT or SIGHUP, or ffmpeg's own
// status 255, which it exits with after SIGINT or SIGTERM. (ffpipe reports its own SIGINT as
// a clean stop, nil.)
func stoppedFromOutside(err error) bool {
	var ee *ffpipe.ExitError
	if !errors.As(err, &ee) || ee.State == nil {
		return false
	}
	ws, ok := ee.State.Sys().(syscall.WaitStatus)
	if !ok {
		return false
	}
	if ws.Signaled() { // a stop request; SIGKILL (the OOM killer, a crash) is a failure to restart
		sig := ws.Signal()
		return sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGHUP
	}
	return ws.Exited() && ws.ExitStatus() == 255
}

// noteExit records whether proc, the session's running ffmpeg, which
// exited with err, was stopped from outside (not by killOnPurpose).
func (s *Session) noteExit(proc *ffpipe.Proc, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running == proc {
		s.stoppedOutside = s.killed != proc && stoppedFromOutside(err)
	}
}

// endIfStoppedOutside ends the stream, dropping what it holds, instead of
// starting another ffmpeg when the last one was stopped from outside and
// the server drains or closes. It reports whether it did.
func (s *Session) endIfStoppedOutside() bool {
	s.mu.Lock()
	outside := s.stoppedOutside
	s.mu.Unlock()
	if !outside || !s.draining.Load() {
		return false
	}
	if !s.ending() {
		s.log.Warn("ffmpeg was stopped by a signal from outside while the server shuts down: ending the stream instead of publishing it again")
	}
	s.abortNow() // finish publishes nothing more
	s.requestEnd(CauseShutdown, "ffmpeg was stopped from outside during shutdown")
	return true
}
