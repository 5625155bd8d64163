package ffpipe

import (
	"net/netip"
	"reflect"

	"ffmpeg-publisher/internal/rtmptest"
	"strings"
	"testing"
)

// The lines Debian's ffmpeg 5.1 prints when a restream's server goes away
// and comes back (measured with nginx-rtmp stopped for 5 s).
func TestRestreamStates(t *testing.T) {
	r := newRestreams([]string{"rtmp://b/live/x?k=SECRET", "srt://c:9000"}, "")
	hide := func(s string) string { return strings.ReplaceAll(s, "SECRET", "…") }
	steps := []struct {
		line string
		want []OutputState
	}{
		{"[fifo @ 0x55e3cd656340] Recovery successful", []OutputState{{}, {}}}, // a fifo never seen down
		{"[tcp @ 0x7fa8740012c0] [error] Connection to tcp://b:1935?tcp_nodelay=1 failed: Connection refused", []OutputState{{}, {}}},
		{"[fifo @ 0x55e3cd656340] [error] Error opening rtmp://b/live/x?k=SECRET: Connection refused", []OutputState{{Down: true, Err: "Connection refused", Failures: 1}, {}}},
		{"[fifo @ 0x55e3cd656340] [error] Recovery failed: Connection refused", []OutputState{{Down: true, Err: "Connection refused", Failures: 2}, {}}},
		{"[fifo @ 0x55e3cd656999] [error] Error opening srt://c:9000: Input/output error", []OutputState{{Down: true, Err: "Connection refused", Failures: 2}, {Down: true, Err: "Input/output error", Failures: 1}}},
		{"[fifo @ 0x55e3cd656340] [info] Recovery successful", []OutputState{{Recoveries: 1, Failures: 2}, {Down: true, Err: "Input/output error", Failures: 1}}},
	}
	for i, s := range steps {
		r.line(s.line, hide)
		if !reflect.DeepEqual(r.state, s.want) {
			t.Fatalf("after line %d %q: %+v, want %+v", i, s.line, r.state, s.want)
		}
	}
}

// What ffmpeg 5.1 prints when the archive cannot be written (measured on a
// full tmpfs) or opened: the reason is kept; a restream's slave is not the
// archive's.
func TestRecordErr(t *testing.T) {
	r := newRestreams([]string{"rtmp://b/live/x"}, "/rec/x.m4a")
	hide := func(s string) string { return s }
	r.line("[tee @ 0x55ac7bba0400] [error] Slave muxer #1 failed: Broken pipe, continuing with 2/3 slaves.", hide)
	if r.recordErr != "" {
		t.Errorf("a restream's failure taken for the archive's: %q", r.recordErr)
	}
	r.line("[tee @ 0x55ac7bba0400] [error] Slave muxer #2 failed: No space left on device, continuing with 2/3 slaves.", hide)
	if r.recordErr != "No space left on device" {
		t.Errorf("full disk: %q", r.recordErr)
	}
	r = newRestreams(nil, "/rec/y.m4a")
	r.line("[fifo @ 0x55e3cd656340] [error] Error opening /rec/y.m4a: Permission denied", hide)
	if r.recordErr != "Permission denied" {
		t.Errorf("unopened: %q", r.recordErr)
	}
}

func TestPrimaryPeer(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		target string
		peer   string
		want   bool
	}{
		{"rtmp://127.0.0.1:19601/live/x", "127.0.0.1:19601", true},
		{"rtmp://127.0.0.1:19601/live/x", "127.0.0.1:19602", false},
		{"rtmp://127.0.0.1/live/x", "127.0.0.1:1935", true},
		{"rtmps://[::1]/live/x", "[::1]:443", true},
		{"rtmps://[::1]/live/x", "127.0.0.1:443", false},
		{"rtmp://localhost:19601/live/x", "127.0.0.1:19601", true},
		{"srt://127.0.0.1:9000", "127.0.0.1:9000", false}, // not TCP: no default port, and SRT has no connection to read
	} {
		if got := primaryPeer(tc.target)(ap(tc.peer)); got != tc.want {
			t.Errorf("primaryPeer(%q)(%s) = %v, want %v", tc.target, tc.peer, got, tc.want)
		}
	}
}

// The stall watch reads the primary output's connection: over TLS (rtmps)
// as over plain RTMP, and not a restream's, whichever opened first.
func TestConnIsThePrimarysOverTLS(t *testing.T) {
	t.Parallel()
	ffmpeg := rtmptest.Require(t, "ffmpeg", "nginx")[0]
	primary, restream := rtmptest.StartTLS(t), rtmptest.Start(t)
	p, err := Start(t.Context(), Config{Binary: ffmpeg, Target: primary.TLSURL + "/conn",
		Also: []string{restream.URL + "/conn"}, TLSCA: primary.CAFile}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.Kill(); waitDone(t, p) }()
	go p.Write(rtmptest.MP3(t, 2, 16000, 1, "32k", true))
	var st ConnState
	waitFor(t, "the primary's TLS connection, read by nginx", func() bool {
		st, err = p.Conn()
		return err == nil && st.PeerSeen && st.Read > 0
	})
	if st.Remote.String() != primary.TLSAddr {
		t.Errorf("the watch reads %s, want the primary's %s (the restream is %s)", st.Remote, primary.TLSAddr, restream.Addr)
	}
}
