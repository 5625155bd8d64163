// Package transport serves the HTTP and WebSocket API: it authenticates,
// decodes and limits requests, hands audio to the session registry and
// turns results into replies. It never touches a process.
package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/session"
	"ffmpeg-publisher/whip"

	"github.com/sirupsen/logrus"
)

// Config is the part of the server's configuration the handlers use.
type Config struct {
	// Key is the shared publish key; "" turns the check off (unless
	// TokenSecret is set, then a token is required).
	Key string
	// TokenSecret signs publish tokens; empty disables tokens.
	TokenSecret []byte
	// AdminKey guards the stream API and token minting; "" turns them off.
	AdminKey string
	// RateRequests limits requests per second per client IP (bursts of
	// twice that); 0 means no limit.
	RateRequests float64
	// RateSessions limits new sessions per second per client IP (bursts
	// of 5 or twice that); 0 means no limit.
	RateSessions float64
	// Ready reports whether the server can take streams (ffmpeg runnable);
	// nil means always. Draining makes the server not ready regardless.
	Ready func() error
	// Admission tells the admission state for GET /streams; nil leaves it
	// out.
	Admission func() admission.Status
	// Metrics serves /metrics; nil serves nothing.
	Metrics http.Handler
	// Observer is told about every reply; nil means nobody.
	Observer HTTPObserver
	// MaxBody caps a /base64 request body (the base64 text); 0 means 10 MiB.
	MaxBody int64
	// MaxMessage caps one WebSocket message; 0 means 1 MiB.
	MaxMessage int64
	// BodyTimeout bounds reading one /base64 body, and a pause between
	// reads of a streaming upload; 0 means 30s.
	BodyTimeout time.Duration
	// WSReadTimeout: a WebSocket that delivers no audio this long is
	// closed (pongs do not count); pings go every third of it. 0 means 60s.
	WSReadTimeout time.Duration
	// AllowedOrigins lists the origins (scheme://host[:port]) of pages
	// allowed to open a WebSocket ("*" allows any). Besides them, only
	// clients that send no Origin (apps, mini-programs) and pages at the
	// address the request was sent to, when that is an IP or localhost.
	AllowedOrigins []string
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (for limits, logs, the stream list); empty means none.
	TrustedProxies []netip.Prefix
	// RateClients bounds each per-client limit's table; 0 means
	// DefaultRateClients.
	RateClients int
	// Version is reported by GET /.
	Version string
	// Demo serves the in-page recorder under /demo/; nil serves nothing.
	Demo http.Handler
	// SuccessErrcode is the errcode of a successful /base64 reply: 0 (the
	// documented value) or, for clients of the old binary, 200.
	SuccessErrcode int
	// Status serves the status page under /status/ (its data comes from
	// /streams, with the admin key); nil serves nothing.
	Status http.Handler
	// Hooks is the application's say over new streams (on_publish) and
	// revoked ones; nil means none.
	Hooks PublishHook
	// HookOnly: with Hooks, on_publish alone decides; keys and tokens
	// are not checked.
	HookOnly bool
	// WHIP takes WebRTC publishers at /whip/{id}; nil answers 404.
	WHIP *whip.Host
}

// Defaults for the zero values of Config.
const (
	DefaultMaxBody     = 10 << 20
	DefaultMaxMessage  = 1 << 20
	DefaultBodyTimeout = 30 * time.Second
	// DefaultWSReadTimeout is three pings of 20 s, under the 60 s after
	// which proxies (nginx's proxy_read_timeout) drop a quiet tunnel.
	DefaultWSReadTimeout = 60 * time.Second
)

// HTTPObserver receives one call per request, for metrics. pattern is the
// route that matched ("" when none did).
type HTTPObserver interface {
	Replied(pattern string, code int, took time.Duration)
}

// Server holds the handlers' shared state.
type Server struct {
	cfg     Config
	reg     *session.Registry
	log     *logrus.Entry
	started time.Time

	// shutdown is closed when the server starts shutting down, so that
	// hijacked WebSocket connections (which http.Server.Shutdown does not
	// track) say goodbye.
	shutdown     chan struct{}
	shutdownOnce sync.Once
	conns        sync.WaitGroup // WebSocket connections being served
	connsMu      sync.Mutex     // orders conns.Add before Shutdown's Wait
	connsClosed  bool           // Shutdown began: no more conns.Add; guarded by connsMu

	bufs     sync.Pool // *bytes.Buffer for decoded bodies and messages
	decoders sync.Pool // *b64Decoder

	requests *clientLimits // nil: unlimited
	sessions *clientLimits // nil: unlimited
	proxies  trustedProxies
	origins  originPolicy
	key      secretKey // of cfg.Key
	adminKey secretKey // of cfg.AdminKey
	draining atomic.Bool
	whips    *whipTable
}

