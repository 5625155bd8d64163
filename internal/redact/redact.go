// Package redact hides the secrets output URLs carry (a key in the query,
// in the path after the live ID as CDNs put it, or in userinfo) from every
// text that leaves the process: logs, errors, replies.
//
// The shown form keeps the scheme, the host and the path up to the live ID;
// userinfo, the query and anything after the ID become "…":
// rtmp://user:pw@h/live/room1/KEY?s=1 is shown as rtmp://…@h/live/room1….
package redact

import (
	"cmp"
	"net/url"
	"slices"
	"strings"
)

// Hidden stands for what was removed.
const Hidden = "…"

// WholePath, given as the ID, hides the whole path and query: a URL set by
// an application, whose path may be a key, shows its scheme and host only.
const WholePath = "/"

// minPiece is the shortest part of a secret that is hidden wherever it
// appears alone; shorter parts are hidden only inside the URL, its path or
// its query, so that a key "a=1" does not blank every "1" of a log line.
const minPiece = 4

// Target hides one target URL's secrets in text. The zero value hides
// nothing.
type Target struct {
	shown string
	r     *strings.Replacer
}

// New prepares the redaction of target, whose path names the live ID id.
// An id that is "" is taken to be the path's last segment; a path without
// id is hidden whole (it may be a key). A target without "://" (a file) is
// shown as it is.
func New(target, id string) *Target { return All(id, target) }

// All prepares the redaction of every target of one stream: Line hides the
// secrets of each, URL shows the first.
func All(id string, targets ...string) *Target {
	repl := map[string]string{}
	t := &Target{}
	for i, target := range targets {
		shown := hide(target, id, repl)
		if i == 0 {
			t.shown = shown
		}
	}
	if len(repl) == 0 {
		return t
	}
	olds := make([]string, 0, len(repl))
	for k := range repl {
		olds = append(olds, k)
	}
	slices.SortFunc(olds, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	pairs := make([]string, 0, 2*len(olds))
	for _, o := range olds {
		pairs = append(pairs, o, repl[o])
	}
	t.r = strings.NewReplacer(pairs...)
	return t
}

// hide adds target's replacements to repl (the first one for a string
// wins) and returns its shown form.
func hide(target, id string, repl map[string]string) string {
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok {
		return target
	}
	authority, pathQuery := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, pathQuery = rest[:i], rest[i:]
	}
	userinfo, host := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, host = authority[:i], authority[i+1:]
	}
	keep, tail := splitAtID(pathQuery, id)

	shown := scheme + "://"
	if userinfo != "" {
		shown += Hidden + "@"
	}
	shown += host + keep
	if tail != "" {
		shown += Hidden
	}
	if shown == target {
		return shown
	}

	// Replacements, tried longest first at each position of a line.
	add := func(s, with string, always bool) {
		for _, v := range decodings(s) {
			if v != "" && (always || len(v) >= minPiece) {
				if _, dup := repl[v]; !dup {
					repl[v] = with
				}
			}
		}
	}
	add(target, shown, true)
	if userinfo != "" {
		add(userinfo+"@", Hidden+"@", true)
		add(userinfo, Hidden, true)
		user, pw, _ := strings.Cut(userinfo, ":")
		add(pw, Hidden, false)
		// RTMP servers asking for authentication echo the user name.
		add("user="+user, "user="+Hidden, true)
	}
	if tail != "" {
		add(tail, Hidden, true)
		// ffmpeg prints the path split into app and stream name, so the
		// part after the ID may appear without its separator or in pieces.
		add(strings.TrimLeft(tail, "/?&#"), Hidden, false)
		for _, part := range strings.FieldsFunc(tail, func(r rune) bool { return strings.ContainsRune("/?&#", r) }) {
			add(part, Hidden, false)
			if _, v, ok := strings.Cut(part, "="); ok {
				add(v, Hidden, false)
			}
		}
	}
	return shown
}

// splitAtID cuts path+query after the live ID: the last path segment that
// starts with id (a CDN template may follow the ID with a key in the same
// segment). A path without id is hidden whole; without an id, the last
// segment is taken for it.
func splitAtID(pathQuery, id string) (keep, tail string) {
	path := pathQuery
	if i := strings.IndexAny(pathQuery, "?#"); i >= 0 {
		path = pathQuery[:i]
	}
	if id == WholePath {
		return "", pathQuery
	}
	end := -1
	if id != "" {
		i := strings.LastIndex(path, "/"+id)
		if i < 0 {
			return "", pathQuery // a path without the ID names something else, such as a platform's key
		}
		end = i + 1 + len(id)
	}
	if end < 0 {
		end = len(strings.TrimRight(path, "/"))
	}
	return pathQuery[:end], pathQuery[end:]
}

// decodings returns s and the forms in which URL decoding may print it.
func decodings(s string) []string {
	out := []string{s}
	if v, err := url.PathUnescape(s); err == nil && v != s {
		out = append(out, v)
	}
	if v, err := url.QueryUnescape(s); err == nil && v != s && v != out[len(out)-1] {
		out = append(out, v)
	}
	return out
}

// URL is the target as it may be shown.
func (t *Target) URL() string {
	if t == nil {
		return ""
	}
	return t.shown
}

// Line returns s with every form of the target's secrets hidden.
func (t *Target) Line(s string) string {
	if t == nil || t.r == nil {
		return s
	}
	return t.r.Replace(s)
}

// URL returns target as it may be shown (see New).
func URL(target, id string) string { return New(target, id).URL() }
