package session

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/ffpipe"
)

// stallRun feeds a stallWatch one observation per second, as run does.
type stallRun struct {
	t     *testing.T
	w     stallWatch
	proc  *ffpipe.Proc
	start time.Time
	now   time.Time
}

const testStallTimeout = 5 * time.Second

func newStallRun(t *testing.T) *stallRun {
	start := time.Unix(1000, 0)
	return &stallRun{t: t, proc: &ffpipe.Proc{}, start: start, now: start}
}

// look advances the clock by a second and observes a published ffmpeg
// whose output and input both advance, with conn as its connection.
func (r *stallRun) look(conn ffpipe.ConnState) stallVerdict {
	r.now = r.now.Add(time.Second)
	return r.w.observe(stallObs{at: r.now, proc: r.proc, published: true, out: r.now.Sub(r.start),
		lastWrite: r.now, conn: conn}, testStallTimeout)
}

var (
	server = netip.MustParseAddrPort("127.0.0.1:1935")
	remote = netip.MustParseAddrPort("192.0.2.1:1935")
)

// A server on this host that stops reading: its socket fills, its read
// count stands still. Reported once, after the stall timeout and not
// before; its return is reported once.
func TestStallWatchLocalServerStopsReading(t *testing.T) {
	r := newStallRun(t)
	read := uint64(0)
	for range 10 { // healthy: reads everything at once
		read += 8000
		if v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Read: read}); v != (stallVerdict{}) {
			t.Fatalf("healthy server: %+v", v)
		}
	}
	frozen := r.now
	var reported time.Time
	for i := range 12 {
		v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Unread: 8000 * (i + 1), Read: read})
		if v.restart != "" || v.reads {
			t.Fatalf("frozen: %+v", v)
		}
		if v.stalled != "" {
			if !reported.IsZero() {
				t.Fatalf("reported twice: %+v", v)
			}
			reported = r.now
			if !strings.Contains(v.stalled, "stalled") || !strings.Contains(v.stalled, server.String()) || !strings.Contains(v.stalled, "read nothing") {
				t.Errorf("reason: %s", v.stalled)
			}
		}
	}
	// The first look sees bytes held; five seconds later none were read.
	if want := frozen.Add(time.Second + testStallTimeout); !reported.Equal(want) {
		t.Errorf("reported %s after the freeze, want %s", reported.Sub(frozen), want.Sub(frozen))
	}
	v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Unread: 1000, Read: read + 96000})
	if !v.reads {
		t.Errorf("thawed: %+v, want reads again", v)
	}
	if v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Read: read + 97000}); v != (stallVerdict{}) {
		t.Errorf("after the return: %+v", v)
	}
}

// A busy server on this host holds unread bytes at every look but reads
// between looks: not a stall.
func TestStallWatchBusyServerIsNotStalled(t *testing.T) {
	r := newStallRun(t)
	for i := range 60 {
		if v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Unread: 3000, Read: uint64(i) * 8000}); v != (stallVerdict{}) {
			t.Fatalf("look %d: %+v", i, v)
		}
	}
}

// A remote server is seen through its acknowledgements: unacknowledged
// bytes at every look are normal on a long path while the count advances;
// when it stands still (buffers full, path dead) that is a stall.
func TestStallWatchRemoteServer(t *testing.T) {
	r := newStallRun(t)
	acked := uint64(0)
	for range 30 {
		acked += 8000
		if v := r.look(ffpipe.ConnState{Remote: remote, Unacked: 2500, Acked: acked}); v != (stallVerdict{}) {
			t.Fatalf("long path: %+v", v)
		}
	}
	var stalled string
	for range 6 {
		if v := r.look(ffpipe.ConnState{Remote: remote, Unacked: 4096, Acked: acked}); v.stalled != "" {
			stalled = v.stalled
		}
	}
	if !strings.Contains(stalled, "acknowledged nothing") || !strings.Contains(stalled, remote.String()) {
		t.Errorf("reason: %q", stalled)
	}
	if v := r.look(ffpipe.ConnState{Remote: remote, Acked: acked + 4096}); !v.reads {
		t.Errorf("drained: %+v, want reads again", v)
	}
}