// New returns the API's server state; Handler gives its routes.
func New(cfg Config, reg *session.Registry, log *logrus.Entry) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.WSReadTimeout <= 0 {
		cfg.WSReadTimeout = DefaultWSReadTimeout
	}
	return &Server{
		cfg: cfg, reg: reg, log: log, started: time.Now(),
		shutdown: make(chan struct{}),
		bufs:     sync.Pool{New: func() any { return new(bytes.Buffer) }},
		decoders: sync.Pool{New: func() any { return newB64Decoder() }},
		requests: newClientLimits(cfg.RateRequests, int(2*cfg.RateRequests), cfg.RateClients),
		sessions: newClientLimits(cfg.RateSessions, max(5, int(2*cfg.RateSessions)), cfg.RateClients),
		proxies:  cfg.TrustedProxies,
		origins:  newOriginPolicy(cfg.AllowedOrigins),
		key:      newSecretKey(cfg.Key),
		adminKey: newSecretKey(cfg.AdminKey),
		whips:    &whipTable{conns: map[string]*whipConn{}},
	}
}

// Handler returns the routes, wrapped in access logging, which sees the
// client behind a trusted proxy.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", s.handleRoot)
	mux.Handle("/base64", s.api(s.limited(s.handleBase64)))
	mux.Handle("/chunk", s.api(s.limited(s.handleBase64))) // the same, under a name that does not say base64
	mux.Handle("/ws", s.api(s.limited(s.handleWS)))
	mux.Handle("/live/{id}", s.api(s.limited(s.handleLive)))
	mux.Handle("GET /streams", s.api(s.limited(s.handleStreams)))
	mux.Handle("/streams/{id}", s.api(s.limited(s.handleStream)))
	mux.Handle("/whip/{id}", s.api(s.limited(s.handleWHIP)))
	mux.Handle("/whip/{id}/{resource}", s.api(s.limited(s.handleWHIPSession)))
	mux.Handle("POST /tokens", s.api(s.limited(s.handleMintToken)))
	mux.HandleFunc("/healthz", s.handleHealthz)
	mux.HandleFunc("/readyz", s.handleReadyz)
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	if s.cfg.Demo != nil {
		mux.Handle("/demo/", http.StripPrefix("/demo", s.cfg.Demo))
	}
	if s.cfg.Status != nil {
		mux.Handle("/status/", http.StripPrefix("/status", s.cfg.Status))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.reply(w, r, http.StatusNotFound, "no such endpoint: see GET / and the README", nil)
	})
	return s.realClient(s.accessLog(mux))
}

