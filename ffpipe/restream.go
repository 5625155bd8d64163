package ffpipe

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// OutputState is what ffmpeg last said of one output. The primary's is
// always the zero value: its failure ends ffmpeg. ffmpeg says nothing when
// a restream first opens: RestreamConn tells whether it is up.
type OutputState struct {
	Down       bool   // its last (re)open failed; ffmpeg tries again every restreamRetry
	Err        string // why it is down, redacted
	Failures   int    // failed opens and writes since ffmpeg started
	Recoveries int    // times ffmpeg reopened it after a failure
}

// fifoLine matches what the fifo muxer of a restream says of its output
// (ffmpeg 5.1): "Error opening URL: why", "Recovery failed: why",
// "Recovery successful", each tagged with the fifo's address.
var fifoLine = regexp.MustCompile(`^\[fifo @ (0x[0-9a-f]+)\] (?:\[\w+\] )?(Error opening |Recovery failed: |Recovery successful)(.*)$`)

// slaveFailed matches the tee's word on an output it gives up (ffmpeg
// 5.1): the archive's, whose fifo does not recover, on a write error.
var slaveFailed = regexp.MustCompile(`^\[tee @ 0x[0-9a-f]+\] (?:\[\w+\] )?Slave muxer #(\d+) failed: (.*), continuing with`)

// restreams follows the restreams' and the archive's states from ffmpeg's
// stderr. Not safe for concurrent use: Proc guards it with its mu.
type restreams struct {
	urls      []string       // Config.Also
	record    string         // Config.Record
	fifos     map[string]int // a fifo's address → its restream, learnt from "Error opening URL"
	state     []OutputState  // per restream
	recordErr string         // why the archive stopped, redacted
}

func newRestreams(urls []string, record string) restreams {
	return restreams{urls: urls, record: record, fifos: map[string]int{}, state: make([]OutputState, len(urls))}
}

// line reads one raw stderr line; hide redacts the reason it keeps. A
// fifo whose output failed always tries to reopen it, and a failed open
// names the URL: that is how a fifo's address is tied to its restream. It
// tells whether the line was a restream's or the archive's.
func (r *restreams) line(raw string, hide func(string) string) bool {
	if m := slaveFailed.FindStringSubmatch(raw); m != nil && r.record != "" && m[1] == strconv.Itoa(len(r.urls)+1) {
		r.recordErr = hide(m[2])
		return true
	}
	m := fifoLine.FindStringSubmatch(raw)
	if m == nil {
		return false
	}
	if why, ok := strings.CutPrefix(m[3], r.record+": "); ok && m[2] == "Error opening " && r.record != "" {
		r.recordErr = hide(why)
		return true
	}
	r.note(m, hide)
	return true
}

func (r *restreams) note(m []string, hide func(string) string) {
	addr, what, rest := m[1], m[2], m[3]
	if what == "Error opening " {
		for i, u := range r.urls {
			if why, ok := strings.CutPrefix(rest, u+": "); ok {
				r.fifos[addr] = i
				r.state[i].Down, r.state[i].Err = true, hide(why)
				r.state[i].Failures++
				return
			}
		}
		return
	}
	i, ok := r.fifos[addr]
	if !ok {
		return // reopened at the first try: it was never seen down
	}
	switch what {
	case "Recovery successful":
		r.state[i].Down, r.state[i].Err = false, ""
		r.state[i].Recoveries++
	case "Recovery failed: ":
		r.state[i].Failures++
	}
}

// restreamWords tells the lines ffmpeg prints about restreams' connections
// once the primary is open: every try to reopen one prints a few, and they
// go to the debug log, not the warnings (the session logs each restream's
// failure and return, at its own pace). The primary's failures still
// explain ffmpeg's exit: they stay in the tail.
func restreamWords(line string) bool {
	for _, tag := range []string{"[fifo @", "[tcp @", "[tls @", "[rtmp @", "[srt @", "[tee @"} {
		if strings.HasPrefix(line, tag) {
			return true
		}
	}
	return false
}

// defaultPorts of the schemes the stall watch reads the connection of.
var defaultPorts = map[string]uint16{"rtmp": 1935, "rtmps": 443, "rtmpt": 80, "rtmpts": 443}

// primaryPeer tells whether a connection's peer is target's server, so
// that the stall watch reads the primary output's connection and not a
// restream's. A host name is resolved once, when first asked; if that
// fails, the port alone decides.
func primaryPeer(target string) func(netip.AddrPort) bool {
	u, err := url.Parse(target)
	port, tcp := defaultPorts[Scheme(target)]
	if err != nil || u.Host == "" || !tcp {
		return func(netip.AddrPort) bool { return false } // no TCP connection of its own
	}
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
		port = uint16(p)
	}
	host := u.Hostname()
	var addrs []netip.Addr
	resolved := false
	return func(peer netip.AddrPort) bool {
		if peer.Port() != port {
			return false
		}
		if !resolved {
			resolved = true
			if a, err := netip.ParseAddr(host); err == nil {
				addrs = []netip.Addr{a}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				addrs, _ = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
				cancel()
			}
		}
		if len(addrs) == 0 {
			return true
		}
		for _, a := range addrs {
			if a.Unmap() == peer.Addr().Unmap() {
				return true
			}
		}
		return false
	}
}
