package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"ffmpeg-publisher/session"
)

// Publish tokens let an operator hand one publisher the right to one live
// ID for a while, without the shared key:
//
//	v1.<id>.<expiry, unix seconds>.<base64url HMAC-SHA256(secret, "v1.<id>.<expiry>")>
//
// IDs never contain '.', so the token splits unambiguously, and carrying the
// ID lets a refusal say "this token is for another live id".
const tokenVersion = "v1"

// Token refusals, all 403.
var (
	errTokenMalformed = errors.New("malformed token")
	errTokenForged    = errors.New("token signature is not valid")
	errTokensOff      = errors.New("tokens are not enabled on this server")
)

type tokenError struct{ msg string }

func (e *tokenError) Error() string { return e.msg }

// MintToken returns a token for id that expires at expiry.
func MintToken(secret []byte, id string, expiry time.Time) (string, error) {
	if !session.ValidID(id) {
		return "", session.ErrInvalidID
	}
	if len(secret) == 0 {
		return "", errTokensOff
	}
	body := tokenVersion + "." + id + "." + strconv.FormatInt(expiry.Unix(), 10)
	return body + "." + sign(secret, body), nil
}

func sign(secret []byte, body string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// VerifyToken checks token for id at now.
func VerifyToken(secret []byte, token, id string, now time.Time) error {
	if len(secret) == 0 {
		return errTokensOff
	}
	parts := strings.Split(token, ".")
	if len(parts) != 4 || parts[0] != tokenVersion {
		return errTokenMalformed
	}
	body := strings.Join(parts[:3], ".")
	if !hmac.Equal([]byte(parts[3]), []byte(sign(secret, body))) {
		return errTokenForged
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return errTokenMalformed
	}
	if parts[1] != id {
		return &tokenError{fmt.Sprintf("this token is for live id %q, not %q", parts[1], id)}
	}
	if t := time.Unix(exp, 0); !now.Before(t) {
		return &tokenError{fmt.Sprintf("token expired at %s", t.UTC().Format(time.RFC3339))}
	}
	return nil
}

// bearer returns the Authorization: Bearer credential, if any.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authorize lets a request publish to id: a valid token (token= or
// Authorization: Bearer), or the shared key (key=). With neither a key nor a
// token secret configured, publishing is open.
func (s *Server) authorize(r *http.Request, id string) error {
	q := r.URL.Query()
	token := q.Get("token")
	if token == "" {
		if b := bearer(r); strings.HasPrefix(b, tokenVersion+".") {
			token = b
		}
	}
	if token != "" {
		return VerifyToken(s.cfg.TokenSecret, token, id, time.Now())
	}
	if s.cfg.Key == "" && len(s.cfg.TokenSecret) == 0 {
		return nil
	}
	key := q.Get("key")
	if key == "" {
		key = bearer(r)
	}
	if s.cfg.Key != "" && s.key.matches(key) {
		return nil
	}
	return errKey
}

// Management API refusals.
var (
	errAdminOff = errors.New("the stream API is off: start the server with -admin-key")
	errAdmin    = errors.New("wrong or missing admin key")
)

// authorizeAdmin accepts the admin key as Authorization: Bearer or
// admin_key=.
func (s *Server) authorizeAdmin(r *http.Request) error {
	if s.cfg.AdminKey == "" {
		return errAdminOff
	}
	key := bearer(r)
	if key == "" {
		key = r.URL.Query().Get("admin_key")
	}
	if !s.adminKey.matches(key) {
		return errAdmin
	}
	return nil
}

// secretKey is a configured key, kept as its SHA-256 digest: comparing
// digests takes the same time whatever the key's length and however much
// of it a guess gets right (a plain constant-time compare of the keys
// returns early when the lengths differ).
type secretKey [sha256.Size]byte

func newSecretKey(key string) secretKey { return sha256.Sum256([]byte(key)) }

// matches compares a presented key with the configured one.
func (k *secretKey) matches(given string) bool {
	g := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(g[:], k[:]) == 1
}
