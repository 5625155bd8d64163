package main

import (
	"encoding/base64"
	"fmt"
	stdlog "log"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ffmpeg-publisher/internal/leakcheck"
	"ffmpeg-publisher/internal/rtmptest"

	"github.com/gorilla/websocket"
)

// Timings of the soak, shortened through the configuration so that 1,000
// abusive connections fit in about a minute.
const (
	soakHeaderTimeout = 2 * time.Second
	soakBodyTimeout   = 3 * time.Second
	soakWSTimeout     = 3 * time.Second
	soakMaxBody       = 64 << 10
	soakMaxMessage    = 16 << 10
	// soakHeld: a connection the server has not ended this long after its
	// client stopped is held, a failure (the longest timeout is 3 s).
	soakHeld = 30 * time.Second
)

// soakClient is one abusive connection: run returns how it ended.
type soakClient struct {
	kind    string
	n       int
	allowed []string
	run     func(s *soak, i int, rng *mrand.Rand) string
}

// timedOut are the endings any connection may get besides its own: the
// documented answers to a deadline that passed (a hang-up, 408, 1001), as
// on a loaded machine a deadline can pass before the server has read all
// that was sent. A connection is never held past its deadline.
var timedOut = []string{"dropped", "reply 408", "close 1001"}

// soak is the state the clients share.
type soak struct {
	p       *publisher
	addr    string
	mp3     []byte        // 1 KiB of real MP3
	release chan struct{} // closed once the server has let go of everything
}

func (s *soak) dial() (net.Conn, error) { return net.Dial("tcp", s.addr) }

func (s *soak) ws(d *websocket.Dialer, id string) (*websocket.Conn, error) {
	c, _, err := d.Dial("ws://"+s.addr+"/ws?key=secret&id="+id, nil)
	return c, err
}

// raw sends head (a request line and headers, without the blank line) and
// then body, and returns the connection.
func (s *soak) raw(head string, body []byte) (net.Conn, error) {
	conn, err := s.dial()
	if err != nil {
		return nil, err
	}
	conn.Write(append([]byte(head+"Host: x\r\n\r\n"), body...))
	return conn, nil
}