// Drain makes /readyz answer 503 so load balancers stop sending new
// streams; everything else keeps working.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown tells WebSocket connections to close (code 1001) and waits for
// them until ctx ends. Call it when http.Server.Shutdown starts.
func (s *Server) Shutdown(ctx context.Context) {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
	s.connsMu.Lock()
	s.connsClosed = true
	s.connsMu.Unlock()
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// trackConn counts a connection that Shutdown must wait for, unless
// Shutdown began (an Add racing Wait is a misuse of the WaitGroup); then it
// returns false and the connection is refused. Pair with conns.Done.
func (s *Server) trackConn() bool {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	if s.connsClosed {
		return false
	}
	s.conns.Add(1)
	return true
}

// Errors of the request itself; session's sentinels cover the rest.
var (
	errMethod    = errors.New("method not allowed")
	errKey       = errors.New("wrong or missing key")
	errNoID      = errors.New("missing id parameter")
	errEmptyBody = errors.New("empty body: send base64-encoded MP3")
	errNotFound  = errors.New("no live stream with this id")
)

// status maps an error to the HTTP status and the message the client
// gets. This is the only place that decides replies to failures.
func status(err error) (int, string) {
	var (
		ue  *session.UpstreamError
		be  *Base64Error
		br  *badRequest
		mbe *http.MaxBytesError
		bde *bodyError
	)
	var ref *hooks.Refusal
	if code, msg, ok := whipStatus(err); ok {
		return code, msg
	}
	switch {
	case errors.As(err, &ref):
		return ref.Status, ref.Message
	case errors.Is(err, hooks.ErrUnavailable):
		return http.StatusServiceUnavailable, err.Error()
	case errors.As(err, &br):
		return http.StatusBadRequest, br.msg
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, err.Error()
	case errors.Is(err, errKey), errors.Is(err, errAdmin), errors.Is(err, errTokenMalformed),
		errors.Is(err, errTokenForged), errors.Is(err, errTokensOff), errors.As(err, new(*tokenError)),
		errors.Is(err, errBlockNotAdmin), errors.Is(err, session.ErrKicked), errors.As(err, new(*session.BlockedError)):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, errAdminOff), errors.Is(err, errNotFound):
		return http.StatusNotFound, err.Error()
	case errors.As(err, new(*rateLimited)):
		return http.StatusTooManyRequests, err.Error()
	case errors.Is(err, errNoID), errors.Is(err, errEmptyBody), errors.Is(err, session.ErrInvalidID), errors.Is(err, session.ErrSeqRange),
		errors.As(err, new(*session.PCMError)):
		return http.StatusBadRequest, err.Error()
	case errors.As(err, &be):
		return http.StatusBadRequest, be.Error()
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", mbe.Limit)
	case errors.As(err, &bde):
		if errors.Is(bde.err, io.ErrUnexpectedEOF) || errors.As(bde.err, new(*net.OpError)) {
			return StatusClientClosedRequest, "the request body ended early"
		}
		return http.StatusBadRequest, "malformed request body: " + bde.err.Error() // e.g. bad chunked encoding
	case errors.Is(err, session.ErrBusy), errors.As(err, new(*session.ReplacedError)), errors.Is(err, session.ErrSeqLate), errors.Is(err, session.ErrSeqConflict),
		errors.Is(err, session.ErrFormat):
		return http.StatusConflict, err.Error()
	case errors.Is(err, session.ErrNotMP3), errors.Is(err, session.ErrNotWebM), errors.Is(err, session.ErrNotAAC):
		return http.StatusUnsupportedMediaType, err.Error()
	case errors.As(err, &ue):
		return http.StatusBadGateway, ue.Error()
	case errors.Is(err, session.ErrAtCapacity), errors.Is(err, session.ErrShuttingDown), errors.Is(err, session.ErrBufferFull),
		errors.As(err, new(*admission.Saturated)):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return http.StatusRequestTimeout, "the request was not completed in time"
	}
	return http.StatusInternalServerError, "internal error"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reply writes the legacy JSON shape: errcode is 0 on success (or
// SuccessErrcode on /base64, which the old binary answered with 200) and
// equals the HTTP status otherwise. extra fields are added to the object.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, code int, msg string, extra map[string]any) {
	body := map[string]any{"errmsg": msg, "errcode": 0}
	switch {
	case code != http.StatusOK:
		body["errcode"] = code
	case r.URL.Path == "/base64":
		body["errcode"] = s.cfg.SuccessErrcode
	}
	for k, v := range extra {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}

// fail replies to err and logs what the client is not told.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error, extra map[string]any) {
	code, msg := status(err)
	var rl *rateLimited
	var ref *hooks.Refusal
	var sat *admission.Saturated
	switch {
	case errors.As(err, &rl):
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(rl.retryAfter)))
	case errors.As(err, &ref) && ref.RetryAfter != "":
		w.Header().Set("Retry-After", ref.RetryAfter)
	case errors.Is(err, session.ErrBufferFull):
		w.Header().Set("Retry-After", "1") // a restart takes a second or two
	case errors.As(err, &sat):
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(sat.RetryAfter)))
	}
	l := s.log.WithFields(logrus.Fields{"path": logPath(r.URL.Path), "remote": r.RemoteAddr, "status": code})
	if id := requestID(r); id != "" && session.ValidID(id) {
		l = l.WithField("id", id)
	}
	switch {
	case code == http.StatusInternalServerError:
		l.WithError(err).Error("request failed")
	case code >= 500 && !errors.As(err, &sat): // a refusal per arrival while saturated: the metric counts them
		l.WithError(err).Warn("request failed")
	default:
		l.WithError(err).Info("request refused")
	}
	s.reply(w, r, code, msg, extra)
}

// api wraps a handler that returns an error.
func (s *Server) api(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, r, err, nil)
		}
	})
}

func requestID(r *http.Request) string {
	if id := r.PathValue("id"); id != "" {
		return id
	}
	return r.URL.Query().Get("id")
}

