package transport

import (
	"cmp"
	"context"
	"net"
	"net/http"

	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/session"
)

// PublishHook is the application's say over streams (package hooks):
// whether a new one may start, with which settings, and whether an ID's
// stream was revoked.
type PublishHook interface {
	Publish(ctx context.Context, req hooks.Publish) (*session.Overrides, error)
	Revoked(id string) error
}

// credentials are the server's own query parameters, not passed to a hook
// that decides beside them.
var credentials = []string{"key", "token", "admin_key"}

// admit lets a request publish to id: a valid ID, a stream not revoked,
// credentials for it (unless the hook alone decides), and, when the
// request would start a stream, the client's rate of new streams and the
// on_publish hook, whose settings for the new stream the returned source
// carries. The hook is asked before anything exists for the stream and
// holds no lock; a request that finds the stream live is asked later, by
// the registry, if its write would start one (the stream ended meanwhile).
// A numbered chunk (lazy) is always asked by the registry, which first
// recognizes a retry of an ended stream's chunk: a duplicate, not a stream.
func (s *Server) admit(r *http.Request, id, transport string, format streamFormat, lazy bool) (session.Source, error) {
	src := format.source(transport, r.RemoteAddr)
	if err := checkID(id); err != nil {
		return src, err
	}
	if s.cfg.Hooks != nil {
		if err := s.cfg.Hooks.Revoked(id); err != nil {
			return src, err
		}
	}
	if s.cfg.Hooks == nil || !s.cfg.HookOnly {
		if err := s.authorize(r, id); err != nil {
			return src, err
		}
	}
	var req hooks.Publish
	if s.cfg.Hooks != nil {
		req = s.publishRequest(r, id, transport, format)
		src.Approve = func(ctx context.Context, takeover bool) (*session.Overrides, error) {
			if err := s.cfg.Hooks.Revoked(id); err != nil {
				return nil, err
			}
			asked := req
			asked.Takeover = takeover
			return s.cfg.Hooks.Publish(ctx, asked)
		}
	}
	if lazy {
		hook := src.Approve
		src.Approve = func(ctx context.Context, takeover bool) (*session.Overrides, error) {
			if err := s.allowNewSession(r, id); err != nil {
				return nil, err
			}
			if hook == nil {
				return nil, nil
			}
			return hook(ctx, takeover)
		}
		return src, nil
	}
	if _, live := s.reg.Info(id); live {
		return src, nil
	}
	if err := s.allowNewSession(r, id); err != nil {
		return src, err
	}
	if src.Approve == nil {
		return src, nil
	}
	if err := s.reg.CheckNew(id); err != nil {
		return src, err // refused anyway: the application is not asked
	}
	ov, err := s.cfg.Hooks.Publish(r.Context(), req)
	src.Overrides, src.Approved = ov, err == nil
	return src, err
}

// publishRequest describes a request that would start id's stream.
func (s *Server) publishRequest(r *http.Request, id, transport string, format streamFormat) hooks.Publish {
	q := r.URL.Query()
	if !s.cfg.HookOnly {
		for _, k := range credentials {
			q.Del(k)
		}
	}
	query := make(map[string]string, len(q))
	for k, v := range q {
		query[k] = v[0]
	}
	params := map[string]int{}
	if format.rate > 0 {
		params["rate"], params["channels"] = format.rate, format.channels
	}
	addr, remote := r.RemoteAddr, ""
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		addr, remote = host, r.RemoteAddr
	}
	return hooks.Publish{
		ID: id, Transport: transport, Format: cmp.Or(format.name, "mp3"), FormatParams: params,
		Addr: addr, Remote: remote, Query: query,
		UserAgent: r.Header.Get("User-Agent"), Origin: r.Header.Get("Origin"),
	}
}
