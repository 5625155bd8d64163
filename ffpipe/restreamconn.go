package ffpipe

import (
	"net/netip"
	"sync"
)

// restreamConns finds each restream's TCP connection (rtmp, rtmps), so
// that its state is what the kernel sees rather than what ffmpeg has not
// complained about. A restream reconnects on its own: a connection that is
// gone is looked for again at the next look.
type restreamConns struct {
	mu    sync.Mutex // guards the fields below
	conns []restreamConn
}

type restreamConn struct {
	peer     func(netip.AddrPort) bool // nil: not a TCP output (srt)
	found    bool
	tuple    tcpTuple
	peerGone bool
}

func newRestreamConns(urls []string) *restreamConns {
	r := &restreamConns{conns: make([]restreamConn, len(urls))}
	for i, u := range urls {
		if _, tcp := defaultPorts[Scheme(u)]; tcp {
			r.conns[i].peer = primaryPeer(u)
		}
	}
	return r
}

// RestreamConn reports the kernel's view of output i's connection (i ≥ 1,
// as in Config.Outputs). ErrNoConn: not connected now, or not a TCP
// output.
func (p *Proc) RestreamConn(i int) (ConnState, error) {
	select {
	case <-p.done:
		return ConnState{}, ErrNoConn
	default:
	}
	r := p.rconns
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 1 || i > len(r.conns) || r.conns[i-1].peer == nil {
		return ConnState{}, ErrNoConn
	}
	c := &r.conns[i-1]
	if c.found {
		st, err := stateOf(diagLookup, c.tuple, &c.peerGone)
		if err == nil {
			return st, nil
		}
		c.found = false // closed: ffmpeg reconnects with another
	}
	primary, _ := p.primaryTupleKnown()
	row, err := findConn(p.Pid(), func(t tcpTuple) bool {
		if t == primary || !c.peer(t.Remote) {
			return false
		}
		for j := range r.conns {
			if r.conns[j].found && r.conns[j].tuple == t {
				return false // another restream's, to the same server
			}
		}
		return true
	})
	if err != nil {
		return ConnState{}, err
	}
	c.tuple, c.found, c.peerGone = row.tcpTuple, true, false
	return stateOf(diagLookup, c.tuple, &c.peerGone)
}

// primaryTupleKnown is the primary's connection if Conn found it.
func (p *Proc) primaryTupleKnown() (tcpTuple, bool) {
	p.conn.mu.Lock()
	defer p.conn.mu.Unlock()
	return p.conn.tuple, p.conn.found
}