// checkID validates the live ID before anything is started for it.
func checkID(id string) error {
	if id == "" {
		return errNoID
	}
	if !session.ValidID(id) {
		return session.ErrInvalidID
	}
	return nil
}

func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) {
	up := time.Since(s.started)
	s.reply(w, r, http.StatusOK, "ok", map[string]any{
		"name":           "ffmpeg-publisher",
		"version":        s.cfg.Version,
		"uptime":         up.Round(time.Second).String(),
		"uptime_seconds": int64(up.Seconds()),
		"sessions":       s.reg.Len(),
	})
}

// handleBase64 is the chunk API: POST /base64?key=K&id=ID (or /chunk) with
// one chunk of audio, base64 unless the Content-Type names a binary one
// (see binaryFormat): legacy clients send base64 MP3 as text/plain or with
// no type. The body is decoded as it arrives into a pooled buffer and
// written to the session in one piece once it is complete and valid, so a
// refused chunk leaves nothing behind in the stream and a slow client does
// not hold the ID's writer while it uploads.
func (s *Server) handleBase64(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return errMethod
	}
	q := r.URL.Query()
	id := q.Get("id")
	numbered, err := seqParams(q)
	if err != nil {
		return err
	}
	format, binary, err := requestFormat(r)
	if err != nil {
		return err
	}
	src, err := s.admit(r, id, "base64", format, numbered != nil)
	if err != nil {
		return err
	}
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.putBuf(buf)
	buf.Reset()
	if err := s.readChunk(w, r, buf, binary); err != nil {
		return err
	}
	end := q.Get("end") == "1"
	if numbered == nil {
		if _, err := s.reg.Write(r.Context(), id, src, buf.Bytes()); err != nil {
			return err
		}
		if end {
			s.reg.End(id, session.CauseClient) // the client's last chunk: flush and close the publish now
		}
		s.reply(w, r, http.StatusOK, "ok", nil)
		return nil
	}
	numbered.End = end // the registry ends the stream and remembers it, for a retry
	res, err := s.reg.WriteSeq(r.Context(), id, src, *numbered, buf.Bytes())
	if err != nil {
		return err
	}
	extra := map[string]any{"seq": numbered.Seq}
	if res.Duplicate {
		extra["duplicate"] = true
	}
	s.reply(w, r, http.StatusOK, "ok", extra)
	return nil
}

// seqParams reads a numbered chunk's seq and rec; nil if it has no seq.
func seqParams(q url.Values) (*session.SeqChunk, error) {
	v, rec := q.Get("seq"), q.Get("rec")
	if v == "" {
		if rec != "" {
			return nil, &badRequest{"rec needs seq: it names the recording a numbered chunk belongs to"}
		}
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > session.MaxSeq {
		return nil, session.ErrSeqRange
	}
	if rec != "" && !session.ValidID(rec) {
		return nil, &badRequest{"rec must be 1 to 64 characters from A-Z a-z 0-9 _ -"}
	}
	return &session.SeqChunk{Seq: n, Rec: rec}, nil
}

// putBuf returns a buffer to the pool unless it grew past the usual chunk
// size, so one huge request does not pin memory for good.
func (s *Server) putBuf(b *bytes.Buffer) {
	if b.Cap() <= 4*DefaultMaxMessage {
		s.bufs.Put(b)
	}
}

// uploadPiece is how much of a streaming upload is read per write: about
// 2 s of 128 kbps audio, small enough to keep the delay low.
const uploadPiece = 32 << 10

// handleLive streams a raw body into the ID's session as it arrives (MP3
// unless format= or the Content-Type names another):
// POST or PUT /live/{id}?key=K. The connection holds the ID while it
// uploads; the end of the body ends the stream, a broken connection leaves
// the session open for the idle timeout.
func (s *Server) handleLive(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		return errMethod
	}
	id := r.PathValue("id")
	format, _, err := requestFormat(r) // the body is raw whatever the type
	if err != nil {
		return err
	}
	src, err := s.admit(r, id, "upload", format, false)
	if err != nil {
		return err
	}
	pub, err := s.reg.Attach(id, src)
	if err != nil {
		return err
	}
	if err := pub.Prestart(r.Context()); err != nil { // ffmpeg starts while the body's first bytes come
		pub.Detach(false)
		return err
	}
	rc := http.NewResponseController(w)
	buf := make([]byte, uploadPiece)
	body := clientBody{r.Body}
	var bytesIn int64
	var audio time.Duration
	ended := false
	defer func() { pub.Detach(ended) }()
	defer onKick(pub, func() {
		rc.SetReadDeadline(time.Now()) // the operator removed it: stop waiting for the body
	})()
	for {
		rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		if isKicked(pub) { // after the deadline was set: a kick meanwhile is not lost
			s.fail(w, r, pub.KickReason(), map[string]any{"id": id, "bytes": bytesIn, "seconds": audio.Seconds()})
			return nil
		}
		n, rerr := body.Read(buf)
		if n > 0 {
			res, err := writeSlowly(r.Context(), pub, buf[:n], nil)
			if err != nil {
				ended = true // the stream is unusable; don't keep it waiting
				s.fail(w, r, err, map[string]any{"id": id, "bytes": bytesIn, "seconds": audio.Seconds()})
				return nil
			}
			bytesIn += res.Bytes
			audio += res.Audio
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if isKicked(pub) {
				rerr = pub.KickReason()
			}
			// The client went away or stalled: keep the session for a
			// reconnect, and tell it what arrived if it still listens.
			s.fail(w, r, rerr, map[string]any{"id": id, "bytes": bytesIn, "seconds": audio.Seconds()})
			return nil
		}
	}
	if bytesIn == 0 {
		return errEmptyBody
	}
	ended = true
	s.reply(w, r, http.StatusOK, "ok", map[string]any{"id": id, "bytes": bytesIn, "seconds": audio.Seconds()})
	return nil
}

