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
# YouTube for the studio, restreamed to Twitch
studio-*  rtmps://a.rtmps.youtube.com/live2/yt-key-1  rtmp://live.twitch.tv/app/tw-key
test?     rtmp://127.0.0.1/live/{id}
*         rtmp://127.0.0.1/other/{id}-x
`)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]string{
		"studio-1": {"rtmps://a.rtmps.youtube.com/live2/yt-key-1", "rtmp://live.twitch.tv/app/tw-key"},
		"test1":    {"rtmp://127.0.0.1/live/test1"},
		"test12":   {"rtmp://127.0.0.1/other/test12-x"},
	} {
		if got := tab.OutputsFor(id); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %q, want %q", id, got, want)
		}
	}
	none, _ := Parse("a* rtmp://h/x")
	if got := none.OutputsFor("b"); got != nil {
		t.Errorf("no rule matches: %q", got)
	}
	for _, bad := range []string{"room-1", "[ rtmp://h/x", "a* not-a-url-SECRETKEY"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q parsed", bad)
		} else if strings.Contains(err.Error(), "SECRETKEY") {
			t.Errorf("the error shows the key: %v", err)
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
	if got := f.OutputsFor("x"); got[0] != "rtmp://b/live/x" {
		t.Errorf("after a reload: %q", got)
	}
	os.WriteFile(name, []byte("broken\n"), 0o644)
	if _, err := f.Reload(); err == nil {
		t.Error("a broken file was accepted")
	}
	if got := f.OutputsFor("x"); got[0] != "rtmp://b/live/x" {
		t.Errorf("after a broken reload: %q", got)
	}
}
