package ffpipe

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/internal/rtmptest"

	"golang.org/x/sys/unix"
)

const tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func TestParseTCPTable(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name string
		text string
		want []tcpRow
		err  bool
	}{
		{name: "header only", text: tcpHeader},
		{
			name: "IPv4 listener and both ends of a connection",
			text: tcpHeader +
				"   1: 0100007F:4BC7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23746 1 000000002def60e2 100 0 0 10 0\n" +
				"   8: 0100007F:4BC7 0100007F:85EE 01 00000000:000D6B01 00:00000000 00000000     0        0 23831 2 00000000c0d11fc7 20 15 0 16 -1\n" +
				"  11: 0A00020F:85EE C0A80101:0775 01 00000256:00000000 01:00000016 00000000     0        0 23450 2 00000000caf832d9 24 4 25 18 -1\n",
			want: []tcpRow{
				{tcpTuple{ap("127.0.0.1:19399"), ap("0.0.0.0:0")}, 0x0A, 23746},
				{tcpTuple{ap("127.0.0.1:19399"), ap("127.0.0.1:34286")}, tcpEstablished, 23831},
				{tcpTuple{ap("15.2.0.10:34286"), ap("1.1.168.192:1909")}, tcpEstablished, 23450},
			},
		},
		{
			name: "IPv6: loopback and an IPv4-mapped address",
			text: tcpHeader +
				"   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52330 1 0 100 0 0 10 0\n" +
				"   1: 0000000000000000FFFF00000100007F:8DC5 0000000000000000FFFF00000100007F:0780 01 00000000:00000000 00:00000000 00000000     0        0 52334 1 0 100 0 0 10 0\n",
			want: []tcpRow{
				{tcpTuple{ap("[::1]:8080"), ap("[::]:0")}, 0x0A, 52330},
				{tcpTuple{ap("127.0.0.1:36293"), ap("127.0.0.1:1920")}, tcpEstablished, 52334},
			},
		},
		{name: "not a socket table", text: "hello\n", err: true},
		{name: "short row", text: tcpHeader + "   1: 0100007F:4BC7 00000000:0000 0A\n", err: true},
		{name: "bad address", text: tcpHeader + "   1: 0100007:4BC7 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n", err: true},
		{name: "bad port", text: tcpHeader + "   1: 0100007F:XYZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n", err: true},
		{name: "bad inode", text: tcpHeader + "   1: 0100007F:4BC7 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x 1\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTCPTable(tc.text)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error: %v", err, tc.err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSocketInode(t *testing.T) {
	for link, want := range map[string]uint64{"socket:[23450]": 23450, "pipe:[23450]": 0, "socket:[]": 0, "socket:[12": 0, "/dev/null": 0} {
		if got, ok := socketInode(link); got != want || ok != (want != 0) {
			t.Errorf("socketInode(%q) = %d, %v; want %d", link, got, ok, want)
		}
	}
}

func TestParseDiagReply(t *testing.T) {
	ne := binary.NativeEndian
	msg := func(typ uint16, body []byte) []byte {
		b := make([]byte, unix.SizeofNlMsghdr+len(body))
		ne.PutUint32(b, uint32(len(b)))
		ne.PutUint16(b[4:], typ)
		copy(b[unix.SizeofNlMsghdr:], body)
		return b
	}
	errno := func(e unix.Errno) []byte {
		b := make([]byte, 4+unix.SizeofNlMsghdr)
		ne.PutUint32(b, uint32(-int32(e)))
		return b
	}
	sock := func(state byte, info []byte) []byte {
		b := make([]byte, inetDiagMsgSize, inetDiagMsgSize+4+len(info))
		b[1] = state
		ne.PutUint32(b[56:], 7)   // rqueue
		ne.PutUint32(b[60:], 300) // wqueue
		if info != nil {
			attr := make([]byte, 4)
			ne.PutUint16(attr, uint16(4+len(info)))
			ne.PutUint16(attr[2:], inetDiagInfo)
			b = append(append(b, attr...), info...)
		}
		return b
	}
	info := make([]byte, unix.SizeofTCPInfo)
	ne.PutUint64(info[offBytesAcked:], 1000)
	ne.PutUint64(info[offBytesReceived:], 50)

	got, err := parseDiagReply(msg(unix.SOCK_DIAG_BY_FAMILY, sock(tcpEstablished, info)))
	if want := (diagSock{rqueue: 7, wqueue: 300, bytesAcked: 1000, bytesReceived: 50}); err != nil || got != want {
		t.Errorf("established: %+v, %v; want %+v", got, err, want)
	}
	for name, tc := range map[string]struct {
		reply []byte
		want  error // nil: any error
	}{
		"no such socket":  {msg(unix.NLMSG_ERROR, errno(unix.ENOENT)), ErrNoConn},
		"not established": {msg(unix.SOCK_DIAG_BY_FAMILY, sock(8, info)), ErrNoConn},
		"refused":         {msg(unix.NLMSG_ERROR, errno(unix.EPERM)), unix.EPERM},
		"old kernel":      {msg(unix.SOCK_DIAG_BY_FAMILY, sock(tcpEstablished, info[:offBytesAcked])), nil},
		"no tcp_info":     {msg(unix.SOCK_DIAG_BY_FAMILY, sock(tcpEstablished, nil)), nil},
		"short":           {msg(unix.SOCK_DIAG_BY_FAMILY, make([]byte, 10)), nil},
		"truncated":       {msg(unix.SOCK_DIAG_BY_FAMILY, sock(tcpEstablished, info))[:40], nil},
	} {
		_, err := parseDiagReply(tc.reply)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
}

// waitFor polls cond until it holds, or fails after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// The kernel's view of a loopback connection whose reader does not read:
// the bytes wait unread on its side, acknowledged on ours; once read, the
// counters show it.
func TestDiagLookupSeesUnreadBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tuple := tcpTuple{netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())}
	const n = 5000
	if _, err := c.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	var own, peer diagSock
	waitFor(t, "the bytes to be acknowledged", func() bool {
		own, peer = mustLookup(t, tuple), mustLookup(t, tuple.reversed())
		return own.bytesAcked == n+1 // the SYN counts as one
	})
	if own.wqueue != 0 || peer.rqueue != n || peer.bytesReceived != n {
		t.Errorf("before the read: own %+v, peer %+v; want %d bytes unread by the peer", own, peer, n)
	}
	if _, err := io.ReadFull(s, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if peer = mustLookup(t, tuple.reversed()); peer.rqueue != 0 || peer.bytesReceived != n {
		t.Errorf("after the read: peer %+v", peer)
	}
	other := tcpTuple{tuple.Local, netip.AddrPortFrom(tuple.Remote.Addr(), 1)}
	if _, err := diagLookup(other); !errors.Is(err, ErrNoConn) {
		t.Errorf("a connection that does not exist: %v, want ErrNoConn", err)
	}
}

func mustLookup(t *testing.T, tu tcpTuple) diagSock {
	t.Helper()
	s, err := diagLookup(tu)
	if err != nil {
		t.Fatalf("%+v: %v", tu, err)
	}
	return s
}

// A real ffmpeg publishing to a server that takes the connection but does
// not read: Conn finds ffmpeg's socket and sees the handshake waiting
// unread on the server's side; once the server reads, it sees that too.
func TestConnOfRealFFmpeg(t *testing.T) {
	ffmpeg := rtmptest.Require(t, "ffmpeg")[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err := Start(t.Context(), Config{Binary: ffmpeg, Target: "rtmp://" + ln.Addr().String() + "/live/conn"}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if _, err := p.Conn(); !errors.Is(err, ErrNoConn) {
		t.Errorf("before ffmpeg connects: %v, want ErrNoConn", err)
	}
	go p.Write(rtmptest.MP3(t, 1, 16000, 1, "32k", true)) // ffmpeg opens its output once it has read some input
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const hello = 1 + 1536 // RTMP C0 and C1
	var st ConnState
	waitFor(t, "ffmpeg's handshake to arrive unread and be acknowledged", func() bool {
		st, err = p.Conn()
		return err == nil && st.Unread == hello && st.Acked == 1+hello // the ACK may trail the bytes
	})
	want := ConnState{Remote: netip.MustParseAddrPort(ln.Addr().String()), Acked: 1 + hello, PeerSeen: true, Unread: hello} // the SYN counts as one acked byte
	if st != want {
		t.Errorf("unread: %+v, want %+v", st, want)
	}
	if _, err := io.ReadFull(s, make([]byte, hello)); err != nil {
		t.Fatal(err)
	}
	want.Unread, want.Read = 0, hello
	if st, err = p.Conn(); err != nil || st != want {
		t.Errorf("read: %+v, %v; want %+v", st, err, want)
	}
	p.Kill()
	waitDone(t, p)
	if _, err := p.Conn(); !errors.Is(err, ErrNoConn) {
		t.Errorf("after exit: %v, want ErrNoConn", err)
	}
}

// A process without a TCP connection (the fake writes to a file) has none
// to report.
func TestConnWithoutSocket(t *testing.T) {
	cfg, _ := fake(t, fakeffmpeg.Normal)
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Conn(); !errors.Is(err, ErrNoConn) {
		t.Errorf("Conn = %v, want ErrNoConn", err)
	}
	p.Stop(time.Second)
}

// An output that is not a TCP connection (srt://, a file) is looked for in
// /proc a few times once the output is open, not at every look of the stall
// watch for ffmpeg's whole life.
func TestANonTCPOutputIsGivenUpOn(t *testing.T) {
	cfg, _ := fake(t, fakeffmpeg.Normal)
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(10 * time.Second)
	if _, err := p.Conn(); !errors.Is(err, ErrNoConn) {
		t.Fatalf("before the output is open: %v, want ErrNoConn", err)
	}
	if p.conn.none {
		t.Fatal("given up on a connection before the output was open")
	}
	p.Write([]byte("x"))
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no progress report")
	}
	for i := range noConnLooks {
		if p.conn.none {
			t.Fatalf("given up after %d looks, want %d", i, noConnLooks)
		}
		if _, err := p.Conn(); !errors.Is(err, ErrNoConn) {
			t.Fatalf("%v, want ErrNoConn", err)
		}
	}
	if !p.conn.none {
		t.Error("the open output's lack of a connection is looked for again at every look")
	}
}

// /proc that cannot be read says nothing about the connection: it is not
// counted as a look that found none.
func TestAnUnreadableProcIsNotNoConnection(t *testing.T) {
	_, err := findConn(1<<30, func(tcpTuple) bool { return true }) // no such process
	var notRead *lookError
	if !errors.Is(err, ErrNoConn) || !errors.As(err, &notRead) {
		t.Fatalf("%v: want ErrNoConn, marked as not read", err)
	}
}
