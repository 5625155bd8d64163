package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// stuckFFmpeg writes a stand-in for ffmpeg that passes the startup check
// and then, like an ffmpeg blocked on a dead upstream, ignores stdin's end,
// SIGINT and SIGTERM: only SIGKILL ends it.
func stuckFFmpeg(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ffmpeg")
	script := `#!/bin/sh
for a; do [ "$a" = -version ] && { echo "ffmpeg version stuck"; exit 0; }; done
trap '' INT TERM
echo "[info] ffmpeg stats and -progress period set to 0.5." >&2
exec sleep 3600
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitLogged waits until the server logged a line containing text.
func waitLogged(t *testing.T, logs *serverLog, text string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if logs.has(text) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never logged %q", text)
		}
	}
}

func (l *serverLog) has(text string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, text) {
			return true
		}
	}
	return false
}

// A second SIGTERM cuts a shutdown short: no more drain delay, and the
// ffmpegs that would hold it for the whole grace are killed at once.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts the server as a process")
	}
	logs := &serverLog{}
	cmd, url := startProcessLogged(t, freeAddr(t), logs, "-ffmpeg", stuckFFmpeg(t), "-rtmp", "rtmp://127.0.0.1:1/live",
		"-admin-key", "admin", "-drain-delay", "10m", "-shutdown-grace", "10m")
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws?key=secret&id=stuck", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := append([]byte{0xFF, 0xF3, 0x48, 0xC0}, make([]byte, 140)...) // MPEG-2 layer III, 16 kHz mono
	c.WriteMessage(websocket.BinaryMessage, bytes.Repeat(frame, 10))
	p := &publisher{URL: url, client: &http.Client{Timeout: 10 * time.Second}}
	var pid int
	for deadline := time.Now().Add(20 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
		if info, ok := p.streamInfo(t, "stuck"); ok {
			pid = info.PID
		}
		if time.Now().After(deadline) {
			t.Fatal("ffmpeg was not started")
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	waitLogged(t, logs, "draining: not ready")
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after the second SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second): // far below the 10 minutes it was told to wait
		t.Fatal("a second SIGTERM did not stop the server")
	}
	if !logs.has("second signal") || !logs.has("remaining ffmpeg processes were killed") {
		t.Error("the server did not log the fast stop and the kill")
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("ffmpeg's process group %d outlived the server: %v", pid, err)
	}
}

func TestBufferSizeIsBounded(t *testing.T) {
	for _, tc := range []struct {
		in    string
		bytes int
		audio time.Duration
		bad   string // part of the error; "" when valid
	}{
		{in: "10s", audio: 10 * time.Second},
		{in: "10m", audio: 10 * time.Minute},
		{in: "11m", bad: "at most 10m0s of audio"},
		{in: "1000000h", bad: "at most"},
		{in: "512KiB", bytes: 512 << 10},
		{in: "64MiB", bytes: 64 << 20},
		{in: "65MiB", bad: "at most 64 MiB"},
		{in: "9223372036854775807KiB", bad: "at most 64 MiB"},    // overflowed to a negative size
		{in: "9007199254740993MiB", bad: "at most 64 MiB"},       // overflowed to a small one
		{in: "99999999999999999999999B", bad: "want a duration"}, // beyond int
		{in: "2000k", bytes: 2000 * 1000},
		{in: "0", bad: "want a duration"},
		{in: "-5KiB", bad: "want a duration"},
		{in: "lots", bad: "want a duration"},
	} {
		b, a, err := parseBuffer(tc.in)
		switch {
		case tc.bad == "" && (err != nil || b != tc.bytes || a != tc.audio):
			t.Errorf("-buffer %s: %d bytes, %s, %v; want %d bytes, %s", tc.in, b, a, err, tc.bytes, tc.audio)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("-buffer %s: %d bytes, %s, %v; want an error saying %q", tc.in, b, a, err, tc.bad)
		}
	}
	if _, err := parseConfig([]string{"-buffer", "100GiB"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Error("-buffer 100GiB accepted")
	}
}

// FuzzParseBuffer: whatever the text, -buffer is refused or within bounds.
func FuzzParseBuffer(f *testing.F) {
	for _, s := range []string{"10s", "512KiB", "1MiB", "9223372036854775807KiB", "4611686018427387904k", "1e3MB", " 7 B", "-1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, a, err := parseBuffer(s)
		if err != nil {
			return
		}
		if (b == 0) == (a == 0) || b < 0 || b > maxBufferBytes || a < 0 || a > maxBufferAudio {
			t.Fatalf("-buffer %q: %d bytes, %s", s, b, a)
		}
	})
}
