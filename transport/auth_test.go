package transport

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good, err := MintToken(secret, "room1", now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyToken(secret, good, "room1", now); err != nil {
		t.Fatalf("valid token refused: %v", err)
	}
	expired, _ := MintToken(secret, "room1", now.Add(-time.Second))
	forged := good[:len(good)-2] + "AA"
	otherSecret, _ := MintToken([]byte("another secret, same length....."), "room1", now.Add(time.Hour))
	retargeted := strings.Replace(good, "room1", "room2", 1)
	for name, tc := range map[string]struct{ token, id, want string }{
		"expired":        {expired, "room1", "token expired at 2027-01-15T07:59:59Z"},
		"forged":         {forged, "room1", "token signature is not valid"},
		"other secret":   {otherSecret, "room1", "token signature is not valid"},
		"retargeted":     {retargeted, "room2", "token signature is not valid"},
		"other id":       {good, "room2", `this token is for live id "room1", not "room2"`},
		"malformed":      {"v1.room1", "room1", "malformed token"},
		"other version":  {"v2" + good[2:], "room1", "malformed token"},
		"not a number":   {"v1.room1.soon." + sign(secret, "v1.room1.soon"), "room1", "malformed token"},
		"empty":          {"", "room1", "malformed token"},
		"tokens are off": {good, "room1", "tokens are not enabled"},
	} {
		s := secret
		if name == "tokens are off" {
			s = nil
		}
		err := VerifyToken(s, tc.token, tc.id, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	if _, err := MintToken(secret, "../x", now); err == nil {
		t.Error("minted a token for an invalid id")
	}
}

func tokenServer(t *testing.T) *testServer {
	return newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.TokenSecret = secret
		c.AdminKey = "admin"
	})
}