// onKick calls f if pub is kicked before the returned stop is called; stop
// returns once f is no longer running or due.
func onKick(pub *session.Publisher, f func()) (stop func()) {
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-pub.Kicked():
			f()
		case <-quit:
		}
	}()
	return func() { close(quit); <-exited }
}

func isKicked(pub *session.Publisher) bool {
	select {
	case <-pub.Kicked():
		return true
	default:
		return false
	}
}

// statusRecorder remembers the status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController and the WebSocket upgrader reach the
// connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logPath is a request's path as logged: a WHIP session's URL is the
// credential that ends its stream, so its last part is left out.
func logPath(p string) string {
	if rest, ok := strings.CutPrefix(p, "/whip/"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return "/whip/" + rest[:i] + "/…"
		}
	}
	return p
}

// accessLog writes one line per request. The query string is never
// logged: it carries the key.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		code := rec.status
		if code == 0 {
			code = http.StatusOK
		}
		if s.cfg.Observer != nil {
			s.cfg.Observer.Replied(r.Pattern, code, time.Since(start))
		}
		if code < 400 && (strings.HasPrefix(r.URL.Path, "/demo/") || strings.HasPrefix(r.URL.Path, "/status/") ||
			r.URL.Path == "/metrics" || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" ||
			r.Method == http.MethodGet && r.URL.Path == "/streams") {
			return // assets, probes and the status page's polls: not worth a line each
		}
		s.log.WithFields(logrus.Fields{
			"method": r.Method, "path": logPath(r.URL.Path), "status": code,
			"remote": r.RemoteAddr, "duration": time.Since(start).Round(time.Microsecond).String(),
		}).Info("request")
	})
}

// Hijack lets the WebSocket upgrader take the connection over.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// limited applies the per-client request rate.
func (s *Server) limited(h func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if ok, wait := s.requests.allow(clientKey(r.RemoteAddr), time.Now()); !ok {
			return &rateLimited{what: "requests", retryAfter: wait}
		}
		return h(w, r)
	}
}

// allowNewSession applies the per-client rate of new sessions when the
// request would start one.
func (s *Server) allowNewSession(r *http.Request, id string) error {
	if _, live := s.reg.Info(id); live {
		return nil
	}
	if ok, wait := s.sessions.allow(clientKey(r.RemoteAddr), time.Now()); !ok {
		return &rateLimited{what: "new streams", retryAfter: wait}
	}
	return nil
}

// bufferRetry is how often a connection retries a write that found the
// stream's buffer full (its ffmpeg is restarting). Meanwhile the connection
// is not read: TCP slows the client down, nothing queues here.
const bufferRetry = 200 * time.Millisecond

// writeSlowly writes b, waiting while the stream's buffer is full; waiting
// is called once when that starts.
func writeSlowly(ctx context.Context, pub *session.Publisher, b []byte, waiting func()) (session.Result, error) {
	for {
		res, err := pub.Write(ctx, b)
		if !errors.Is(err, session.ErrBufferFull) {
			return res, err
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(bufferRetry):
		}
	}
}
