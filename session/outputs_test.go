package session

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
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
