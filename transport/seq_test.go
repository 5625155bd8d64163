package transport

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/session"
)

// seqPost posts chunk to /base64 with the query params (id, seq, rec,
// end...). A request that hangs fails the test after 10 s instead of
// hanging it.
func seqPost(t *testing.T, ts *testServer, params string, chunk []byte) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/base64?key=k&"+params,
		strings.NewReader(base64.StdEncoding.EncodeToString(chunk)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", params, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// seqChunk is chunk number i of a test stream: 3 frames filled with i.
func seqChunk(i int) []byte { return mp3(3, byte(i)) }

// postAll posts chunks first..last numbered from 0 and fails unless each
// is written (200, not a duplicate).
func postAll(t *testing.T, ts *testServer, id string, first, last int, want *[]byte) {
	t.Helper()
	for i := first; i <= last; i++ {
		c := seqChunk(i)
		code, m := seqPost(t, ts, "id="+id+"&seq="+strconv.Itoa(i-first), c)
		if code != 200 || m["duplicate"] != nil {
			t.Fatalf("chunk %d (seq %d): %d %v", i, i-first, code, m)
		}
		*want = append(*want, c...)
	}
}

func TestSeqRecorderRestartIsWrittenNotDropped(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	var want []byte
	postAll(t, ts, "rs", 1, 10, &want)  // a first recording, seq 0-9
	postAll(t, ts, "rs", 11, 20, &want) // the recorder restarted: seq 0-9 again, other audio
	if got := ts.received(t, "rs"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want both recordings' %d", len(got), len(want))
	}
}

func TestSeqRetryTooFarBehindIsRefusedAndNotRewritten(t *testing.T) {
	// A long wait: a next chunk that waits for anything would hang.
	ts := newServer(t, fakeffmpeg.Normal, func(c *Config, s *session.Config) { s.SeqWait = time.Hour })
	var want []byte
	postAll(t, ts, "far", 0, 69, &want)
	if code, m := seqPost(t, ts, "id=far&seq=2", seqChunk(2)); code != 409 || !strings.Contains(m["errmsg"].(string), "seq 2") {
		t.Fatalf("retry of seq 2 after 70 chunks: %d %v", code, m)
	}
	if code, m := seqPost(t, ts, "id=far&seq=70", seqChunk(70)); code != 200 || m["duplicate"] != nil {
		t.Fatalf("seq 70: %d %v", code, m)
	}
	want = append(want, seqChunk(70)...)
	if got := ts.received(t, "far"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want %d once each", len(got), len(want))
	}
}

func TestSeqOutOfRangeIsRefused(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	for _, n := range []string{"9223372036854775807", "9223372036854775807", "9007199254740992", "-1", "99999999999999999999", "1.5", "x"} {
		code, m := seqPost(t, ts, "id=big&seq="+n, seqChunk(1))
		if code != 400 || !strings.Contains(m["errmsg"].(string), "9007199254740991") {
			t.Fatalf("seq=%s: %d %v", n, code, m)
		}
	}
	// The largest accepted number, retried: written once.
	if code, m := seqPost(t, ts, "id=big&seq=9007199254740991", seqChunk(2)); code != 200 || m["duplicate"] != nil {
		t.Fatalf("seq=2^53-1: %d %v", code, m)
	}
	if code, m := seqPost(t, ts, "id=big&seq=9007199254740991", seqChunk(2)); code != 200 || m["duplicate"] != true {
		t.Fatalf("seq=2^53-1 again: %d %v", code, m)
	}
	if got := ts.received(t, "big"); !bytes.Equal(got, seqChunk(2)) {
		t.Fatalf("ffmpeg read %d bytes, want one chunk of %d", len(got), len(seqChunk(2)))
	}
}

func TestSeqRetriedEndIsADuplicate(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	var want []byte
	postAll(t, ts, "fin", 0, 2, &want)
	if code, m := seqPost(t, ts, "id=fin&seq=3&end=1", seqChunk(3)); code != 200 || m["duplicate"] != nil {
		t.Fatalf("seq 3 end=1: %d %v", code, m)
	}
	want = append(want, seqChunk(3)...)
	waitGone(t, ts, "fin")
	// The reply was lost; the client sends the same request again.
	if code, m := seqPost(t, ts, "id=fin&seq=3&end=1", seqChunk(3)); code != 200 || m["duplicate"] != true {
		t.Fatalf("retried seq 3 end=1: %d %v", code, m)
	}
	if n := ts.reg.Len(); n != 0 {
		t.Fatalf("the retried end opened %d session(s)", n)
	}
	got := ts.received(t, "fin")
	if runs := len(fakeffmpeg.OutputFiles(ts.dir, "fin")); runs != 1 || !bytes.Equal(got, want) {
		t.Fatalf("%d ffmpeg runs read %d bytes; want one that read %d", runs, len(got), len(want))
	}
}

func TestSeqNewStreamAfterAnEnd(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	var want []byte
	postAll(t, ts, "again", 0, 1, &want)
	if code, _ := seqPost(t, ts, "id=again&seq=2&end=1", seqChunk(2)); code != 200 {
		t.Fatalf("seq 2 end=1: %d", code)
	}
	want = append(want, seqChunk(2)...)
	waitGone(t, ts, "again")
	// The same client streams again: a new recording numbered from 0.
	postAll(t, ts, "again", 10, 12, &want)
	if got := ts.received(t, "again"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want %d", len(got), len(want))
	}
}

func TestSeqRecordingID(t *testing.T) {
	ts := newServer(t, fakeffmpeg.Normal, nil)
	var want []byte
	post := func(rec string, n, fill int) (int, map[string]any) {
		return seqPost(t, ts, "id=rec&rec="+rec+"&seq="+strconv.Itoa(n), seqChunk(fill))
	}
	for i := 0; i < 3; i++ {
		if code, m := post("a", i, 1); code != 200 || m["duplicate"] != nil {
			t.Fatalf("rec a seq %d: %d %v", i, code, m)
		}
		want = append(want, seqChunk(1)...)
	}
	// Recording b's chunks have the same bytes as a's (silence, say): its
	// new id tells they are new.
	for i := 0; i < 3; i++ {
		if code, m := post("b", i, 1); code != 200 || m["duplicate"] != nil {
			t.Fatalf("rec b seq %d: %d %v", i, code, m)
		}
		want = append(want, seqChunk(1)...)
	}
	if code, m := post("b", 1, 1); code != 200 || m["duplicate"] != true {
		t.Fatalf("retried rec b seq 1: %d %v", code, m)
	}
	if code, m := post("a", 2, 1); code != 409 {
		t.Fatalf("late rec a seq 2: %d %v", code, m)
	}
	if code, m := post("b", 1, 9); code != 409 || !strings.Contains(m["errmsg"].(string), "other bytes") {
		t.Fatalf("rec b seq 1 with other bytes: %d %v", code, m)
	}
	if code, m := post("no/good", 0, 1); code != 400 {
		t.Fatalf("rec=no/good: %d %v", code, m)
	}
	if code, m := seqPost(t, ts, "id=rec&rec=c", seqChunk(1)); code != 400 {
		t.Fatalf("rec without seq: %d %v", code, m)
	}
	if got := ts.received(t, "rec"); !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want %d", len(got), len(want))
	}
}

// waitGone waits until id's session has left the registry.
func waitGone(t *testing.T, ts *testServer, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, live := ts.reg.Info(id); !live {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still has a session 10 s after end=1", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
