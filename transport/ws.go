package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/session"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"
)

// WebSocket timing. The read timeout (Config.WSReadTimeout) is the one
// that decides when a quiet client is gone; the pings it paces only keep
// proxies and NATs from dropping a connection whose audio pauses.
const (
	// wsWriteWait: a status or ping that cannot be sent this long means
	// the peer is gone.
	wsWriteWait = 10 * time.Second
	// wsStatusPeriod: how often progress is reported (when it changed).
	wsStatusPeriod = time.Second
	// wsCloseWait bounds each side of the close handshake: sending our
	// close, and waiting for the peer's answer.
	wsCloseWait = time.Second
)

// closeCode maps an error to a WebSocket close code; the reason sent is
// the same plain message an HTTP client gets.
func closeCode(err error) int {
	var ue *session.UpstreamError
	if code, _ := status(err); code == http.StatusForbidden {
		return websocket.ClosePolicyViolation // 1008: any auth failure
	}
	switch {
	case errors.Is(err, errNoID), errors.Is(err, session.ErrInvalidID), errors.Is(err, session.ErrBusy), errors.As(err, new(*session.ReplacedError)), errors.Is(err, session.ErrFormat):
		return websocket.ClosePolicyViolation // 1008
	case errors.As(err, new(*rateLimited)), errors.As(err, new(*hooks.Refusal)), errors.Is(err, hooks.ErrUnavailable):
		return websocket.CloseTryAgainLater // 1013: the hook said 429 or 503, or did not answer
	case errors.Is(err, session.ErrNotMP3), errors.Is(err, session.ErrNotWebM), errors.Is(err, session.ErrNotAAC), errors.As(err, new(*badRequest)),
		errors.As(err, new(*session.PCMError)):
		return websocket.CloseUnsupportedData // 1003
	case errors.Is(err, session.ErrAtCapacity), errors.As(err, new(*admission.Saturated)):
		return websocket.CloseTryAgainLater // 1013
	case errors.Is(err, session.ErrShuttingDown):
		return websocket.CloseGoingAway // 1001
	case errors.As(err, &ue):
		return websocket.CloseInternalServerErr // 1011
	}
	return websocket.CloseInternalServerErr
}

// wsConn is one WebSocket publisher. The handler goroutine reads; writeLoop
// is the only writer (gorilla allows one of each).
type wsConn struct {
	s    *Server
	conn *websocket.Conn
	id   string
	log  *logrus.Entry
	pub  *session.Publisher // nil if the connection was refused; set before writeLoop starts

	out        chan map[string]any // status messages for the writer
	closeReq   chan *websocket.CloseError
	peerClose  int           // the code of the client's close frame, answered after Detach
	stop       chan struct{} // closed (once, by endWriter) when the writer must end
	stopOnce   sync.Once
	writerDone chan struct{}
}

// handleWS: GET /ws?id=ID&key=K, then binary messages of MP3. Refusals
// after the upgrade are a status message and a close code, because a
// browser cannot read the HTTP status of a failed handshake.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		return errMethod
	}
	if !websocket.IsWebSocketUpgrade(r) {
		return &badRequest{"this endpoint takes a WebSocket connection"}
	}
	up := websocket.Upgrader{
		ReadBufferSize:   16 << 10,
		WriteBufferSize:  4 << 10,
		HandshakeTimeout: wsWriteWait,
		CheckOrigin:      s.origins.allow,
		Error: func(w http.ResponseWriter, r *http.Request, code int, reason error) {
			s.reply(w, r, code, reason.Error(), nil)
		},
	}
	if !s.trackConn() {
		return session.ErrShuttingDown
	}
	defer s.conns.Done()
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil // the upgrader replied
	}
	defer conn.Close()
	keepUnacknowledged(conn.NetConn(), s.cfg.WSReadTimeout)

	id := r.URL.Query().Get("id")
	c := &wsConn{
		s: s, conn: conn, id: id,
		log:        s.log.WithFields(logrus.Fields{"remote": r.RemoteAddr, "transport": "websocket"}),
		out:        make(chan map[string]any, 8),
		closeReq:   make(chan *websocket.CloseError, 1),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	// A client's close is answered once its ID is released (below), not
	// when it is read: a client that reconnects the moment it sees the
	// answer must find the ID free, not busy with its own old connection.
	conn.SetCloseHandler(func(code int, _ string) error { c.peerClose = code; return nil })
	format, err := queryFormat(r.URL.Query())
	var src session.Source
	if err == nil {
		src, err = s.admit(r, id, "websocket", format, false)
	}
	if err == nil {
		c.log = c.log.WithField("id", id)
		c.pub, err = s.reg.Attach(id, src)
	}
	if err == nil {
		if err = c.pub.Prestart(r.Context()); err != nil { // ffmpeg starts while the first frame is captured
			c.pub.Detach(false)
			c.pub = nil
		}
	}
	go c.writeLoop()
	defer c.endWriter(nil) // when the reader stops, so does the writer
	if err != nil {
		c.refuse(err)
		return nil
	}
	c.log.Info("websocket publisher connected")
	c.send(map[string]any{"type": "ready", "id": id, "max_message": s.cfg.MaxMessage})
	end := c.readLoop()
	c.pub.Detach(end)
	if c.peerClose != 0 {
		msg := []byte{}
		if c.peerClose != websocket.CloseNoStatusReceived {
			msg = websocket.FormatCloseMessage(c.peerClose, "")
		}
		c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wsCloseWait))
	}
	c.log.WithField("ended", end).Info("websocket publisher disconnected")
	return nil
}

