package transport

import (
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/internal/leakcheck"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// serverWSGoroutines counts the goroutines serving WebSockets.
func serverWSGoroutines() int {
	return leakcheck.Goroutines("transport.(*wsConn)", "transport.(*Server).handleWS")
}

// wsURL is the WebSocket address of ts for id.
func wsURL(ts *testServer, id string) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?key=k&id=" + id
}

// tinyBufferDialer dials with a receive buffer of a few KiB, for a client
// that stops reading: the server's writes soon have nowhere to go.
var tinyBufferDialer = websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1024) })
	}}
	return d.Dial(network, addr)
}}

// TestWebSocketsEndWithTheirClients: 200 clients that connect and go
// silent (half of them still answering every ping, half never reading), 200
// that close with 1000 and 200 that vanish without a close. Within a few
// seconds of the read timeout the server holds none of their sockets and
// none of their goroutines, while the silent clients still hold their own
// ends; once they let go, the process is back to its baseline.
func TestWebSocketsEndWithTheirClients(t *testing.T) {
	const readTimeout = 3 * time.Second
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, _ *session.Config) { c.WSReadTimeout = readTimeout })
	port := ts.Listener.Addr().(*net.TCPAddr).Port
	baseFDs, baseG := leakcheck.FDs(), runtime.NumGoroutine()

	var (
		wg, connected       sync.WaitGroup
		pongs, silentClosed atomic.Int64
		normalAnswered      atomic.Int64
		failures            sync.Map                  // client → what went wrong
		release             = make(chan struct{})     // lets the clients that never read close their ends
		dialing             = make(chan struct{}, 32) // handshakes at once: on a loaded machine they must not outlast the read timeout
	)
	// client runs one client: connect dials id with d and, when wantReady,
	// reads the ready message; run goes on from there.
	client := func(id string, d *websocket.Dialer, wantReady bool, run func(c *websocket.Conn)) {
		wg.Add(1)
		connected.Add(1)
		go func() {
			defer wg.Done()
			dialing <- struct{}{}
			c, _, err := d.Dial(wsURL(ts, id), nil)
			if err == nil && wantReady {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var m map[string]any
				if err = c.ReadJSON(&m); err == nil && m["type"] != "ready" {
					err = errors.New("first message is not ready")
				}
			}
			<-dialing
			connected.Done()
			if err != nil {
				failures.Store(id, "connecting: "+err.Error())
				if c != nil {
					c.Close()
				}
				return
			}
			defer c.Close()
			run(c)
		}()
	}
	for i := 0; i < 100; i++ {
		id := "silent-pong" + strconv.Itoa(i)
		client(id, websocket.DefaultDialer, true, func(c *websocket.Conn) {
			c.SetPingHandler(func(data string) error {
				pongs.Add(1)
				c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
				return nil // the server may have closed meanwhile: its close frame follows
			})
			c.SetReadDeadline(time.Now().Add(time.Minute))
			for {
				_, _, err := c.ReadMessage()
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == websocket.CloseGoingAway && strings.Contains(ce.Text, "no audio") {
					silentClosed.Add(1)
					return
				} else if err != nil {
					failures.Store(id, "ended without the 1001 close: "+err.Error())
					return
				}
			}
		})
		client("silent-deaf"+strconv.Itoa(i), &tinyBufferDialer, false, func(*websocket.Conn) { <-release })
	}
	for i := 0; i < 200; i++ {
		id := "normal" + strconv.Itoa(i)
		// These close at once, not after the ready message: a client that
		// waited longer than the read timeout would rightly be dropped.
		client(id, websocket.DefaultDialer, false, func(c *websocket.Conn) {
			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			for {
				if _, _, err := c.ReadMessage(); websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					normalAnswered.Add(1)
					return
				} else if err != nil {
					failures.Store(id, "close not answered: "+err.Error())
					return
				}
			}
		})
		client("vanish"+strconv.Itoa(i), websocket.DefaultDialer, true, func(c *websocket.Conn) {
			c.NetConn().Close() // no close frame
		})
	}

	connected.Wait()
	took, complaint := leakcheck.Until(readTimeout+10*time.Second, func() string {
		if n, g := len(leakcheck.ServerSockets(port)), serverWSGoroutines(); n > 0 || g > 0 {
			return strconv.Itoa(n) + " sockets and " + strconv.Itoa(g) + " goroutines still held by the server"
		}
		return ""
	})
	if complaint != "" {
		buf := make([]byte, 1<<20)
		t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		t.Errorf("%s %s after the last client connected (read timeout %s)", complaint, took.Round(time.Millisecond), readTimeout)
	} else {
		t.Logf("the server let go of every connection %s after the last one connected (read timeout %s)", took.Round(time.Millisecond), readTimeout)
	}
	close(release)
	wg.Wait()
	failures.Range(func(k, v any) bool { t.Errorf("%s: %s", k, v); return true })
	if pongs.Load() == 0 {
		t.Error("no silent client answered a ping: the test shows nothing about pongs")
	}
	if n := silentClosed.Load(); n != 100 {
		t.Errorf("%d of 100 silent clients that read were told 1001 \"no audio\"", n)
	}
	if n := normalAnswered.Load(); n != 200 {
		t.Errorf("%d of 200 normal closes answered", n)
	}
	if _, complaint := leakcheck.Until(5*time.Second, func() string {
		if f, g := leakcheck.FDs(), runtime.NumGoroutine(); f > baseFDs || g > baseG+2 {
			return strconv.Itoa(f) + " fds (baseline " + strconv.Itoa(baseFDs) + "), " +
				strconv.Itoa(g) + " goroutines (baseline " + strconv.Itoa(baseG) + ")"
		}
		return ""
	}); complaint != "" {
		t.Errorf("after every client let go: %s", complaint)
	}
}

