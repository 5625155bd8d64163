package session

import (
	"context"
	"os"
	"testing"
	"time"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/fakeffmpeg"
)

// BenchmarkScanner: one second of 16 kHz mono MP3 per write, as a
// mini-program sends it, cut mid-frame.
func BenchmarkScanner(b *testing.B) {
	chunk := frames(hdrV2Mono, 28, 0x55)[:28*144-70]
	var s mp3Scanner
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.feed(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionWrite: 100 ms pieces (a WebSocket frame) through the
// registry into a running (fake) ffmpeg's stdin.
func BenchmarkSessionWrite(b *testing.B) {
	dir := b.TempDir()
	r := NewRegistry(Config{
		FFmpeg:   ffpipe.Config{Binary: os.Args[0], ExtraEnv: fakeffmpeg.Env(dir, fakeffmpeg.Normal)},
		RTMPBase: "rtmp://127.0.0.1:1/live",
		// Far faster than real time: the fake's confirmations lag, and
		// the default 10 s bound would refuse the writes it measures.
		BufferBytes: 1 << 30,
	}, quietLog())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Close(ctx)
	}()
	pub, err := r.Attach("bench", Source{Transport: "websocket"})
	if err != nil {
		b.Fatal(err)
	}
	stream := frames(hdrV2Mono, 1000, 0x55)
	const piece = 400 // 100 ms at 32 kbps
	b.SetBytes(piece)
	b.ReportAllocs()
	off := 0
	for b.Loop() {
		if off+piece > len(stream) {
			off = 0
		}
		if _, err := pub.Write(context.Background(), stream[off:off+piece]); err != nil {
			b.Fatal(err)
		}
		off += piece
	}
}
