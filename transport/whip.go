package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"ffmpeg-publisher/session"
	"ffmpeg-publisher/whip"

	"github.com/sirupsen/logrus"
)

// WHIP (RFC 9725): POST /whip/{id} with an SDP offer publishes the ID's
// stream over WebRTC; the answer's Location, /whip/{id}/{resource}, is
// the session, which DELETE ends. The peer holds the ID like a WebSocket
// does: a peer that goes away leaves the stream for the idle timeout, and a
// new WHIP session for the ID continues it.

// Refusals of a WHIP request.
var (
	errWHIPOff     = errors.New("WHIP is off: start the server with -webrtc-udp")
	errSDPType     = errors.New("a WHIP offer is sent as Content-Type: application/sdp")
	errNoWHIPEntry = errors.New("no such WHIP session")
)

// flushGrace bounds the wait for a closing peer's last packets to be
// taken: a stream whose buffer is full (its ffmpeg restarting) takes them
// within a restart or not at all.
const flushGrace = 2 * time.Second

// maxOffer bounds an SDP offer: a browser's is a few KiB.
const maxOffer = 64 << 10

// whipStatus maps WHIP's own errors to replies (see status).
func whipStatus(err error) (int, string, bool) {
	switch {
	case errors.Is(err, whip.ErrBadOffer):
		return http.StatusBadRequest, err.Error(), true
	case errors.Is(err, whip.ErrNoOpus):
		return http.StatusNotAcceptable, err.Error(), true
	case errors.Is(err, errSDPType):
		return http.StatusUnsupportedMediaType, err.Error(), true
	case errors.Is(err, errWHIPOff), errors.Is(err, errNoWHIPEntry):
		return http.StatusNotFound, err.Error(), true
	}
	return 0, "", false
}

// whipCORS lets pages of allowed origins call the endpoint.
func (s *Server) whipCORS(w http.ResponseWriter, r *http.Request, methods string) {
	h := w.Header()
	if o := r.Header.Get("Origin"); o != "" && s.origins.allow(r) {
		h.Set("Access-Control-Allow-Origin", o)
		h.Set("Vary", "Origin")
		h.Set("Access-Control-Allow-Methods", methods)
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
		h.Set("Access-Control-Expose-Headers", "Location, Accept-Patch")
	}
}

// handleWHIP answers an offer: POST /whip/{id}, Authorization: Bearer.
func (s *Server) handleWHIP(w http.ResponseWriter, r *http.Request) error {
	s.whipCORS(w, r, "POST, OPTIONS")
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Accept-Post", "application/sdp")
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "POST, OPTIONS")
		return errMethod
	}
	if s.cfg.WHIP == nil {
		return errWHIPOff
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/sdp" {
		return errSDPType
	}
	id := r.PathValue("id")
	src, err := s.admit(r, id, "whip", streamFormat{name: "opus"}, false)
	if err != nil {
		return err
	}
	if err := s.reg.CheckNew(id); err != nil {
		return err // refused now with 503, not after the answer with the connection
	}
	offer, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOffer))
	if err != nil {
		return &bodyError{err}
	}
	if err := whip.CheckOffer(string(offer)); err != nil {
		return err // before the stream's place is taken: nothing starts
	}
	c := &whipConn{s: s, id: id, deleted: make(chan struct{})}
	src.Stats = c.stats
	if c.pub, err = s.reg.Attach(id, src); err != nil {
		return err
	}
	if !s.trackConn() {
		c.pub.Detach(false)
		return session.ErrShuttingDown
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	peer, answer, err := s.cfg.WHIP.Accept(string(offer), c.deliver)
	if err != nil {
		c.cancel()
		c.pub.Detach(false)
		s.conns.Done()
		return err
	}
	// The stream's place is taken (or a quiet holder's taken over) once the
	// offer is known good and before the answer: a refusal (capacity,
	// admission's limit on starts, another format, a holder still
	// streaming) is this reply's, not a dropped peer's after a 201.
	if err := c.pub.Reserve(r.Context()); err != nil {
		peer.Close()
		c.cancel()
		c.pub.Detach(false)
		s.conns.Done()
		return err
	}
	c.peer.Store(peer)
	c.resource = newResourceID()
	c.log = s.log.WithFields(logrus.Fields{"id": id, "remote": r.RemoteAddr, "transport": "whip"})
	s.whips.add(c)
	go c.run()
	c.log.Info("WHIP publisher connected")
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whip/"+id+"/"+c.resource)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
	return nil
}