// badRequest is a 400 with its own message.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

// readLoop feeds binary messages to the session until the connection
// ends. It reports whether the client ended the stream (close code 1000).
// Writing blocks while ffmpeg is slow, so reading stops and TCP pushes
// back on the client: nothing queues here.
//
// A client must deliver audio (a binary message that is not empty) within
// the read timeout of the server's last wait for it; pongs, text and empty
// messages do not count, so a client that answers pings but sends nothing
// cannot hold its live ID and its connection forever.
func (c *wsConn) readLoop() bool {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	max := c.s.cfg.MaxMessage
	buf := c.s.bufs.Get().(*bytes.Buffer)
	defer c.s.putBuf(buf)
	c.awaitAudio()
	for {
		kind, rd, err := c.conn.NextReader()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				return true
			}
			if !c.dropSilent(err) && websocket.IsUnexpectedCloseError(err, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
				c.log.WithError(err).Info("websocket dropped")
			}
			return false
		}
		if kind != websocket.BinaryMessage {
			io.Copy(io.Discard, io.LimitReader(rd, max))
			c.send(map[string]any{"type": "error", "id": c.id,
				"errmsg": "text messages are not accepted: send the audio as binary messages"})
			continue
		}
		buf.Reset()
		if _, err := buf.ReadFrom(io.LimitReader(rd, max+1)); err != nil {
			c.dropSilent(err)
			return false
		}
		if int64(buf.Len()) > max {
			c.close(websocket.CloseMessageTooBig, fmt.Sprintf("message larger than %d bytes", max))
			return false
		}
		if buf.Len() == 0 {
			continue
		}
		if _, err := writeSlowly(ctx, c.pub, buf.Bytes(), func() {
			c.send(map[string]any{"type": "status", "id": c.id, "state": "waiting",
				"errmsg": "the RTMP publish is restarting and the buffer is full: slowing down"})
		}); err != nil {
			c.refuse(err)
			return false
		}
		c.awaitAudio()
	}
}

// awaitAudio gives the client the read timeout to deliver its next audio.
// Once the writer has ended (it said goodbye, or the peer stopped taking
// its writes) only the close handshake's wait is left: the writer shortens
// the deadline after closing writerDone, so one of the two sets it last.
func (c *wsConn) awaitAudio() {
	c.conn.SetReadDeadline(time.Now().Add(c.s.cfg.WSReadTimeout))
	select {
	case <-c.writerDone:
		c.conn.SetReadDeadline(time.Now().Add(wsCloseWait))
	default:
	}
}

// dropSilent says goodbye (1001) to a client whose read deadline passed
// while the writer still ran: it delivered no audio for the read timeout.
// It reports whether that was the case.
func (c *wsConn) dropSilent(err error) bool {
	select {
	case <-c.writerDone:
		return false // the writer ended first and cut the read short
	default:
	}
	if !isTimeout(err) {
		return false
	}
	d := c.s.cfg.WSReadTimeout
	c.log.WithField("timeout", d).Info("websocket delivered no audio: closing")
	c.endWriter(&websocket.CloseError{Code: websocket.CloseGoingAway, Text: fmt.Sprintf("no audio for %s", d)})
	return true
}

// refuse reports err to the client and closes the connection.
func (c *wsConn) refuse(err error) {
	code := closeCode(err)
	_, msg := status(err)
	var br *badRequest
	if errors.As(err, &br) {
		msg = br.msg
	}
	if code >= 1011 && !errors.As(err, new(*admission.Saturated)) { // a refusal per arrival while saturated: the metric counts them
		c.log.WithError(err).Warn("closing websocket")
	} else {
		c.log.WithError(err).Info("closing websocket")
	}
	c.close(code, msg)
}

