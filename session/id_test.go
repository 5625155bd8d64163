package session

import (
	"regexp"
	"strings"
	"testing"
)

func TestTarget(t *testing.T) {
	for _, tc := range []struct{ base, id, want string }{
		{"rtmp://h/live", "abc", "rtmp://h/live/abc"},
		{"rtmp://h/live/", "abc", "rtmp://h/live/abc"},
		{"rtmp://h/app/{id}?token=x", "abc", "rtmp://h/app/abc?token=x"},
	} {
		if got := Target(tc.base, tc.id); got != tc.want {
			t.Errorf("Target(%q, %q) = %q, want %q", tc.base, tc.id, got, tc.want)
		}
	}
}

func FuzzValidID(f *testing.F) {
	oracle := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`) // the rule as the README states it
	for _, s := range []string{"abc", "A-b_9", strings.Repeat("x", 64), "", "../x", "%2e%2e", "a/b", "a?b", "a b", "直播", strings.Repeat("x", 65), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidID(id) != oracle.MatchString(id) {
			t.Fatalf("ValidID(%q) = %v, the rule says %v", id, ValidID(id), !ValidID(id))
		}
		if !ValidID(id) {
			return
		}
		if len(id) == 0 || len(id) > 64 {
			t.Fatalf("accepted %d characters", len(id))
		}
		for _, c := range id {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("accepted %q", c)
			}
		}
		if got := Target("rtmp://h/live", id); got != "rtmp://h/live/"+id {
			t.Fatalf("Target changed the id: %q", got)
		}
	})
}
