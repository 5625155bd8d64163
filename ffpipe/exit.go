package ffpipe

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ExitError is how an ffmpeg that did not stop cleanly ended.
type ExitError struct {
	State *os.ProcessState // nil if the process could not be waited for
	Tail  []string         // ffmpeg's last stderr lines, oldest first, redacted
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
