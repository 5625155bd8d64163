package session

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"time"

	"ffmpeg-publisher/internal/redact"
)

// A stream's outputs: the first is the primary, which carries the delivery
// promise (its progress confirms the log; its failure restarts ffmpeg and
// every output with it); the others are restreams, which ffmpeg feeds
// best-effort and reopens by itself when they fail (see ffpipe.Config.Also).
// A session takes its outputs once, at its first ffmpeg: a routing change
// applies to streams that start after it.

// OutputsFor returns id's output URLs, primary first: Route's when it has
// any, else RTMPBase with the stream's name in it. Routes match the live
// ID; the name (the ID unless a hook named the stream) goes in the URLs.
// This is the one place that decides where a stream goes.
func (c Config) OutputsFor(id string) []string {
	name := c.streamName(id)
	if c.Output != "" {
		return []string{strings.ReplaceAll(c.Output, "{id}", name)}
	}
	if c.Route != nil {
		if outs := c.Route(id, name); len(outs) > 0 {
			return outs
		}
	}
	return []string{Target(c.RTMPBase, name)}
}

// OutputInfo is one output's state in Info.
type OutputInfo struct {
	Index      int    `json:"index"`
	URL        string `json:"url"`   // redacted
	State      string `json:"state"` // waiting, connecting, publishing, stalled, down
	Error      string `json:"error,omitempty"`
	Recoveries int    `json:"recoveries,omitempty"` // times it was reopened after failing
}

// Output states. The primary is publishing once ffmpeg reported progress
// (its publish started); a restream once its server took the stream's
// first bytes past the handshakes (see restreamState).
const (
	OutputWaiting    = "waiting"    // no ffmpeg publishing now
	OutputConnecting = "connecting" // ffmpeg is connecting to it; nothing published there yet
	OutputPublishing = "publishing"
	OutputStalled    = "stalled" // connected, but its server has taken nothing for the stall timeout
	OutputDown       = "down"    // failed; ffmpeg tries it again
)

// OutputStates is the outputs as a JSON array, held as text so that Info
// stays comparable (status messages are sent when it changes).
type OutputStates string

// MarshalJSON writes the array itself.
func (o OutputStates) MarshalJSON() ([]byte, error) {
	if o == "" {
		return []byte("[]"), nil
	}
	return []byte(o), nil
}

// UnmarshalJSON keeps the array as text.
func (o *OutputStates) UnmarshalJSON(b []byte) error {
	*o = OutputStates(b)
	return nil
}

// List decodes the states.
func (o OutputStates) List() []OutputInfo {
	var l []OutputInfo
	json.Unmarshal([]byte(o), &l)
	return l
}

// outputsNow returns the session's outputs, fixed at its first ffmpeg.
func (s *Session) outputsNow() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.outputs
}

// outputStatesLocked describes each output for Info. Must hold mu.
func (s *Session) outputStatesLocked() OutputStates {
	if len(s.outputs) == 0 {
		return ""
	}
	publishing := s.running != nil && s.ffstate == "publishing"
	list := make([]OutputInfo, len(s.outputs))
	for i, u := range s.outputs {
		o := OutputInfo{Index: i, URL: redact.URL(u, s.cfg.redactID(s.id)), State: OutputWaiting}
		switch {
		case !publishing:
		case i == 0:
			o.State = OutputPublishing
		case i < len(s.restreams):
			r := s.restreams[i]
			o.State, o.Error, o.Recoveries = r.State, r.Error, r.Recoveries
		default:
			o.State = OutputConnecting // not looked at yet
		}
		list[i] = o
	}
	b, err := json.Marshal(list)
	if err != nil {
		return OutputStates("[]")
	}
	return OutputStates(b)
}

// recordFile names the archive of an ffmpeg starting at t: one file per
// publish attempt, by ID and start time (UTC, to the millisecond: two
// attempts within a second get two files); "" without RecordDir. IDs hold
// only characters safe in a file name (ValidID).
func (s *Session) recordFile(t time.Time) string {
	if s.cfg.RecordDir == "" {
		return ""
	}
	ext := ".m4a"
	if v := s.cfg.FFmpeg.Video; v != "" && v != "none" {
		ext = ".mp4"
	}
	return filepath.Join(s.cfg.RecordDir, s.id+"-"+t.UTC().Format("20060102T150405.000Z")+ext)
}
