package main

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ffmpeg-publisher/internal/rtmptest"
)

// -outputs-file routes IDs to outputs, and a SIGHUP rereads it: a stream
// started after the reload goes where the new rules say. Two streams of
// 2 s; about 8 s.
func TestOutputsFileReloadedOnSIGHUP(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	a, b := rtmptest.Start(t), rtmptest.Start(t)
	file := filepath.Join(t.TempDir(), "outputs")
	if err := os.WriteFile(file, []byte("# studio streams\nroom* "+a.URL+"/{id}?key=ROUTEKEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &serverLog{}
	cmd, url := startProcessLogged(t, freeAddr(t), logs, "-outputs-file", file, "-rtmp", "rtmp://127.0.0.1:1/none")
	audio := rtmptest.MP3(t, 2.016, 16000, 1, "32k", true)
	postStream(t, url, "room1", audio)
	a.WaitRecorded(t, "room1", 1)

	if err := os.WriteFile(file, []byte("room* "+b.URL+"/{id}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); !logs.has("routing file reloaded"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no reload logged after SIGHUP")
		}
	}
	postStream(t, url, "room2", audio)
	b.WaitRecorded(t, "room2", 1)
	if n := a.PublishCount("room2"); n != 0 {
		t.Errorf("room2 went to the old output too (%d publishes)", n)
	}
	if logs.has("ROUTEKEY") {
		t.Error("the server logged the routed output's key")
	}
}

// SIGHUP, sent by operators and logrotate, never ends the server: without
// -outputs-file it has nothing to reload and says so; the live stream
// goes on in one publish.
func TestSIGHUPWithoutAnOutputsFile(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "nginx")
	rtmp := rtmptest.Start(t)
	logs := &serverLog{}
	cmd, url := startProcessLogged(t, freeAddr(t), logs, "-rtmp", rtmp.URL)
	audio := rtmptest.MP3(t, 3.024, 16000, 1, "32k", true)
	posted := make(chan struct{})
	go func() { defer close(posted); postStream(t, url, "hup", audio) }()
	for deadline := time.Now().Add(15 * time.Second); rtmp.PublishCount("hup") == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			<-posted
			t.Fatal("the stream did not publish")
		}
	}
	cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); !logs.has("nothing to reload"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			<-posted
			t.Fatalf("no SIGHUP logged; the server's state: %v", cmd.ProcessState)
		}
	}
	cmd.Process.Signal(syscall.SIGHUP) // a second one too
	<-posted
	rec := rtmp.WaitRecorded(t, "hup", 1)
	if n := rtmp.PublishCount("hup"); n != 1 || rec.Duration < 2.9 {
		t.Errorf("%d publishes, %.2f s recorded of 3.02 s: SIGHUP disturbed the stream", n, rec.Duration)
	}
}

// postStream sends audio as base64 POSTs of 504 ms at real-time pace, the
// last with end=1.
func postStream(t *testing.T, url, id string, audio []byte) {
	t.Helper()
	chunks := splitEvery(audio, 14*144)
	paced(len(chunks), 504*time.Millisecond, func(i int) {
		q := url + "/base64?key=secret&id=" + id
		if i == len(chunks)-1 {
			q += "&end=1"
		}
		resp, err := http.Post(q, "text/plain", strings.NewReader(base64.StdEncoding.EncodeToString(chunks[i])))
		if err != nil {
			t.Errorf("chunk %d: %v", i, err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("chunk %d of %s: %d", i, id, resp.StatusCode)
		}
	})
}
