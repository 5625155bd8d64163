package routing

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	tab, err := Parse(`
# YouTube for the studio, restreamed to Twitch: one line per ID
studio-1  rtmps://a.rtmps.youtube.com/live2/yt-key-1  rtmp://live.twitch.tv/app/tw-key
test?     rtmp://127.0.0.1/live/{id}
*         rtmp://127.0.0.1/other/{id}-x srt://127.0.0.1:9000?streamid={id}
`)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]string{
		"studio-1": {"rtmps://a.rtmps.youtube.com/live2/yt-key-1", "rtmp://live.twitch.tv/app/tw-key"},
		"studio-2": {"rtmp://127.0.0.1/other/studio-2-x", "srt://127.0.0.1:9000?streamid=studio-2"},
		"test1":    {"rtmp://127.0.0.1/live/test1"},
		"test12":   {"rtmp://127.0.0.1/other/test12-x", "srt://127.0.0.1:9000?streamid=test12"},
	} {
		if got := tab.OutputsFor(id, id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %q, want %q", id, got, want)
		}
	}
	// The pattern matches the live ID; a hook's name only fills {id}.
	if got := tab.OutputsFor("test1", "studio-1"); !reflect.DeepEqual(got, []string{"rtmp://127.0.0.1/live/studio-1"}) {
		t.Errorf("test1 named studio-1 by a hook: %q, want test1's rule with the name in it", got)
	}
	none, _ := Parse("a* rtmp://h/{id}")
	if got := none.OutputsFor("b", "b"); got != nil {
		t.Errorf("no rule matches: %q", got)
	}
}

// A file that cannot be what its author meant is refused whole, and the
// error names the line, never a key.
func TestTableRefuses(t *testing.T) {
	for _, bad := range []string{
		"room-1",
		"[ rtmp://h/x",
		"a* not-a-url-SECRETKEY",
		"a file:///var/lib/SECRETKEY",
		"a http://h/SECRETKEY",
		"a rtmp:///live/SECRETKEY",
		// One key for every room: each stream would take the others' place.
		"room-* rtmps://a.rtmps.youtube.com/live2/SECRETKEY",
		"room-? rtmp://h/live/{id} rtmp://live.twitch.tv/app/SECRETKEY",
		"* srt://h:9000?streamid=SECRETKEY",
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q parsed", bad)
		} else if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "not-a-u") {
			t.Errorf("the error shows the key: %v", err)
		} else {
			t.Logf("%s: %v", bad, err)
		}
	}
}

// A reload that fails keeps the table in force.
func TestReload(t *testing.T) {
	name := filepath.Join(t.TempDir(), "outputs")
	os.WriteFile(name, []byte("* rtmp://a/live/{id}\n"), 0o644)
	f, err := Open(name)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(name, []byte("* rtmp://b/live/{id}\n"), 0o644)
	if _, err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := f.OutputsFor("x", "x"); got[0] != "rtmp://b/live/x" {
		t.Errorf("after a reload: %q", got)
	}
	os.WriteFile(name, []byte("broken\n"), 0o644)
	if _, err := f.Reload(); err == nil {
		t.Error("a broken file was accepted")
	}
	if got := f.OutputsFor("x", "x"); got[0] != "rtmp://b/live/x" {
		t.Errorf("after a broken reload: %q", got)
	}
}
