package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Every call carries two headers when -hook-secret is set:
//
//	X-Publisher-Timestamp: <unix seconds when the call was sent>
//	X-Publisher-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//
// The timestamp is signed with the body, so an old call sent again is
// told by its age, and each attempt of a retried notification has its own
// body ("attempt") and signature, so a signature seen twice is a replay.
const (
	HeaderTimestamp = "X-Publisher-Timestamp"
	HeaderSignature = "X-Publisher-Signature"
	signaturePrefix = "sha256="
)

// Signature returns the X-Publisher-Signature value for body sent at ts
// (unix seconds).
func Signature(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// sign sets the signature headers of a call sent now.
func sign(h http.Header, secret []byte, body []byte, now time.Time) {
	if len(secret) == 0 {
		return
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, Signature(secret, ts, body))
}

// Verification failures.
var (
	ErrUnsigned  = errors.New("the call is not signed")
	ErrSignature = errors.New("the signature does not match the body and timestamp")
	ErrStale     = errors.New("the call's timestamp is too far from now")
	ErrReplayed  = errors.New("this call was received before")
)

// DefaultMaxAge is how far a call's timestamp may be from the receiver's
// clock: retries are signed anew, so only clock skew and transit count.
const DefaultMaxAge = 5 * time.Minute

// Verifier checks calls as the application receiving them should: the
// signature over timestamp and body, the timestamp's age, and that the
// same signature was not received before within MaxAge. Safe for
// concurrent use.
type Verifier struct {
	Secret []byte
	// MaxAge bounds the timestamp's distance from now; 0 means 5 minutes.
	MaxAge time.Duration

	mu   sync.Mutex           // guards seen
	seen map[string]time.Time // signature → its timestamp, kept MaxAge
}

// Verify checks one call's headers and body, received at now.
func (v *Verifier) Verify(h http.Header, body []byte, now time.Time) error {
	ts, sig := h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if ts == "" || !strings.HasPrefix(sig, signaturePrefix) {
		return ErrUnsigned
	}
	if !hmac.Equal([]byte(sig), []byte(Signature(v.Secret, ts, body))) {
		return ErrSignature
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrSignature
	}
	maxAge := v.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	at := time.Unix(secs, 0)
	if now.Sub(at) > maxAge || at.Sub(now) > maxAge {
		return ErrStale
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = map[string]time.Time{}
	}
	for s, t := range v.seen {
		if now.Sub(t) > maxAge {
			delete(v.seen, s) // too old to pass the age check again
		}
	}
	if _, dup := v.seen[sig]; dup {
		return ErrReplayed
	}
	v.seen[sig] = at
	return nil
}
