package transport

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// BenchmarkBase64Body: a one-second chunk of 32 kbps MP3 as a legacy POST
// body, with line breaks, decoded as the handler does.
func BenchmarkBase64Body(b *testing.B) {
	body := wrap(base64.StdEncoding.EncodeToString(mp3(28, 0x55)), 76, "\n")
	var buf bytes.Buffer
	dec := newB64Decoder()
	r := strings.NewReader(body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		r.Reset(body)
		if err := dec.decode(&buf, r); err != nil {
			b.Fatal(err)
		}
	}
}
