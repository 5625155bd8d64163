package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// Helpers of the hostile tests: raw connections that misbehave, and what
// the server counted.

// scrape reads /metrics.
func (p *publisher) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := p.client.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// responses is publisher_http_responses_total as "route code" → count.
func responses(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams["publisher_http_responses_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out[labels["route"]+" "+labels["code"]] += m.GetCounter().GetValue()
	}
	return out
}

// metricSum adds up a counter over all its labels.
func metricSum(fams map[string]*dto.MetricFamily, name string) float64 {
	var sum float64
	for _, m := range fams[name].GetMetric() {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

// undocumented5xx lists the counted replies with a 5xx status that the
// README's Errors table does not promise (502 and 503 are ffmpeg's and
// capacity's).
func undocumented5xx(counts map[string]float64) []string {
	var bad []string
	for k, n := range counts {
		_, code, _ := strings.Cut(k, " ")
		if c, _ := strconv.Atoi(code); c >= 500 && c != 502 && c != 503 {
			bad = append(bad, fmt.Sprintf("%s: %.0f", k, n))
		}
	}
	sort.Strings(bad)
	return bad
}

// ending reads conn until the server answers or hangs up, and says how:
// "reply NNN" for an HTTP reply, "dropped" when the server hung up without
// one, or "held" when it still holds the connection after limit.
func ending(conn net.Conn, limit time.Duration) string {
	conn.SetReadDeadline(time.Now().Add(limit))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return howEnded(err)
	}
	resp.Body.Close()
	return "reply " + strconv.Itoa(resp.StatusCode)
}

// drained reads conn (past a WebSocket handshake) until the server hangs up.
func drained(conn net.Conn, limit time.Duration) string {
	conn.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, conn)
	if err == nil {
		return "dropped"
	}
	return howEnded(err)
}

// wsEnding reads a WebSocket's messages, answering pings, until it ends:
// "close NNNN" for the server's close, "dropped" for a connection that
// ended without one, "held" for one still open after limit.
func wsEnding(c *websocket.Conn, limit time.Duration) string {
	c.SetPingHandler(func(data string) error {
		c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil // the server may have closed meanwhile: its close frame follows
	})
	c.SetReadDeadline(time.Now().Add(limit))
	for {
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
			return "close " + strconv.Itoa(ce.Code)
		}
		if err != nil {
			return howEnded(err)
		}
	}
}

func howEnded(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "held"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.As(err, new(*websocket.CloseError)):
		return "dropped"
	}
	return "error: " + err.Error()
}

// trickle writes data one byte every period until it is all sent, a write
// fails or stop is closed.
func trickle(conn net.Conn, data []byte, period time.Duration, stop <-chan struct{}) {
	for _, b := range data {
		select {
		case <-stop:
			return
		case <-time.After(period):
		}
		if _, err := conn.Write([]byte{b}); err != nil {
			return
		}
	}
}

// tinyReceiveBuffer dials with a receive buffer of a few KiB: a client that
// stops reading soon takes nothing more.
var tinyReceiveBuffer = websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1024) })
	}}
	return d.Dial(network, addr)
}}

// lockedBuffer collects the standard logger's output (net/http reports
// recovered handler panics there).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
