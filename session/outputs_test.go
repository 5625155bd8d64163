package session

import (
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/ffpipe"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestOutputsFor(t *testing.T) {
	c := Config{RTMPBase: "rtmp://h/live"}
	if got := c.OutputsFor("a"); !reflect.DeepEqual(got, []string{"rtmp://h/live/a"}) {
		t.Errorf("without a route: %q", got)
	}
	c.Route = func(id, name string) []string {
		if id == "none" {
			return nil
		}
		return []string{"rtmp://p/" + name, "srt://r:9000?streamid=" + name}
	}
	if got := c.OutputsFor("b"); !reflect.DeepEqual(got, []string{"rtmp://p/b", "srt://r:9000?streamid=b"}) {
		t.Errorf("routed: %q", got)
	}
	if got := c.OutputsFor("none"); !reflect.DeepEqual(got, []string{"rtmp://h/live/none"}) {
		t.Errorf("a route with nothing for the ID: %q", got)
	}
	// A hook's name goes in the URLs; the route is still chosen by the ID.
	named := c
	named.Name = "none"
	if got := named.OutputsFor("b"); !reflect.DeepEqual(got, []string{"rtmp://p/none", "srt://r:9000?streamid=none"}) {
		t.Errorf("named by a hook: %q, want b's route with the name in it", got)
	}
	if got := Target("srt://r:9000", "x"); got != "srt://r:9000" {
		t.Errorf("an srt base gets no path: %q", got)
	}
}

// Info's outputs are a JSON array in replies and decode back; their URLs
// are redacted.
func TestOutputStatesInInfo(t *testing.T) {
	s := &Session{id: "room1", outputs: []string{"rtmp://h/live/room1", "rtmps://f/rtmp/room1-SECRETKEY"}}
	info := Info{Outputs: s.outputStatesLocked()}
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "SECRETKEY") {
		t.Errorf("the key is in %s", b)
	}
	if !strings.Contains(string(b), `"outputs":[{"index":0,"url":"rtmp://h/live/room1","state":"waiting"},{"index":1,"url":"rtmps://f/rtmp/room1…","state":"waiting"}]`) {
		t.Errorf("outputs: %s", b)
	}
	var back Info
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if l := back.Outputs.List(); len(l) != 2 || l[1].URL != "rtmps://f/rtmp/room1…" {
		t.Errorf("decoded: %+v", l)
	}
	if b, _ := json.Marshal(Info{}); !strings.Contains(string(b), `"outputs":[]`) {
		t.Errorf("no outputs yet: %s", b)
	}
}

// A restream down for ten minutes, looked at every second, is logged
// failed once, then still down at a doubling pace (10 s, 20 s, … up to
// 5 min), then back once: a handful of lines, not one per retry.
func TestRestreamDownLogsBackOff(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	hook := test.NewLocal(l)
	s := &Session{log: logrus.NewEntry(l)}
	var v restreamView
	start := time.Now()
	ff := ffpipe.OutputState{Down: true, Err: "Connection refused"}
	for sec := 0; sec <= 600; sec++ {
		ff.Failures = sec/2 + 1
		s.noteRestream(1, &v, ff, OutputDown, ff.Err, start.Add(time.Duration(sec)*time.Second))
		v.state, v.last = OutputDown, ff
	}
	ff.Down, ff.Recoveries = false, 1
	s.noteRestream(1, &v, ff, OutputPublishing, "", start.Add(601*time.Second))
	counts := map[string]int{}
	for _, e := range hook.AllEntries() {
		counts[e.Message]++
	}
	failed, still, back := counts["output failed; ffmpeg retries it, the other outputs go on"], counts["output still down; ffmpeg retries it"], counts["output publishes again"]
	if failed != 1 || back != 1 || still < 4 || still > 8 {
		t.Errorf("logged %v; want the failure once, 4 to 8 reminders, the return once", counts)
	}
	for n := 1; n < 20; n++ {
		if d := downLogAfter(n); d > downLogMax || d < downLogFirst*4/5 {
			t.Errorf("reminder %d after %s", n, d)
		}
	}
}
