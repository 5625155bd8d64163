package transport

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
)

// legacyClient is a mini-program written against one server: it takes a
// chunk as delivered when errcode equals what it was written to expect
// (the documented 0, or the 200 of the old binary).
type legacyClient struct {
	t      *testing.T
	base   string
	expect int
}

// post sends one chunk and returns whether the client thinks it was
// delivered, with the raw reply.
func (c legacyClient) post(query string, chunk []byte) (bool, string) {
	c.t.Helper()
	resp, err := http.Post(c.base+"/base64?key=k&"+query, "text/plain", strings.NewReader(base64.StdEncoding.EncodeToString(chunk)))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r struct {
		Errcode *int `json:"errcode"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || r.Errcode == nil {
		c.t.Fatalf("reply %q has no errcode", raw)
	}
	return *r.Errcode == c.expect, string(raw)
}

func TestLegacySuccessErrcode(t *testing.T) {
	documented := newServer(t, fakeffmpeg.Normal, nil)
	legacy := newServer(t, fakeffmpeg.Normal, func(c *Config, _ *session.Config) { c.SuccessErrcode = 200 })

	for _, tc := range []struct {
		name       string
		server     *testServer
		expect     int
		plain, seq string // the exact replies
	}{
		{"documented 0", documented, 0, `{"errcode":0,"errmsg":"ok"}` + "\n", `{"errcode":0,"errmsg":"ok","seq":0}` + "\n"},
		{"old binary's 200", legacy, 200, `{"errcode":200,"errmsg":"ok"}` + "\n", `{"errcode":200,"errmsg":"ok","seq":0}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			right := legacyClient{t, tc.server.URL, tc.expect}
			wrong := legacyClient{t, tc.server.URL, 200 - tc.expect}
			if ok, raw := right.post("id=plain", mp3(3, 1)); !ok || raw != tc.plain {
				t.Errorf("a client expecting %d: delivered=%v, reply %q, want %q", tc.expect, ok, raw, tc.plain)
			}
			if ok, raw := wrong.post("id=plain", mp3(3, 2)); ok {
				t.Errorf("a client expecting %d took %q for success", 200-tc.expect, raw)
			}
			if ok, raw := right.post("id=numbered&seq=0", mp3(3, 3)); !ok || raw != tc.seq {
				t.Errorf("numbered chunk: delivered=%v, reply %q, want %q", ok, raw, tc.seq)
			}
			if ok, raw := right.post("id=numbered&seq=0", mp3(3, 3)); !ok || !strings.Contains(raw, `"duplicate":true`) {
				t.Errorf("retried chunk: delivered=%v, reply %q", ok, raw)
			}
			// Failures keep errcode = the HTTP status under both conventions.
			if ok, raw := right.post("id=x&seq=-1", mp3(3, 4)); ok || !strings.HasPrefix(raw, `{"errcode":400,`) {
				t.Errorf("a refused chunk: delivered=%v, reply %q", ok, raw)
			}
			// Only /base64 speaks the old convention: the newer endpoints keep 0.
			if code, r := do(t, "GET", tc.server.URL+"/", nil); code != 200 || r.Errcode != 0 {
				t.Errorf("GET /: %d %+v", code, r)
			}
			if code, r := do(t, "PUT", tc.server.URL+"/live/upload?key=k", strings.NewReader(string(mp3(3, 5)))); code != 200 || r.Errcode != 0 {
				t.Errorf("PUT /live: %d %+v", code, r)
			}
		})
	}
}