// A new ffmpeg after a reported stall keeps the report until its own
// connection is seen flowing; its first look proves nothing.
func TestStallWatchReportOutlivesTheProcess(t *testing.T) {
	r := newStallRun(t)
	for i := range 7 {
		r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Unread: 100 * (i + 1)})
	}
	if !r.w.notReading {
		t.Fatal("the stall was not reported")
	}
	r.proc = &ffpipe.Proc{}
	if v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Unread: 1537}); v != (stallVerdict{}) {
		t.Errorf("new ffmpeg's first look: %+v", v)
	}
	if v := r.look(ffpipe.ConnState{Remote: server, PeerSeen: true, Read: 1537}); !v.reads {
		t.Errorf("new ffmpeg's connection drained: %+v, want reads again", v)
	}
}

// No connection to look at (not RTMP, or ffmpeg gone), or not published
// yet: no verdict about the server.
func TestStallWatchWithoutConnection(t *testing.T) {
	r := newStallRun(t)
	for i := range 20 {
		r.now = r.now.Add(time.Second)
		o := stallObs{at: r.now, proc: r.proc, published: i%2 == 0, out: r.now.Sub(r.start), lastWrite: r.now,
			conn: ffpipe.ConnState{Remote: server, PeerSeen: true, Unread: 100}}
		if o.published {
			o.connErr = ffpipe.ErrNoConn
		}
		if v := r.w.observe(o, testStallTimeout); v != (stallVerdict{}) {
			t.Fatalf("look %d: %+v", i, v)
		}
	}
}

// Output that stops advancing while audio arrives restarts ffmpeg, once
// per stall timeout; the clock starts at the publish, and a client that
// sends nothing is not a stall.
func TestStallWatchOutput(t *testing.T) {
	var w stallWatch
	p := &ffpipe.Proc{}
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	obs := func(s int, published bool, out time.Duration, lastWrite time.Time) stallVerdict {
		return w.observe(stallObs{at: at(s), proc: p, published: published, out: out, lastWrite: lastWrite, connErr: ffpipe.ErrNoConn}, testStallTimeout)
	}
	for s := range 10 { // a slow start: audio arrives, nothing published
		if v := obs(s, false, 0, at(s)); v != (stallVerdict{}) {
			t.Fatalf("starting, %d s: %+v", s, v)
		}
	}
	var restarts []int
	for s := 10; s < 30; s++ { // published at 10 s, output stuck at 1 s
		if v := obs(s, true, time.Second, at(s)); v.restart != "" {
			restarts = append(restarts, s)
			if !strings.Contains(v.restart, "has not advanced for 5s") {
				t.Errorf("reason: %s", v.restart)
			}
		}
	}
	if want := []int{15, 20, 25}; len(restarts) != len(want) || restarts[0] != 15 || restarts[1] != 20 || restarts[2] != 25 {
		t.Errorf("restarts at %v s, want %v", restarts, want)
	}
	for s := 30; s < 50; s++ { // the client has been quiet since the last restart
		if v := obs(s, true, time.Second, at(25)); v != (stallVerdict{}) {
			t.Fatalf("quiet client, %d s: %+v", s, v)
		}
	}
}

func TestDrainMeter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type look struct {
		queued   int
		consumed uint64
		stuck    time.Duration
		flowing  bool
	}
	for name, looks := range map[string][]look{
		"empty":          {{0, 0, 0, true}, {0, 0, 0, true}},
		"held, consumed": {{10, 0, 0, false}, {10, 5, 0, true}, {10, 9, 0, true}},
		"held, stuck": {{10, 0, 0, false}, {20, 0, time.Second, false}, {30, 0, 2 * time.Second, false},
			{30, 1, 0, true}, {30, 1, time.Second, false}},
		"stuck after empty": {{0, 7, 0, true}, {5, 7, 0, false}, {5, 7, time.Second, false}},
	} {
		var d drainMeter
		for i, l := range looks {
			stuck, flowing := d.observe(t0.Add(time.Duration(i)*time.Second), l.queued, l.consumed)
			if stuck != l.stuck || flowing != l.flowing {
				t.Errorf("%s, look %d: %s, %v; want %s, %v", name, i, stuck, flowing, l.stuck, l.flowing)
			}
		}
	}
}