// TestWebSocketReadTimeoutCountsAudioOnly: audio keeps a connection open
// past the read timeout; text and empty messages do not.
func TestWebSocketReadTimeoutCountsAudioOnly(t *testing.T) {
	const readTimeout = 2 * time.Second
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, _ *session.Config) { c.WSReadTimeout = readTimeout })

	talker := dialWS(t, ts, "key=k&id=talker", nil)
	readStatus(t, talker)
	go drainStatus(talker)
	for i := 0; i < 15; i++ { // 3 s of audio, one message every 200 ms
		if err := talker.WriteMessage(websocket.BinaryMessage, mp3(6, byte(i))); err != nil {
			t.Fatalf("the server closed a connection that sends audio: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	chatter := dialWS(t, ts, "key=k&id=chatter", nil)
	readStatus(t, chatter)
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				chatter.WriteMessage(websocket.TextMessage, []byte("still here"))
				chatter.WriteMessage(websocket.BinaryMessage, nil)
			}
		}
	}()
	_, ce := readUntilClose(t, chatter)
	if ce.Code != websocket.CloseGoingAway || !strings.Contains(ce.Text, "no audio for 2s") {
		t.Errorf("a client sending only text and empty messages: close %d %q, want 1001 \"no audio for 2s\"", ce.Code, ce.Text)
	}
	t.Logf("closed %s after its last audio (none)", time.Since(start).Round(time.Millisecond))
}

// drainStatus reads a WebSocket until it ends.
func drainStatus(c *websocket.Conn) {
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}

// TestWebSocketSocketGivesUpOnUnacknowledgedData: the server's socket of
// a WebSocket carries TCP_USER_TIMEOUT equal to the read timeout, so the
// kernel lets go of a peer that vanished (and of the socket after the
// server closed it) instead of retransmitting for a quarter of an hour.
func TestWebSocketSocketGivesUpOnUnacknowledgedData(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, _ *session.Config) { c.WSReadTimeout = 7 * time.Second })
	port := ts.Listener.Addr().(*net.TCPAddr).Port
	c := dialWS(t, ts, "key=k&id=tcp", nil)
	readStatus(t, c)
	fds := leakcheck.ServerSockets(port)
	if len(fds) != 1 {
		t.Fatalf("%d server sockets, want 1", len(fds))
	}
	ms, err := unix.GetsockoptInt(fds[0], unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	if err != nil || ms != 7000 {
		t.Errorf("TCP_USER_TIMEOUT = %d ms (%v), want 7000", ms, err)
	}
}
