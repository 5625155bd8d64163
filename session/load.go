package session

import "time"

// StreamLoad is what admission control reads of a stream: far less than
// Info, which it would otherwise build for every stream twice a second.
type StreamLoad struct {
	State   State
	FFmpeg  string        // as Info.FFmpeg
	Stalled bool          // the RTMP server stopped reading (Info.Upstream)
	Held    time.Duration // as Info.Held: accepted, not yet confirmed sent
	// Waiting: its ffmpeg was started before any audio and has loaded; it
	// waits for the client and costs no CPU meanwhile.
	Waiting bool
}

// Loads appends every session's StreamLoad to dst, in no order.
func (r *Registry) Loads(dst []StreamLoad) []StreamLoad {
	r.mu.Lock()
	all := make([]*Session, 0, len(r.sessions))
	for _, s := range r.sessions {
		all = append(all, s)
	}
	r.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		w := s.waiting != nil && s.waiting.Loaded()
		dst = append(dst, StreamLoad{State: s.state, FFmpeg: s.ffstate, Stalled: s.upstream != "", Held: s.held, Waiting: w})
		s.mu.Unlock()
	}
	return dst
}
