package transport

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"ffmpeg-publisher/internal/fakeffmpeg"
)

// Legacy clients label their base64 bodies carelessly; the server never
// read the header before binary chunks existed, and must still not care
// unless the type names a binary format.
func TestLegacyBase64SloppyContentType(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	var want []byte
	for i, ctype := range []string{
		"application/x-www-form-urlencoded",
		"text/plain;charset=UTF-8",
		"text/plain; charset",             // a parameter without a value
		"text/plain, application/json",    // a list, as some HTTP libraries send
		"application/json;;charset=utf-8", // an empty parameter
		"text/plain; charset=\"utf-8",     // an unclosed quote
	} {
		chunk := mp3(2, byte(10+i))
		code := postTyped(t, ts.URL+"/base64?key=k&id=sloppy", ctype, base64.StdEncoding.EncodeToString(chunk))
		if code != http.StatusOK {
			t.Errorf("Content-Type %q: %d, want 200 as before binary chunks", ctype, code)
			continue
		}
		want = append(want, chunk...)
	}
	// A binary type with unreadable parameters is still refused: its
	// format cannot be known.
	if code := postTyped(t, ts.URL+"/chunk?key=k&id=pcm", "audio/L16; rate", "\x00\x00"); code != http.StatusBadRequest {
		t.Errorf("audio/L16 with a broken parameter: %d, want 400", code)
	}
	if got := ts.received(t, "sloppy"); !bytes.Equal(got, want) {
		t.Errorf("ffmpeg read %d bytes, want the %d sent", len(got), len(want))
	}
}

// postTyped POSTs body with the exact Content-Type ctype.
func postTyped(t *testing.T, url, ctype, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