func TestTokensOnEveryTransport(t *testing.T) {
	ts := tokenServer(t)
	valid, _ := MintToken(secret, "tok", time.Now().Add(time.Hour))
	expired, _ := MintToken(secret, "tok", time.Now().Add(-time.Minute))
	other, _ := MintToken(secret, "other", time.Now().Add(time.Hour))
	forged := valid[:len(valid)-3] + "abc"
	body := func() io.Reader { return strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1))) }
	type attempt struct {
		name   string
		token  string
		header bool
		code   int
	}
	attempts := []attempt{
		{"valid in query", valid, false, 200}, {"valid in header", valid, true, 200},
		{"expired", expired, false, 403}, {"expired in header", expired, true, 403},
		{"forged", forged, false, 403}, {"other id", other, true, 403},
	}
	for _, a := range attempts {
		t.Run("base64 "+a.name, func(t *testing.T) {
			url := ts.URL + "/base64?id=tok"
			req, _ := http.NewRequest("POST", url, body())
			if a.header {
				req.Header.Set("Authorization", "Bearer "+a.token)
			} else {
				req.URL.RawQuery += "&token=" + a.token
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != a.code {
				t.Errorf("status %d, want %d", resp.StatusCode, a.code)
			}
		})
		t.Run("upload "+a.name, func(t *testing.T) {
			req, _ := http.NewRequest("PUT", ts.URL+"/live/tok", strings.NewReader(string(mp3(3, 1))))
			if a.header {
				req.Header.Set("Authorization", "Bearer "+a.token)
			} else {
				req.URL.RawQuery = "token=" + a.token
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != a.code {
				t.Errorf("status %d, want %d", resp.StatusCode, a.code)
			}
		})
		t.Run("websocket "+a.name, func(t *testing.T) {
			hdr := http.Header{}
			q := "id=tok"
			if a.header {
				hdr.Set("Authorization", "Bearer "+a.token)
			} else {
				q += "&token=" + a.token
			}
			c := dialWS(t, ts, q, hdr)
			m := readStatus(t, c)
			if a.code == 200 {
				if m["type"] != "ready" {
					t.Errorf("refused: %v", m)
				}
				c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				readUntilClose(t, c)
				return
			}
			_, ce := readUntilClose(t, c)
			if m["type"] != "error" || ce.Code != websocket.ClosePolicyViolation {
				t.Errorf("got %v and close %v, want an error and 1008", m, ce)
			}
		})
	}
	// With a token secret and no key, a request without credentials fails.
	code, r := do(t, "POST", ts.URL+"/base64?id=tok", body())
	if code != 403 || !strings.Contains(r.Errmsg, "wrong or missing key") {
		t.Errorf("no credentials: %d %+v", code, r)
	}
}

func adminDo(t *testing.T, method, url, key string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestStreamAPI(t *testing.T) {
	ts := tokenServer(t)
	tok, _ := MintToken(secret, "s1", time.Now().Add(time.Hour))
	if code, r := do(t, "POST", ts.URL+"/base64?id=s1&token="+tok, strings.NewReader(base64.StdEncoding.EncodeToString(mp3(30, 1)))); code != 200 {
		t.Fatalf("publish: %d %+v", code, r)
	}
	if code, _ := adminDo(t, "GET", ts.URL+"/streams", ""); code != 403 {
		t.Errorf("GET /streams without the admin key: %d", code)
	}
	if code, _ := adminDo(t, "GET", ts.URL+"/streams", "wrong"); code != 403 {
		t.Errorf("GET /streams with a wrong key: %d", code)
	}
	code, m := adminDo(t, "GET", ts.URL+"/streams", "admin")
	streams, _ := m["streams"].([]any)
	if code != 200 || len(streams) != 1 {
		t.Fatalf("GET /streams: %d %v", code, m)
	}
	st := streams[0].(map[string]any)
	for _, k := range []string{"id", "state", "started", "bytes", "seconds", "pid", "ffmpeg", "transport", "remote"} {
		if _, ok := st[k]; !ok {
			t.Errorf("stream info has no %q: %v", k, st)
		}
	}
	if st["id"] != "s1" || st["bytes"].(float64) != 30*144 || st["transport"] != "base64" {
		t.Errorf("stream info: %v", st)
	}
	if code, m := adminDo(t, "GET", ts.URL+"/streams/s1", "admin"); code != 200 || m["stream"].(map[string]any)["id"] != "s1" {
		t.Errorf("GET /streams/s1: %d %v", code, m)
	}
	if code, _ := adminDo(t, "GET", ts.URL+"/streams/nope", "admin"); code != 404 {
		t.Errorf("GET /streams/nope: %d", code)
	}
	otherTok, _ := MintToken(secret, "s2", time.Now().Add(time.Hour))
	if code, _ := adminDo(t, "DELETE", ts.URL+"/streams/s1", otherTok); code != 403 {
		t.Errorf("DELETE with another stream's token: %d", code)
	}
	if code, _ := adminDo(t, "DELETE", ts.URL+"/streams/s1", tok); code != 200 {
		t.Errorf("DELETE with the stream's own token: %d", code)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, live := ts.reg.Info("s1"); !live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("DELETE did not end the stream")
		}
	}
	if code, _ := adminDo(t, "DELETE", ts.URL+"/streams/s1", "admin"); code != 404 {
		t.Errorf("DELETE of an ended stream: %d", code)
	}
	// Minting.
	code, m = adminDo(t, "POST", ts.URL+"/tokens?id=s3&ttl=10m", "admin")
	if code != 200 || VerifyToken(secret, m["token"].(string), "s3", time.Now()) != nil {
		t.Errorf("POST /tokens: %d %v", code, m)
	}
	if code, _ := adminDo(t, "POST", ts.URL+"/tokens?id=s3&ttl=forever", "admin"); code != 400 {
		t.Errorf("bad ttl: %d", code)
	}
	if code, _ := adminDo(t, "POST", ts.URL+"/tokens?id=s3", tok); code != 403 {
		t.Errorf("minting with a publish token: %d", code)
	}
	// Without an admin key the API is off.
	plain := newServer(t, fakeffmpeg.Normal, nil)
	if code, m := adminDo(t, "GET", plain.URL+"/streams", "anything"); code != 404 || !strings.Contains(m["errmsg"].(string), "-admin-key") {
		t.Errorf("API without -admin-key: %d %v", code, m)
	}
	// The stream's own key may end it there.
	do(t, "POST", plain.URL+"/base64?id=k1&key=k", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1))))
	if code, _ := adminDo(t, "DELETE", plain.URL+"/streams/k1?key=k", ""); code != 200 {
		t.Errorf("DELETE with the publish key: %d", code)
	}
}

