package transport

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"ffmpeg-publisher/admission"
)

// The stream API: GET /streams, GET /streams/{id} (admin key), DELETE
// /streams/{id} (admin key, or the stream's own key or token), and
// POST /tokens?id=ID&ttl=1h (admin key).

func (s *Server) handleStreams(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorizeAdmin(r); err != nil {
		return err
	}
	extra := map[string]any{"streams": s.reg.List()}
	if s.cfg.Admission != nil {
		extra["admission"] = s.cfg.Admission()
	}
	s.reply(w, r, http.StatusOK, "ok", extra)
	return nil
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	switch r.Method {
	case http.MethodGet:
		if err := s.authorizeAdmin(r); err != nil {
			return err
		}
		info, ok := s.reg.Info(id)
		if !ok {
			return errNotFound
		}
		s.reply(w, r, http.StatusOK, "ok", map[string]any{"stream": info})
		return nil
	case http.MethodDelete:
		return s.handleDelete(w, r, id)
	}
	w.Header().Set("Allow", "GET, DELETE")
	return errMethod
}

// maxTokenTTL keeps minted tokens from living forever by mistake; it also
// bounds a block, which outlives any token issued before it.
const maxTokenTTL = 366 * 24 * time.Hour

// errBlockNotAdmin: the shared key is every publisher's, so blocking an
// ID, which refuses everyone, takes the admin key.
var errBlockNotAdmin = errors.New("blocking a live id takes the admin key")

// handleDelete removes id's publisher: DELETE /streams/{id}[?block=10m]
// ends the stream and closes the attached WebSocket or upload; block also
// refuses the ID, whatever the credentials, for that long.
func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	admin := s.authorizeAdmin(r) == nil
	if !admin {
		if err := s.authorize(r, id); err != nil {
			return err
		}
	}
	var until time.Time
	if v := r.URL.Query().Get("block"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxTokenTTL {
			return &badRequest{"block must be a duration like 10m or 12h, at most 8784h"}
		}
		if !admin {
			return errBlockNotAdmin
		}
		until = time.Now().Add(d)
	}
	if !s.reg.Kick(id, until) && until.IsZero() {
		return errNotFound
	}
	extra := map[string]any{"id": id}
	if !until.IsZero() {
		extra["blocked_until"] = until.UTC().Format(time.RFC3339)
	}
	s.reply(w, r, http.StatusOK, "ok", extra)
	return nil
}

func (s *Server) handleMintToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorizeAdmin(r); err != nil {
		return err
	}
	id := r.URL.Query().Get("id")
	if err := checkID(id); err != nil {
		return err
	}
	ttl := time.Hour
	if v := r.URL.Query().Get("ttl"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxTokenTTL {
			return &badRequest{"ttl must be a duration like 30m or 12h, at most 8784h"}
		}
		ttl = d
	}
	expiry := time.Now().Add(ttl)
	token, err := MintToken(s.cfg.TokenSecret, id, expiry)
	if err != nil {
		return err
	}
	s.reply(w, r, http.StatusOK, "ok", map[string]any{"id": id, "token": token, "expires": expiry.UTC().Format(time.RFC3339)})
	return nil
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	s.reply(w, r, http.StatusOK, "ok", map[string]any{"status": "alive"})
}

// handleReadyz answers 503 while draining, while saturated or when ffmpeg
// cannot run, so a load balancer sends new streams elsewhere. A balancer
// that keeps each ID on its instance asks with ?sticky=1: saturation is
// then 404, which HAProxy's disable-on-404 reads as "no new IDs, keep
// sending the ones placed here" (a 503 would move them, splitting streams).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.reply(w, r, http.StatusServiceUnavailable, "draining: the server is shutting down", map[string]any{"status": "draining"})
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			var sat *admission.Saturated
			if errors.As(err, &sat) {
				code := http.StatusServiceUnavailable
				if r.URL.Query().Get("sticky") == "1" {
					code = http.StatusNotFound
				}
				w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(sat.RetryAfter)))
				s.reply(w, r, code, err.Error(), map[string]any{"status": "saturated", "reason": sat.Reason})
				return
			}
			s.reply(w, r, http.StatusServiceUnavailable, err.Error(), map[string]any{"status": "not ready"})
			return
		}
	}
	s.reply(w, r, http.StatusOK, "ok", map[string]any{"status": "ready", "sessions": s.reg.Len()})
}
