package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"ffmpeg-publisher/ffpipe"

	"github.com/gorilla/websocket"
)

// Each client sends its stream's chunks at real-time pace: chunk k, the
// audio from k·d, leaves at start + k·d.

// postClient is a legacy client: one /base64 POST per chunk, the last with
// end=1. It returns each POST's latency (request sent → reply read).
func postClient(hc *http.Client, base string, s *stream) ([]time.Duration, error) {
	acks := make([]time.Duration, 0, len(s.chunks))
	body := make([]byte, 0, base64.StdEncoding.EncodedLen(len(s.chunks[0].data))*2)
	for k, c := range s.chunks {
		time.Sleep(time.Until(s.start.Add(c.from)))
		q := base + "/base64?key=bench&id=" + s.id + s.query
		if k == len(s.chunks)-1 {
			q += "&end=1"
		}
		body = base64.StdEncoding.AppendEncode(body[:0], c.data)
		t := time.Now()
		resp, err := hc.Post(q, "text/plain", strings.NewReader(string(body)))
		if err != nil {
			return acks, err
		}
		reply, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(t)
		if resp.StatusCode != http.StatusOK {
			return acks, fmt.Errorf("POST %d: %s: %s", k, resp.Status, reply)
		}
		acks = append(acks, took)
	}
	return acks, nil
}

// wsClient sends each chunk as a binary WebSocket message, then closes
// with 1000 (which ends the stream).
func wsClient(base string, s *stream) error {
	url := "ws" + strings.TrimPrefix(base, "http") + "/ws?key=bench&id=" + s.id + s.query
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	closed := make(chan error, 1)
	go func() { // status messages; the server's close ends this
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					err = nil
				}
				closed <- err
				return
			}
		}
	}()
	for _, c := range s.chunks {
		time.Sleep(time.Until(s.start.Add(c.from)))
		if err := conn.WriteMessage(websocket.BinaryMessage, c.data); err != nil {
			return err
		}
	}
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(5*time.Second)); err != nil {
		return err
	}
	select {
	case err := <-closed:
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("no close from the server")
	}
}

// rawClient streams the chunks as one chunked POST /live/ID body.
func rawClient(hc *http.Client, base string, s *stream) error {
	pr, pw := io.Pipe()
	type reply struct {
		status int
		body   string
		err    error
	}
	done := make(chan reply, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPost, base+"/live/"+s.id+"?key=bench"+s.query, pr)
		if err != nil {
			done <- reply{err: err}
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			pr.CloseWithError(err)
			done <- reply{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- reply{status: resp.StatusCode, body: string(b)}
	}()
	for _, c := range s.chunks {
		time.Sleep(time.Until(s.start.Add(c.from)))
		if _, err := pw.Write(c.data); err != nil {
			return err
		}
	}
	pw.Close()
	r := <-done
	if r.err == nil && r.status != http.StatusOK {
		r.err = fmt.Errorf("%d: %s", r.status, r.body)
	}
	return r.err
}

// bareClient is the floor: an ffmpeg with the publisher's own options,
// fed the same MP3 at the same pace on its stdin by the bench itself, as
// a hand-written "pipe into ffmpeg" script would. Its input is raw MP3,
// the way such scripts do it (the publisher frames MP3 in FLV tags).
func bareClient(url, codec, format string, s *stream) error {
	cfg := ffpipe.Config{AudioCodec: codec, Target: url}
	switch format {
	case "pcm":
		cfg.InputFormat, cfg.SampleRate, cfg.Channels = "s16le", rate, 1
	case "aac":
		cfg.InputFormat, cfg.AudioCodec = "aac", "copy" // the FLV muxer converts the ADTS headers itself
	}
	cmd := exec.Command("ffmpeg", ffpipe.Args(cfg)...)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd.ExtraFiles = []*os.File{devnull} // -progress pipe:3
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	for _, c := range s.chunks {
		time.Sleep(time.Until(s.start.Add(c.from)))
		if _, err := stdin.Write(c.data); err != nil {
			break // ffmpeg failed: Wait says why
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("ffmpeg: %v: %s", err, lastLine(stderr.String()))
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
