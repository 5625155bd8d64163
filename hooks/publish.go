package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"ffmpeg-publisher/session"
)

// Publish is the body of an on_publish call: who wants to start which
// stream, and how.
type Publish struct {
	Event  string    `json:"event"` // "on_publish"
	CallID string    `json:"call_id"`
	Time   time.Time `json:"time"`
	ID     string    `json:"id"`
	// Transport is base64, websocket or upload.
	Transport string `json:"transport"`
	// Format is the audio's format (mp3, webm, pcm…), FormatParams its
	// parameters (rate and channels for PCM).
	Format       string         `json:"format"`
	FormatParams map[string]int `json:"format_params"`
	// Addr is the client's IP address (behind trusted proxies, the
	// client's, not the proxy's); Remote the same with the port, if known.
	Addr   string `json:"addr"`
	Remote string `json:"remote"`
	// Query holds the request's query parameters, the first value of
	// each; the server's credentials (key, token, admin_key) are left out
	// unless the hook alone decides.
	Query     map[string]string `json:"query"`
	UserAgent string            `json:"user_agent"`
	Origin    string            `json:"origin"`
	// Takeover: the connection would take a live stream over from a quiet
	// one (-takeover); the answer's settings do not apply to it.
	Takeover bool `json:"takeover,omitempty"`
}

// publishAnswer is what a 2xx answer may set for the new stream.
type publishAnswer struct {
	// Output replaces -rtmp for this stream: one URL. A later version
	// with several outputs takes "outputs", a list, beside it.
	Output string `json:"output"`
	// IdleTimeout in seconds replaces -idle-timeout.
	IdleTimeout float64 `json:"idle_timeout"`
	// Name replaces the live ID as the stream name in the output URL.
	Name string `json:"name"`
}

// outputSchemes are the outputs an application may give: network streams,
// never a file on this server.
var outputSchemes = map[string]bool{"rtmp": true, "rtmps": true, "srt": true}

// maxIdleOverride keeps an answer's idle timeout sane: a session holds its
// ID and an ffmpeg for that long without data.
const maxIdleOverride = 24 * time.Hour

// errAnswer: a 2xx whose settings cannot be used is the hook's failure,
// not an allowance of defaults the application did not mean.
type errAnswer struct{ msg string }

func (e *errAnswer) Error() string { return "on_publish answer: " + e.msg }

// overrides reads a 2xx answer. A body that is not JSON (empty, "OK")
// allows with no change.
func (a answer) overrides() (*session.Overrides, error) {
	if len(strings.TrimSpace(string(a.body))) == 0 || !a.jsonBody() {
		return nil, nil
	}
	var p publishAnswer
	if err := json.Unmarshal(a.body, &p); err != nil {
		return nil, &errAnswer{"not a JSON object with output, idle_timeout, name"}
	}
	o := &session.Overrides{Output: p.Output, Name: p.Name}
	if p.Output != "" {
		u, err := url.Parse(p.Output)
		if err != nil || !outputSchemes[u.Scheme] || u.Host == "" || strings.ContainsAny(p.Output, " \t\r\n") {
			// The URL itself is not repeated: it may hold a key.
			return nil, &errAnswer{"output must be an rtmp://, rtmps:// or srt:// URL"}
		}
	}
	if p.Name != "" && !session.ValidID(p.Name) {
		return nil, &errAnswer{"name must be 1 to 64 characters from A-Z a-z 0-9 _ -"}
	}
	if p.IdleTimeout != 0 {
		d := time.Duration(p.IdleTimeout * float64(time.Second))
		if p.IdleTimeout < 0 || d < time.Second || d > maxIdleOverride {
			return nil, &errAnswer{fmt.Sprintf("idle_timeout must be 1 to %.0f seconds", maxIdleOverride.Seconds())}
		}
		o.IdleTimeout = d
	}
	if *o == (session.Overrides{}) {
		return nil, nil
	}
	return o, nil
}

// Publish asks the on_publish hook whether req may start its stream: nil
// and the answer's overrides (nil for none) when it may; a *Refusal, or
// ErrUnavailable when the hook does not answer and -hook-fail is closed.
// Without an on_publish URL every stream may start.
func (h *Hooks) Publish(ctx context.Context, req Publish) (*session.Overrides, error) {
	if h.publish == nil {
		return nil, nil
	}
	req.Event, req.CallID, req.Time = "on_publish", newCallID(), time.Now().UTC()
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	log := h.log.WithFields(map[string]any{"id": req.ID, "hook": "on_publish"})
	a, err := h.publish.call(ctx, body)
	if err == nil && a.ok() {
		o, err := a.overrides()
		if err == nil {
			return o, nil
		}
		log.WithError(err).Warn("the on_publish hook's answer cannot be used")
		return nil, h.unavailable(err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // the client went away
		}
		log.WithError(err).Warn("the on_publish hook did not answer")
		return nil, h.unavailable(err)
	}
	ref := a.refusal("refused by the on_publish hook")
	log.WithFields(map[string]any{"status": a.status, "message": ref.Message}).Info("the on_publish hook refused the stream")
	return nil, ref
}

// unavailable applies -hook-fail to a hook that gave no usable answer.
func (h *Hooks) unavailable(err error) error {
	if h.cfg.FailOpen {
		return nil
	}
	return ErrUnavailable
}
