package ffpipe

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
)

// ErrNoConn means ffmpeg has no established TCP connection: its output is
// not a network one, it is not connected yet, or it has exited.
var ErrNoConn = errors.New("ffmpeg has no TCP connection")

// ConnState is the kernel's view of ffmpeg's output connection (for RTMP,
// its connection to the server), read without sending it a byte.
type ConnState struct {
	Remote   netip.AddrPort // the server's address
	Unacked  int            // bytes ffmpeg wrote that the server has not acknowledged, sent or not
	Acked    uint64         // bytes the server acknowledged since the connection opened
	PeerSeen bool           // the server's end of the connection is on this host, so the two below are known
	Unread   int            // bytes the server's socket holds that the server has not read
	Read     uint64         // bytes the server has read from its socket in all
}

// tcpTuple names one end of a TCP connection: its own and its peer's
// address.
type tcpTuple struct {
	Local, Remote netip.AddrPort
}

// reversed is the same connection seen from its other end.
func (t tcpTuple) reversed() tcpTuple { return tcpTuple{Local: t.Remote, Remote: t.Local} }

// connFinder remembers which connection is ffmpeg's, so that the socket
// tables are read once per process rather than at every look.
type connFinder struct {
	// isPrimary tells the primary output's connection from the
	// restreams'; nil: ffmpeg has one output.
	isPrimary func(netip.AddrPort) bool

	mu       sync.Mutex // guards the fields below
	found    bool
	misses   int  // looks that found none once the output was open
	none     bool // noConnLooks of them: the output is not a TCP one
	tuple    tcpTuple
	inode    uint64 // its socket, to tell when ffmpeg closes it
	diag     diagConn
	peerGone bool // the peer's end was not found on this host: do not ask again
}

// Conn reports the kernel's view of ffmpeg's output connection. It reads
// /proc once per process to find the socket, then asks the kernel about
// that one connection (sock_diag), which costs a few microseconds.
func (p *Proc) Conn() (ConnState, error) {
	select {
	case <-p.done:
		return ConnState{}, ErrNoConn // the pid may belong to someone else now
	default:
	}
	f := &p.conn
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.none {
		return ConnState{}, ErrNoConn
	}
	if !f.found {
		open := false
		select {
		case <-p.ready: // ffmpeg connects before it reports its output open
			open = true
		default:
		}
		r, err := findConn(p.Pid(), func(t tcpTuple) bool { return f.isPrimary == nil || f.isPrimary(t.Remote) })
		if err != nil {
			var notRead *lookError
			if open && errors.Is(err, ErrNoConn) && !errors.As(err, &notRead) {
				f.misses++
				f.none = f.misses >= noConnLooks
			}
			return ConnState{}, err
		}
		select {
		case <-p.done:
			return ConnState{}, ErrNoConn // what was read may be another process's
		default:
		}
		f.tuple, f.inode, f.found = r.tcpTuple, r.Inode, true
	}
	return stateOf(f.diag.lookup, f.tuple, &f.peerGone) // the process's kept socket: see diagConn
}

// stateOf asks the kernel, through lookup, about the connection t and,
// unless *peerGone, about its peer's end on this host, which it marks gone
// when not found.
func stateOf(lookup func(tcpTuple) (diagSock, error), t tcpTuple, peerGone *bool) (ConnState, error) {
	own, err := lookup(t)
	if err != nil {
		return ConnState{}, err
	}
	st := ConnState{Remote: t.Remote, Unacked: int(own.wqueue), Acked: own.bytesAcked}
	if *peerGone {
		return st, nil
	}
	peer, err := lookup(t.reversed())
	switch {
	case errors.Is(err, ErrNoConn):
		*peerGone = true // a remote server: its socket is not ours to see
	case err != nil:
		return ConnState{}, err
	default:
		st.PeerSeen = true
		st.Unread = int(peer.rqueue)
		st.Read = peer.bytesReceived - uint64(peer.rqueue)
	}
	return st, nil
}

// noConnLooks is how many looks after the output opened must find no
// connection before Conn stops looking: a table read is not a snapshot, and
// one may miss a row.
const noConnLooks = 3

// lookError is ErrNoConn because /proc could not be read (EMFILE, a process
// going away): not evidence that there is no connection.
type lookError struct{ err error }

func (e *lookError) Error() string        { return "reading ffmpeg's sockets: " + e.err.Error() }
func (e *lookError) Is(target error) bool { return target == ErrNoConn }

// findConn returns the established TCP connection among pid's open files
// that is wanted.
func findConn(pid int, wanted func(tcpTuple) bool) (tcpRow, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	inodes, err := socketInodes(dir + "/fd")
	if err != nil {
		return tcpRow{}, &lookError{err}
	}
	if len(inodes) == 0 {
		return tcpRow{}, ErrNoConn
	}
	read := 0
	for _, table := range []string{"/net/tcp", "/net/tcp6"} {
		b, err := os.ReadFile(dir + table)
		if err != nil {
			continue // no IPv6 in this kernel
		}
		read++
		rows, err := parseTCPTable(string(b))
		if err != nil {
			return tcpRow{}, fmt.Errorf("%s%s: %w", dir, table, err)
		}
		for _, r := range rows {
			if r.State == tcpEstablished && inodes[r.Inode] && wanted(r.tcpTuple) {
				return r, nil
			}
		}
	}
	if read == 0 {
		return tcpRow{}, &lookError{errors.New("no TCP table")}
	}
	return tcpRow{}, ErrNoConn
}

// socketInodes lists the inodes of the sockets open in an fd directory
// (links read "socket:[INODE]").
func socketInodes(fdDir string) (map[uint64]bool, error) {
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	inodes := map[uint64]bool{}
	for _, e := range ents {
		link, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := socketInode(link); ok {
			inodes[ino] = true
		}
	}
	return inodes, nil
}

func socketInode(link string) (uint64, bool) {
	s, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(s, 10, 64)
	return ino, err == nil
}

// tcpEstablished is TCP_ESTABLISHED in the st column of /proc/net/tcp.
const tcpEstablished = 1

// tcpRow is one row of /proc/net/tcp or tcp6.
type tcpRow struct {
	tcpTuple
	State int
	Inode uint64
}

// parseTCPTable parses /proc/net/tcp or /proc/net/tcp6: a header line,
// then "sl local rem st tx:rx tr:when retrnsmt uid timeout inode …". Its
// queue columns are not used: sock_diag gives them, and the counters that
// tell whether they drain, for one socket without listing them all.
func parseTCPTable(text string) ([]tcpRow, error) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) == 0 || !strings.Contains(lines[0], "local_address") {
		return nil, errors.New("not a TCP socket table")
	}
	var rows []tcpRow
	for _, line := range lines[1:] {
		r, err := parseTCPRow(line)
		if err != nil {
			return nil, fmt.Errorf("%w in %q", err, strings.TrimSpace(line))
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func parseTCPRow(line string) (tcpRow, error) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return tcpRow{}, errors.New("short row")
	}
	var r tcpRow
	var err error
	if r.Local, err = parseProcAddr(f[1]); err != nil {
		return r, err
	}
	if r.Remote, err = parseProcAddr(f[2]); err != nil {
		return r, err
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return r, fmt.Errorf("state: %w", err)
	}
	r.State = int(st)
	if r.Inode, err = strconv.ParseUint(f[9], 10, 64); err != nil {
		return r, fmt.Errorf("inode: %w", err)
	}
	return r, nil
}

// parseProcAddr parses "ADDR:PORT" as /proc/net/tcp prints it: the address
// as 32-bit words in host byte order, the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", s, err)
	}
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
