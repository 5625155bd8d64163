package hooks

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// maxAnswer bounds how much of an answer is read: a message and a few
// settings, never a stream.
const maxAnswer = 64 << 10

// maxMessage bounds the hook's message passed on to a client.
const maxMessage = 300

// ErrUnavailable: the hook did not answer within -hook-timeout or could not
// be reached, and -hook-fail is closed.
var ErrUnavailable = errors.New("the publish hook did not answer: try again later")

// Refusal is a hook's answer other than 2xx: Status is what the client gets
// (403, or 429 and 503 when the hook said so), Message the hook's words.
type Refusal struct {
	Status     int
	Message    string
	RetryAfter string // the hook's Retry-After, passed on with 429 and 503
	hookStatus int
}

func (e *Refusal) Error() string { return e.Message }

// answer is one hook's reply: its status, and its body when it came.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// ok tells a 2xx.
func (a answer) ok() bool { return a.status >= 200 && a.status < 300 }

// jsonBody tells whether the answer says its body is JSON, or looks it.
func (a answer) jsonBody() bool {
	if mt, _, err := mime.ParseMediaType(a.header.Get("Content-Type")); err == nil {
		if mt == "application/json" || strings.HasSuffix(mt, "+json") {
			return true
		}
	}
	return bytes.HasPrefix(bytes.TrimSpace(a.body), []byte("{"))
}

// refusal turns a non-2xx answer into what the client is told.
func (a answer) refusal(fallback string) *Refusal {
	r := &Refusal{Status: http.StatusForbidden, hookStatus: a.status}
	switch a.status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		r.Status = a.status
		r.RetryAfter = a.header.Get("Retry-After")
	}
	if a.jsonBody() {
		var m struct {
			Message string `json:"message"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(a.body, &m) == nil {
			r.Message = cmp.Or(m.Message, m.Error)
		}
	} else {
		r.Message = string(a.body)
	}
	r.Message = cleanMessage(r.Message)
	if r.Message == "" {
		r.Message = fmt.Sprintf("%s (status %d)", fallback, a.status)
	}
	return r
}

// cleanMessage keeps a message fit for a reply, a log line and a close
// reason: one line of printable text, bounded.
func cleanMessage(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\r' || r == '\t':
			return ' '
		case !unicode.IsPrint(r) || r == unicode.ReplacementChar:
			return -1
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// caller makes one kind of call: it signs the body, bounds the call by
// the timeout, reads a bounded answer and reports it to the observer.
type caller struct {
	hook    string // on_publish, on_update, on_done: the metric label
	url     string
	shown   string // url as errors show it: no userinfo, no query (see redact)
	timeout time.Duration
	secret  []byte
	client  *http.Client
	obs     Observer
}

// call POSTs body and returns the answer, or an error when none came
// (unreachable, timeout, an answer cut short), which names the URL without
// its secrets.
func (c *caller) call(ctx context.Context, body []byte) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	a, err := c.do(ctx, body)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		ue.URL = c.shown // url.Error hides a password only, not a token in the query
	}
	c.obs.HookCalled(c.hook, time.Since(start), err == nil && a.status < 500)
	return a, err
}

func (c *caller) do(ctx context.Context, body []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ffmpeg-publisher")
	sign(req.Header, c.secret, body, time.Now())
	resp, err := c.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return answer{}, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer)) // lets the connection be reused
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// newClient is the HTTP client of every hook: no redirects (a 3xx is an
// answer like any other), enough idle connections for many streams
// starting together.
func newClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