func randomBytes(rng *mrand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// audioOrNoise is real MP3 for every tenth client (so that some sessions
// start a real ffmpeg), random bytes for the others.
func (s *soak) audioOrNoise(i int, rng *mrand.Rand) []byte {
	if i%10 == 0 {
		return s.mp3
	}
	return randomBytes(rng, len(s.mp3))
}

// soakClients is the mix: 1,000 connections of 18 kinds.
var soakClients = []soakClient{
	{"silent websocket that answers pings", 100, []string{"close 1001"}, func(s *soak, i int, _ *mrand.Rand) string {
		c, err := s.ws(websocket.DefaultDialer, "silent"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		defer c.Close()
		return wsEnding(c, soakHeld) // gorilla answers the pings while it reads
	}},
	{"silent websocket that never reads", 50, []string{"released"}, func(s *soak, i int, _ *mrand.Rand) string {
		c, err := s.ws(&tinyReceiveBuffer, "deaf"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		defer c.Close()
		<-s.release // the server's side is checked before the test lets go of this one
		return "released"
	}},
	{"websocket that vanishes without a close", 50, []string{"gone"}, func(s *soak, i int, _ *mrand.Rand) string {
		c, err := s.ws(websocket.DefaultDialer, "vanish"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		if i%10 == 0 {
			c.WriteMessage(websocket.BinaryMessage, s.mp3)
		}
		c.NetConn().Close()
		return "gone"
	}},
	{"/base64 body cut short", 50, []string{"reply 499"}, func(s *soak, i int, rng *mrand.Rand) string {
		body := base64.StdEncoding.EncodeToString(s.mp3)
		conn, err := s.raw(fmt.Sprintf("POST /base64?key=secret&id=cut%d HTTP/1.1\r\nContent-Length: %d\r\n", i, 2*len(body)), []byte(body))
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		conn.(*net.TCPConn).CloseWrite()
		return ending(conn, soakHeld)
	}},
	{"/base64 body stalled halfway", 50, []string{"reply 408"}, func(s *soak, i int, rng *mrand.Rand) string {
		body := base64.StdEncoding.EncodeToString(s.mp3)
		conn, err := s.raw(fmt.Sprintf("POST /base64?key=secret&id=stall%d HTTP/1.1\r\nContent-Length: %d\r\n", i, 2*len(body)), []byte(body))
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		return ending(conn, soakHeld)
	}},
	{"/live upload cut short", 50, []string{"reply 499", "reply 415", "reply 502"}, func(s *soak, i int, rng *mrand.Rand) string {
		conn, err := s.raw(fmt.Sprintf("POST /live/cutlive%d?key=secret HTTP/1.1\r\nContent-Length: 1000000\r\n", i), s.audioOrNoise(i, rng))
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		conn.(*net.TCPConn).CloseWrite()
		return ending(conn, soakHeld)
	}},
	{"slowloris headers on /base64", 60, []string{"dropped"}, func(s *soak, i int, _ *mrand.Rand) string {
		return s.slowHeaders(fmt.Sprintf("POST /base64?key=secret&id=slowh%d HTTP/1.1\r\n", i))
	}},
	{"slowloris body on /base64", 60, []string{"reply 408"}, func(s *soak, i int, _ *mrand.Rand) string {
		conn, err := s.raw("POST /base64?key=secret&id=slowb"+strconv.Itoa(i)+" HTTP/1.1\r\nContent-Length: 1000\r\n", nil)
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		stop := make(chan struct{})
		defer close(stop)
		go trickle(conn, []byte(strings.Repeat("QUJD", 250)), 200*time.Millisecond, stop)
		return ending(conn, soakHeld)
	}},
	{"slowloris headers on a WebSocket upgrade", 60, []string{"dropped"}, func(s *soak, i int, _ *mrand.Rand) string {
		return s.slowHeaders(fmt.Sprintf("GET /ws?key=secret&id=slowup%d HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", i))
	}},
	{"slowloris frame on a WebSocket", 30, []string{"dropped"}, func(s *soak, i int, _ *mrand.Rand) string {
		c, err := s.ws(websocket.DefaultDialer, "slowframe"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		defer c.Close()
		conn := c.NetConn()
		conn.Write([]byte{0x82, 0x80 | 126, 0x03, 0xE8, 0, 0, 0, 0}) // a masked binary frame of 1000 bytes, key 0
		stop := make(chan struct{})
		defer close(stop)
		go trickle(conn, s.mp3, 300*time.Millisecond, stop)
		return drained(conn, soakHeld)
	}},
	{"slowloris upload on /live", 40, []string{"reply 408", "reply 415", "reply 502"}, func(s *soak, i int, rng *mrand.Rand) string {
		conn, err := s.raw(fmt.Sprintf("POST /live/slowlive%d?key=secret HTTP/1.1\r\nContent-Length: 1000000\r\n", i), s.audioOrNoise(i, rng))
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		more := s.audioOrNoise(i, rng)[:10]            // the start of the next frame, or more noise
		trickle(conn, more, 300*time.Millisecond, nil) // then nothing more
		return ending(conn, soakHeld)
	}},
	{"oversized WebSocket message", 50, []string{"close 1009"}, func(s *soak, i int, rng *mrand.Rand) string {
		c, err := s.ws(websocket.DefaultDialer, "bigmsg"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		defer c.Close()
		c.WriteMessage(websocket.BinaryMessage, randomBytes(rng, soakMaxMessage+1))
		return wsEnding(c, soakHeld)
	}},
	{"oversized /base64 body", 50, []string{"reply 413"}, func(s *soak, i int, _ *mrand.Rand) string {
		conn, err := s.raw(fmt.Sprintf("POST /base64?key=secret&id=bigbody%d HTTP/1.1\r\nContent-Length: %d\r\n", i, soakMaxBody+4096), nil)
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		go conn.Write([]byte(strings.Repeat("QUJD", (soakMaxBody+4096)/4)))
		return ending(conn, soakHeld)
	}},
	{"oversized header", 50, []string{"reply 431"}, func(s *soak, i int, _ *mrand.Rand) string {
		conn, err := s.dial()
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		go fmt.Fprintf(conn, "POST /base64?key=secret&id=bighead%d HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", i, strings.Repeat("a", 64<<10))
		return ending(conn, soakHeld)
	}},
	{"random bytes to the HTTP port", 100, []string{"reply 400"}, func(s *soak, i int, rng *mrand.Rand) string {
		conn, err := s.dial()
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		conn.Write(randomBytes(rng, 1+rng.IntN(4096)))
		return ending(conn, soakHeld)
	}},
	{"random WebSocket messages", 50, []string{"close 1003", "close 1011"}, func(s *soak, i int, rng *mrand.Rand) string {
		c, err := s.ws(websocket.DefaultDialer, "noise"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		defer c.Close()
		go func() {
			for k := 0; k < 3; k++ {
				if c.WriteMessage(websocket.BinaryMessage, randomBytes(rng, 4096)) != nil {
					return
				}
			}
		}()
		return wsEnding(c, soakHeld)
	}},
	{"random bytes after a WebSocket upgrade", 50, []string{"dropped"}, func(s *soak, i int, rng *mrand.Rand) string {
		c, err := s.ws(websocket.DefaultDialer, "garbage"+strconv.Itoa(i))
		if err != nil {
			return howEnded(err)
		}
		defer c.Close()
		c.NetConn().Write(randomBytes(rng, 1+rng.IntN(2048)))
		return drained(c.NetConn(), soakHeld)
	}},
	{"random /base64 body", 50, []string{"reply 400", "reply 415"}, func(s *soak, i int, rng *mrand.Rand) string {
		body := randomBytes(rng, 1+rng.IntN(4096))
		conn, err := s.raw(fmt.Sprintf("POST /base64?key=secret&id=randbody%d HTTP/1.1\r\nContent-Length: %d\r\n", i, len(body)), body)
		if err != nil {
			return howEnded(err)
		}
		defer conn.Close()
		return ending(conn, soakHeld)
	}},
}

// slowHeaders sends head, then one more header line every 300 ms, never
// finishing: the server must hang up after -header-timeout.
func (s *soak) slowHeaders(head string) string {
	conn, err := s.dial()
	if err != nil {
		return howEnded(err)
	}
	defer conn.Close()
	conn.Write([]byte(head))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			if _, err := fmt.Fprintf(conn, "X-%d: y\r\n", k); err != nil {
				return
			}
		}
	}()
	return ending(conn, soakHeld)
}

// soakRamp spaces the connections' starts: 1,000 over 25 s.
const soakRamp = 25 * time.Millisecond

const deafKind = "silent websocket that never reads"

// TestHostileSoak throws 1,000 abusive connections of 18 kinds at a live
// server (Debian's ffmpeg, publishing to an RTMP address where nothing
// listens), its timeouts shortened through the configuration. Each
// connection must end the documented way, none may be held past its
// timeout; afterwards nothing has panicked, no undocumented 5xx was
// counted, and the server is back to the sockets, goroutines, file
// descriptors and child processes it had before.
func TestHostileSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the hostile soak takes about a minute")
	}
	rtmptest.Require(t, "ffmpeg")
	var stdLog lockedBuffer // net/http reports recovered panics there
	stdlog.SetOutput(&stdLog)
	defer stdlog.SetOutput(os.Stderr)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "rtmp://" + ln.Addr().String() + "/live"
	ln.Close()
	p := startPublisher(t, dead, func(c *Config) {
		c.HeaderTimeout, c.BodyTimeout, c.WSReadTimeout = soakHeaderTimeout, soakBodyTimeout, soakWSTimeout
		c.IdleTimeout = 2 * time.Second
		c.MaxBody, c.MaxMessage = soakMaxBody, soakMaxMessage
	})
	s := &soak{p: p, addr: strings.TrimPrefix(p.URL, "http://"), mp3: rtmptest.MP3(t, 0.3, 16000, 1, "32k", true), release: make(chan struct{})}
	port, _ := strconv.Atoi(s.addr[strings.LastIndexByte(s.addr, ':')+1:])
	serverConns := func() (sockets, goroutines int) {
		return len(leakcheck.ServerSockets(port)), leakcheck.Goroutines("net/http.(*conn).serve", "transport.(*wsConn)")
	}
	// The baseline: the server up and idle.
	if resp, err := p.client.Get(p.URL + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("not ready: %v", err)
	} else {
		resp.Body.Close()
	}
	p.client.CloseIdleConnections()
	leakcheck.Until(5*time.Second, func() string {
		if n, g := serverConns(); n+g > 0 {
			return "busy"
		}
		return ""
	})
	baseFDs, baseG, baseKids := leakcheck.FDs(), runtime.NumGoroutine(), children(t)

	type entry struct {
		c *soakClient
		i int
	}
	var all []entry
	for k := range soakClients {
		for i := 0; i < soakClients[k].n; i++ {
			all = append(all, entry{&soakClients[k], i})
		}
	}
	mrand.New(mrand.NewPCG(1, 2)).Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
	var (
		mu                 sync.Mutex
		outcomes           = map[string]map[string]int{}
		others, deaf       sync.WaitGroup
		peakSockets, peakG int
		sampling           = make(chan struct{})
		samplerDone        = make(chan struct{})
	)
	go func() {
		defer close(samplerDone)
		for {
			select {
			case <-sampling:
				return
			case <-time.After(250 * time.Millisecond):
			}
			n, _ := serverConns()
			peakSockets, peakG = max(peakSockets, n), max(peakG, runtime.NumGoroutine())
		}
	}()
	start := time.Now()
	for j, e := range all {
		time.Sleep(time.Until(start.Add(time.Duration(j) * soakRamp)))
		wg := &others
		if e.c.kind == deafKind {
			wg = &deaf
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			how := e.c.run(s, e.i, mrand.New(mrand.NewPCG(uint64(j), 3)))
			mu.Lock()
			if outcomes[e.c.kind] == nil {
				outcomes[e.c.kind] = map[string]int{}
			}
			outcomes[e.c.kind][how]++
			mu.Unlock()
		}()
	}
	others.Wait()
	clientsDone := time.Since(start)
	// The clients that never read still hold their ends: the server must
	// have let go of its own.
	letGo, held := leakcheck.Until(soakHeld, func() string {
		if n, g := serverConns(); n > 0 || g > 0 {
			return fmt.Sprintf("the server still holds %d connections (%d goroutines serving them)", n, g)
		}
		return ""
	})
	close(sampling)
	<-samplerDone
	if held != "" {
		t.Errorf("%s %s after the other clients were done", held, letGo.Round(time.Millisecond))
	}
	close(s.release)
	deaf.Wait()
	// Sessions that got audio from a vanished client keep trying to
	// publish it for 10 s after their idle timeout: allow for that.
	back, notBack := leakcheck.Until(30*time.Second, func() string {
		if f, g, k := leakcheck.FDs(), runtime.NumGoroutine(), children(t); f > baseFDs+2 || g > baseG+5 || len(k) > len(baseKids) {
			return fmt.Sprintf("%d fds (baseline %d), %d goroutines (baseline %d), child processes %v (baseline %v)", f, baseFDs, g, baseG, k, baseKids)
		}
		return ""
	})
	if notBack != "" {
		t.Errorf("not back to the baseline after %s: %s", back.Round(time.Millisecond), notBack)
	}

	for _, c := range soakClients {
		var bad []string
		for how, n := range outcomes[c.kind] {
			if !slices.Contains(c.allowed, how) && !slices.Contains(timedOut, how) {
				bad = append(bad, fmt.Sprintf("%s ×%d", how, n))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			t.Errorf("%s: %s (allowed: %s)", c.kind, strings.Join(bad, ", "), strings.Join(c.allowed, ", "))
		}
		t.Logf("%-42s %v", c.kind, outcomes[c.kind])
	}
	fams := p.scrape(t)
	p.client.CloseIdleConnections()
	counts := responses(fams)
	if bad := undocumented5xx(counts); len(bad) > 0 {
		t.Errorf("undocumented 5xx counted: %v", bad)
	}
	if log := stdLog.String(); strings.Contains(log, "panic") {
		t.Errorf("the server panicked:\n%s", log)
	}
	t.Logf("1000 connections over %s; the server let go of them %s after the last client was done; "+
		"peak %d server connections, %d goroutines; back to the baseline (%d fds, %d goroutines, %d children) %s later; "+
		"%.0f ffmpeg started; replies counted: %v",
		clientsDone.Round(100*time.Millisecond), letGo.Round(10*time.Millisecond), peakSockets, peakG,
		baseFDs, baseG, len(baseKids), back.Round(10*time.Millisecond), metricSum(fams, "publisher_ffmpeg_starts_total"), counts)
}
