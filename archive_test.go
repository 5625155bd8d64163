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
	"ffmpeg-publisher/session"
)

// recordings lists the archive files in dir.
func recordings(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.m4a"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pollStream collects id's /streams entries every 100 ms until the
// returned function is called (admin key "admin").
func pollStream(t *testing.T, p *publisher, id string) func() []session.Info {
	t.Helper()
	var seen []session.Info
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if info, ok := p.streamInfo(t, id); ok {
				seen = append(seen, info)
			}
		}
	}()
	return func() []session.Info {
		close(stop)
		<-done
		return seen
	}
}

// A stream that ends normally leaves one file, named by its ID, that plays
// with the duration sent within 3 %; the file is readable by its owner
// and group only, and /streams shows it growing. About 5 s.
func TestArchiveNormalEnd(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	dir := t.TempDir()
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.RecordDir, c.AdminKey = dir, "admin" })
	audio := rtmptest.MP3(t, 4.032, 16000, 1, "32k", true)
	stop := pollStream(t, p, "arch")
	p.postChunks(t, "arch", splitEvery(audio, 14*144), 504*time.Millisecond)
	// On a loaded machine the archive's writer can trail the stream: watch
	// until the file shows bytes or the stream has left the list.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if info, ok := p.streamInfo(t, "arch"); !ok || info.Recording.Bytes > 0 {
			break
		}
	}
	seen := stop()
	checkArrived(t, rtmp, p, "arch", session.MP3Duration(audio))
	files := recordings(t, dir)
	if len(files) != 1 || !filepath.IsAbs(files[0]) || filepath.Base(files[0])[:5] != "arch-" {
		t.Fatalf("archive files %q, want one arch-TIME.m4a", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("archive mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}
	var grew int64
	for _, info := range seen {
		if r := info.Recording; r.File == filepath.Base(files[0]) && r.Error == "" {
			grew = max(grew, r.Bytes)
		} else {
			t.Errorf("/streams shows the recording %+v, want %s", r, filepath.Base(files[0]))
			break
		}
	}
	if grew == 0 {
		t.Errorf("/streams never showed the recording's bytes (%d looks)", len(seen))
	}
	codec, _, dur := rtmptest.Probe(t, files[0])
	want := (session.MP3Duration(audio) + p.silence(t, "arch")).Seconds()
	t.Logf("archive %s: %s %.3f s of %.3f s", filepath.Base(files[0]), codec, dur, want)
	if codec != "aac" || dur < want*0.97 || dur > want*1.03 {
		t.Errorf("archive: %s, %.3f s, want aac within 3%% of %.3f s", codec, dur, want)
	}
}

// SIGKILL of the server (its ffmpeg goes with it): the archive is readable
// up to the kill, less at most its last fragment (1 s): it holds what
// ffmpeg had sent when the server was killed, whatever the machine's load
// made of the clients' pace. About 4 s.
func TestArchiveAfterSIGKILL(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	rtmp := rtmptest.Start(t)
	dir := t.TempDir()
	cmd, url := startProcess(t, "-rtmp", rtmp.URL, "-record-dir", dir, "-admin-key", "admin")
	audio := rtmptest.MP3(t, 4.032, 16000, 1, "32k", true)
	chunks := splitEvery(audio, 14*144)
	chunks = chunks[:len(chunks)-1] // no end: the stream is live when the server dies
	paced(len(chunks), 504*time.Millisecond, func(i int) {
		resp, err := http.Post(url+"/base64?key=secret&id=killed", "text/plain", strings.NewReader(base64.StdEncoding.EncodeToString(chunks[i])))
		if err != nil {
			t.Errorf("chunk %d: %v", i, err)
			return
		}
		resp.Body.Close()
	})
	posted := session.MP3Duration(audio).Seconds() - 0.504
	p := &publisher{URL: url, client: http.DefaultClient}
	var sent float64 // what ffmpeg reported sending, at the kill
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, _ := p.streamInfo(t, "killed")
		if sent = info.Sent; sent >= posted-0.2 || time.Now().After(deadline) {
			break
		}
	}
	cmd.Process.Kill()
	rtmp.WaitRecorded(t, "killed", 1)
	files := recordings(t, dir)
	if len(files) != 1 {
		t.Fatalf("archive files %q, want one", files)
	}
	codec, _, dur := rtmptest.Probe(t, files[0])
	t.Logf("archive after SIGKILL: %s %.3f s; ffmpeg had sent %.3f s of %.3f s posted", codec, dur, sent, posted)
	if codec != "aac" || dur < sent-1.5 || sent < 1 {
		t.Errorf("archive after SIGKILL: %s, %.3f s; ffmpeg had sent %.3f s of %.3f s posted", codec, dur, sent, posted)
	}
}

// A full disk (a 16 KiB tmpfs: about 3 s of archive, so it fills well before
// the end even on a loaded machine) ends the archive
// only: the RTMP output gets the whole stream in one publish, without a
// hole. About 8 s.
func TestArchiveFullDiskLeavesTheOutput(t *testing.T) {
	t.Parallel()
	rtmptest.Require(t, "ffmpeg", "ffprobe", "nginx")
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16k"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot mount a small tmpfs to fill (CI must run this as root): %v", err)
		}
		t.Skipf("cannot mount a small tmpfs (not root?): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	rtmp := rtmptest.Start(t)
	p := startPublisher(t, rtmp.URL, func(c *Config) { c.RecordDir, c.AdminKey = dir, "admin" })
	audio := rtmptest.MP3(t, 8.064, 16000, 1, "32k", true)
	stop := pollStream(t, p, "full")
	p.postChunks(t, "full", splitEvery(audio, 14*144), 504*time.Millisecond)
	seen := stop()
	checkArrived(t, rtmp, p, "full", session.MP3Duration(audio))
	if len(seen) == 0 || !strings.Contains(seen[len(seen)-1].Recording.Error, "No space left") {
		t.Errorf("/streams did not show the full disk (%d looks): %+v", len(seen), seen)
	}
	if gap := rtmptest.MaxPTSGap(t, rtmp.Recordings("full")[0]); gap > 0.1 {
		t.Errorf("a %.3f s hole in the RTMP output while the disk was full", gap)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Bavail > 1 {
		t.Errorf("the tmpfs was not filled: %d blocks free", st.Bavail)
	}
}

func TestPruneRecordings(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-200 * time.Hour)
	for name, mtime := range map[string]time.Time{"a-old.m4a": old, "b-old.mp4": old, "c-new.m4a": time.Now(), "notes.txt": old} {
		f := filepath.Join(dir, name)
		os.WriteFile(f, nil, 0o644)
		os.Chtimes(f, mtime, mtime)
	}
	n, err := pruneRecordings(dir, time.Now().Add(-168*time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want 2", n, err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 2 {
		t.Errorf("left %q, want the new recording and the other file", left)
	}
}