// handleWHIPSession serves a WHIP session's URL: DELETE ends the stream;
// PATCH (trickle ICE) is not supported, the answer carries every candidate.
func (s *Server) handleWHIPSession(w http.ResponseWriter, r *http.Request) error {
	s.whipCORS(w, r, "DELETE, OPTIONS")
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodDelete:
	default:
		w.Header().Set("Allow", "DELETE, OPTIONS")
		return errMethod
	}
	// The resource's random name is the credential: only the publisher
	// was told it.
	c := s.whips.get(r.PathValue("id"), r.PathValue("resource"))
	if c == nil {
		return errNoWHIPEntry
	}
	c.delete()
	w.WriteHeader(http.StatusOK)
	return nil
}

func newResourceID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// whipTable is the live WHIP sessions, by ID and resource.
type whipTable struct {
	mu    sync.Mutex // guards conns
	conns map[string]*whipConn
}

func (t *whipTable) add(c *whipConn) {
	t.mu.Lock()
	t.conns[c.id+"/"+c.resource] = c
	t.mu.Unlock()
}

func (t *whipTable) get(id, resource string) *whipConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[id+"/"+resource]
}

func (t *whipTable) remove(c *whipConn) {
	t.mu.Lock()
	delete(t.conns, c.id+"/"+c.resource)
	t.mu.Unlock()
}

// whipConn is one WHIP session: a peer writing to the ID's stream.
type whipConn struct {
	s        *Server
	id       string
	resource string
	pub      *session.Publisher
	peer     atomic.Pointer[whip.Peer]
	log      *logrus.Entry

	ctx    context.Context // ends writes when the connection ends
	cancel context.CancelFunc
	buf    []byte // owned by the peer's reader

	deleteOnce sync.Once
	deleted    chan struct{} // closed by DELETE
	heard      atomic.Int64  // when the peer last delivered audio, in Unix ns
}

// deliver writes a peer's packets to the stream, waiting while its
// buffer is full (the peer's reader waits; pion drops what piles up).
func (c *whipConn) deliver(pkts [][]byte) error {
	c.heard.Store(time.Now().UnixNano())
	c.buf = c.buf[:0]
	for _, p := range pkts {
		c.buf = session.AppendOpus(c.buf, p)
	}
	_, err := writeSlowly(c.ctx, c.pub, c.buf, nil)
	return err
}

func (c *whipConn) delete() { c.deleteOnce.Do(func() { close(c.deleted) }) }

// run waits for the session's end, then releases the ID: for good after
// DELETE or a refused write, for the idle timeout otherwise.
func (c *whipConn) run() {
	defer c.s.conns.Done()
	peer := c.peer.Load()
	end, why := false, "the peer closed"
	// A peer whose ICE stays up but that sends no audio (only keepalives,
	// video, empty packets) lets go of its ID as a silent WebSocket does.
	quiet := c.s.cfg.WSReadTimeout
	c.heard.Store(time.Now().UnixNano())
	check := time.NewTimer(quiet)
	defer check.Stop()
wait:
	for {
		select {
		case <-peer.Ended():
			if err := peer.Err(); err != nil {
				end, why = true, err.Error()
			}
			break wait
		case <-c.deleted:
			end, why = true, "DELETE"
			break wait
		case <-c.pub.Kicked():
			why = c.pub.KickReason().Error()
			break wait
		case <-c.s.shutdown:
			why = "the server is shutting down"
			break wait
		case now := <-check.C:
			if left := quiet - now.Sub(time.Unix(0, c.heard.Load())); left > 0 {
				check.Reset(left)
				continue
			}
			why = "no audio for " + quiet.String()
			break wait
		}
	}
	// The reader hands on what it held; a write waiting for a full
	// buffer gives up after flushGrace.
	stop := time.AfterFunc(flushGrace, c.cancel)
	peer.Close()
	stop.Stop()
	c.cancel()
	c.pub.Detach(end)
	c.s.whips.remove(c)
	c.log.WithField("stats", peer.Stats()).Info("WHIP publisher gone: " + why)
}

// stats is the stream list's view of the peer.
func (c *whipConn) stats() *session.WebRTCStats {
	peer := c.peer.Load()
	if peer == nil {
		return nil
	}
	st := peer.Stats()
	return &session.WebRTCStats{
		PacketsReceived: st.Received, PacketsLost: st.Lost, PacketsLate: st.Late,
		JitterMS: float64(st.Jitter.Microseconds()) / 1000, FilledSeconds: st.Filled.Seconds(),
	}
}