// send queues a status message; it is dropped if the writer is gone.
func (c *wsConn) send(m map[string]any) {
	select {
	case c.out <- m:
	case <-c.writerDone:
	}
}

// close sends an error status and a close frame, then waits briefly for
// the peer's answer.
func (c *wsConn) close(code int, msg string) {
	c.endWriter(&websocket.CloseError{Code: code, Text: msg})
	c.conn.SetReadDeadline(time.Now().Add(wsCloseWait))
	for {
		if _, _, err := c.conn.NextReader(); err != nil {
			return
		}
	}
}

// endWriter makes the writer end, after sending ce to the peer if ce is
// not nil and the writer can still send, and waits for it. A writer stuck
// on a peer that does not read is cut off by closing the connection.
func (c *wsConn) endWriter(ce *websocket.CloseError) {
	if ce != nil {
		select {
		case c.closeReq <- ce:
		default:
		}
	}
	c.stopOnce.Do(func() { close(c.stop) })
	cut := time.AfterFunc(2*wsCloseWait, func() { c.conn.Close() })
	defer cut.Stop()
	<-c.writerDone
}

// closeReason trims a reason to what fits in a close frame (123 bytes).
func closeReason(msg string) string {
	if len(msg) <= 123 {
		return msg
	}
	cut := 120
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut-- // a browser drops a close frame whose reason is not UTF-8
	}
	return msg[:cut] + "..."
}

// writeLoop sends status messages and pings until it is told to stop, the
// server shuts down, the stream fails or a write fails. On its way out it
// shortens the reader's deadline, so a connection whose writer has ended
// does not wait out the read timeout.
func (c *wsConn) writeLoop() {
	defer func() {
		close(c.writerDone)
		c.conn.SetReadDeadline(time.Now().Add(wsCloseWait))
	}()
	ping := time.NewTicker(c.s.cfg.WSReadTimeout / 3)
	defer ping.Stop()
	wh := c.s.reg.Wheel() // status on the wheel's grid: connections share a wakeup
	tick := wh.NewTimer()
	defer tick.Stop()
	tick.Reset(wh.Grid(time.Now(), wsStatusPeriod))
	var last session.Info
	write := func(m map[string]any) bool {
		c.conn.SetWriteDeadline(time.Now().Add(wsWriteWait))
		return c.conn.WriteJSON(m) == nil
	}
	goodbye := func(code int, text string) {
		deadline := time.Now().Add(wsCloseWait)
		c.conn.SetWriteDeadline(deadline)
		for len(c.out) > 0 && c.conn.WriteJSON(<-c.out) == nil { // what was said before the close
		}
		if code != websocket.CloseNormalClosure {
			c.conn.WriteJSON(map[string]any{"type": "error", "id": c.id, "code": code, "errmsg": text})
		}
		c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, closeReason(text)), deadline)
	}
	for {
		select {
		case m := <-c.out:
			if !write(m) {
				return
			}
		case ce := <-c.closeReq:
			goodbye(ce.Code, ce.Text)
			return
		case <-c.stop:
			select {
			case ce := <-c.closeReq:
				goodbye(ce.Code, ce.Text)
			default:
			}
			return
		case <-c.s.shutdown:
			goodbye(websocket.CloseGoingAway, session.ErrShuttingDown.Error())
			return
		case <-c.pub.Kicked():
			_, msg := status(c.pub.KickReason())
			goodbye(websocket.ClosePolicyViolation, msg)
			return
		case <-ping.C:
			if c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wsWriteWait)) != nil {
				return
			}
		case <-tick.C:
			tick.Reset(wh.Grid(time.Now(), wsStatusPeriod))
			if c.pub == nil {
				continue
			}
			if err := c.pub.Failure(); err != nil {
				_, msg := status(err)
				c.log.WithError(err).Warn("closing websocket")
				goodbye(closeCode(err), msg)
				return
			}
			info, ok := c.s.reg.Info(c.id)
			if !ok || info == last {
				continue
			}
			last = info
			if !write(map[string]any{"type": "status", "id": c.id, "state": info.State,
				"ffmpeg": info.FFmpeg, "pid": info.PID, "bytes": info.Bytes, "seconds": info.Seconds,
				"restarts": info.Restarts, "last_error": info.LastError, "upstream": info.Upstream, "outputs": info.Outputs}) {
				return
			}
		}
	}
}