func TestRateLimits(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.RateRequests = 1 // bursts of 2
		c.RateSessions = 0.01
	})
	// A burst of 2, then 1 a second: whatever the machine's speed, no more
	// than 2 + elapsed seconds are accepted, and a quick run of requests
	// meets a 429 telling the client to come back in a second.
	start := time.Now()
	var codes []int
	retry, ok := "", 0
	for i := 0; i < 10 && retry == ""; i++ {
		resp, err := http.Post(ts.URL+"/base64?key=k&id=r1", "text/plain", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1))))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == 200 {
			ok++
		} else {
			retry = resp.Header.Get("Retry-After")
		}
	}
	if limit := 2 + int(time.Since(start).Seconds()); codes[0] != 200 || codes[1] != 200 || ok > limit ||
		codes[len(codes)-1] != 429 || retry != "1" {
		t.Errorf("codes %v, Retry-After %q; want 200 200, at most %d accepted, then 429 and 1", codes, retry, limit)
	}
	// New sessions: a burst of 5, then refused.
	ns := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.RateSessions = 0.01
		s.IdleTimeout = time.Minute // each first POST waits for a publish: the first stream must outlast six
	})
	var last int
	var msg string
	for i := 0; i < 6; i++ {
		code, r := do(t, "POST", ns.URL+"/base64?key=k&id=n"+string(rune('a'+i)), strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1))))
		last, msg = code, r.Errmsg
	}
	if last != 429 || !strings.Contains(msg, "too many new streams") {
		t.Errorf("sixth new stream: %d %q", last, msg)
	}
	// An existing stream is not a new one.
	if code, _ := do(t, "POST", ns.URL+"/base64?key=k&id=na", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1)))); code != 200 {
		t.Errorf("existing stream limited: %d", code)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	if code, m := adminDo(t, "GET", ts.URL+"/healthz", ""); code != 200 || m["status"] != "alive" {
		t.Errorf("/healthz: %d %v", code, m)
	}
	if code, m := adminDo(t, "GET", ts.URL+"/readyz", ""); code != 200 || m["status"] != "ready" {
		t.Errorf("/readyz: %d %v", code, m)
	}
	ts.api.Drain()
	if code, m := adminDo(t, "GET", ts.URL+"/readyz", ""); code != 503 || m["status"] != "draining" {
		t.Errorf("/readyz while draining: %d %v", code, m)
	}
	// Draining refuses nothing else.
	if code, _ := do(t, "POST", ts.URL+"/base64?key=k&id=d", strings.NewReader(base64.StdEncoding.EncodeToString(mp3(3, 1)))); code != 200 {
		t.Errorf("POST while draining: %d", code)
	}
	broken := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) {
		c.Ready = func() error { return io.ErrUnexpectedEOF }
	})
	if code, m := adminDo(t, "GET", broken.URL+"/readyz", ""); code != 503 || m["status"] != "not ready" {
		t.Errorf("/readyz with ffmpeg broken: %d %v", code, m)
	}
}

func TestKeyCompare(t *testing.T) {
	k := newSecretKey("s3cret-key")
	if !k.matches("s3cret-key") {
		t.Error("the key itself was refused")
	}
	// Shorter, longer, a prefix, empty: all refused, the lengths never
	// compared (the digests are all 32 bytes).
	for _, g := range []string{"", "s3cret", "s3cret-key ", "s3cret-kez", "S3CRET-KEY", strings.Repeat("s3cret-key", 100)} {
		if k.matches(g) {
			t.Errorf("%q accepted", g)
		}
	}
}
