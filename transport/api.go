package transport

import (
	"net/http"
	"time"

	"ffmpeg-publisher/session"
)

// The stream API: GET /streams, GET /streams/{id} (admin key), DELETE
// /streams/{id} (admin key, or the stream's own key or token), and
// POST /tokens?id=ID&ttl=1h (admin key).

func (s *Server) handleStreams(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorizeAdmin(r); err != nil {
		return err
	}
	s.reply(w, r, http.StatusOK, "ok", map[string]any{"streams": s.reg.List()})
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
		if err := checkID(id); err != nil {
			return err
		}
		if err := s.authorizeAdmin(r); err != nil {
			if err := s.authorize(r, id); err != nil {
				return err
			}
		}
		if !s.reg.End(id, session.CauseDeleted) {
			return errNotFound
		}
		s.reply(w, r, http.StatusOK, "ok", map[string]any{"id": id})
		return nil
	}
	w.Header().Set("Allow", "GET, DELETE")
	return errMethod
}

// maxTokenTTL keeps minted tokens from living forever by mistake.
const maxTokenTTL = 366 * 24 * time.Hour

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

// handleReadyz answers 503 while draining or when ffmpeg cannot run, so a
// load balancer sends new streams elsewhere.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.reply(w, r, http.StatusServiceUnavailable, "draining: the server is shutting down", map[string]any{"status": "draining"})
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			s.reply(w, r, http.StatusServiceUnavailable, err.Error(), map[string]any{"status": "not ready"})
			return
		}
	}
	s.reply(w, r, http.StatusOK, "ok", map[string]any{"status": "ready", "sessions": s.reg.Len()})
}
