package transport

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
)

// codes records the status of every reply, as the metrics do.
type codes struct {
	mu   sync.Mutex
	seen map[int]int
}

func (c *codes) Replied(_ string, code int, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen[code]++
}

func (c *codes) count(code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[code]
}

// TestBodyEndedEarly: a client that drops mid-body gets (or would get) the
// documented 499, and the metrics count it as 499, never as the server's
// 500; a malformed chunked body is a 400.
func TestBodyEndedEarly(t *testing.T) {
	seen := &codes{seen: map[int]int{}}
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, _ *session.Config) { c.Observer = seen })
	addr := strings.TrimPrefix(ts.URL, "http://")
	chunk := base64.StdEncoding.EncodeToString(mp3(20, 1))
	for _, tc := range []struct {
		name, head, body string
		reset            bool // end with a TCP reset instead of a half close
		want             int
		msg              string
	}{
		{"base64 cut short", "POST /base64?key=k&id=cut HTTP/1.1\r\nContent-Length: 4000\r\n", chunk[:1000], false, 499, "the request body ended early"},
		{"upload cut short", "POST /live/cutlive?key=k HTTP/1.1\r\nContent-Length: 100000\r\n", string(mp3(20, 2)), false, 499, "the request body ended early"},
		{"chunked cut short", "POST /base64?key=k&id=cutchunk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", "1000\r\n" + chunk[:100], false, 499, "the request body ended early"},
		{"malformed chunks", "POST /base64?key=k&id=badchunk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", "zz\r\nabc\r\n", false, 400, "malformed request body"},
		{"base64 reset", "POST /base64?key=k&id=reset HTTP/1.1\r\nContent-Length: 4000\r\n", chunk[:1000], true, 499, ""},
		{"upload reset", "POST /live/resetlive?key=k HTTP/1.1\r\nContent-Length: 100000\r\n", string(mp3(20, 3)), true, 499, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := seen.count(tc.want)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%sHost: x\r\n\r\n%s", tc.head, tc.body)
			if tc.reset {
				time.Sleep(100 * time.Millisecond) // let the server start reading the body
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
			} else {
				conn.(*net.TCPConn).CloseWrite()
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("no reply: %v", err)
				}
				var r legacyReply
				json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if resp.StatusCode != tc.want || r.Errcode != tc.want || !strings.Contains(r.Errmsg, tc.msg) {
					t.Errorf("%d %+v, want %d %q", resp.StatusCode, r, tc.want, tc.msg)
				}
			}
			for deadline := time.Now().Add(5 * time.Second); seen.count(tc.want) == before; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no %d counted", tc.want)
				}
			}
		})
	}
	if n := seen.count(http.StatusInternalServerError); n > 0 {
		t.Errorf("%d replies counted as 500", n)
	}
}
