package ffpipe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sock_diag netlink ABI (linux/inet_diag.h); golang.org/x/sys has the
// constants and struct tcp_info but not these layouts.
const (
	inetDiagReqV2Size = 56 // struct inet_diag_req_v2
	inetDiagMsgSize   = 72 // struct inet_diag_msg
	inetDiagInfo      = 2  // INET_DIAG_INFO: the attribute carrying struct tcp_info
)

var (
	// Offsets of the tcp_info counters read here; a kernel older than
	// Linux 4.1 sends a shorter struct without them.
	offBytesAcked    = int(unsafe.Offsetof(unix.TCPInfo{}.Bytes_acked))
	offBytesReceived = int(unsafe.Offsetof(unix.TCPInfo{}.Bytes_received))
)

// diagSock is what the kernel says about one TCP socket.
type diagSock struct {
	rqueue        uint32 // received, not read by the owner
	wqueue        uint32 // written, not acknowledged by the peer
	bytesAcked    uint64
	bytesReceived uint64
}

// diagLookup asks the kernel about the socket whose own end is t.Local and
// whose peer is t.Remote, in this process's network namespace. It returns
// ErrNoConn if there is no such established connection.
func diagLookup(t tcpTuple) (diagSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return diagSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, diagRequest(t), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return diagSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 4096)
	// The kernel answers a single-socket request within the send: nothing
	// to wait for.
	n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
	if err != nil {
		return diagSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	return parseDiagReply(buf[:n])
}

// diagRequest builds a netlink message asking for one TCP socket and its
// tcp_info.
func diagRequest(t tcpTuple) []byte {
	b := make([]byte, unix.SizeofNlMsghdr+inetDiagReqV2Size)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST)
	r := b[unix.SizeofNlMsghdr:]
	r[0] = unix.AF_INET
	if t.Local.Addr().Is6() {
		r[0] = unix.AF_INET6
	}
	r[1] = unix.IPPROTO_TCP
	r[2] = 1 << (inetDiagInfo - 1)
	ne.PutUint32(r[4:], 1<<tcpEstablished)
	id := r[8:] // struct inet_diag_sockid
	binary.BigEndian.PutUint16(id[0:], t.Local.Port())
	binary.BigEndian.PutUint16(id[2:], t.Remote.Port())
	putAddr(id[4:20], t.Local)
	putAddr(id[20:36], t.Remote)
	ne.PutUint32(id[40:], ^uint32(0)) // INET_DIAG_NOCOOKIE
	ne.PutUint32(id[44:], ^uint32(0))
	return b
}

func putAddr(dst []byte, a netip.AddrPort) {
	if a.Addr().Is4() {
		v4 := a.Addr().As4()
		copy(dst, v4[:])
		return
	}
	v6 := a.Addr().As16()
	copy(dst, v6[:])
}

// parseDiagReply reads the answer to diagRequest.
func parseDiagReply(b []byte) (diagSock, error) {
	ne := binary.NativeEndian
	if len(b) < unix.SizeofNlMsghdr {
		return diagSock{}, errors.New("sock_diag: short reply")
	}
	msgLen := int(ne.Uint32(b[0:]))
	if msgLen < unix.SizeofNlMsghdr || msgLen > len(b) {
		return diagSock{}, errors.New("sock_diag: bad reply length")
	}
	body := b[unix.SizeofNlMsghdr:msgLen]
	switch ne.Uint16(b[4:]) {
	case unix.NLMSG_ERROR:
		if len(body) < 4 {
			return diagSock{}, errors.New("sock_diag: short error")
		}
		errno := unix.Errno(-int32(ne.Uint32(body)))
		if errno == unix.ENOENT {
			return diagSock{}, ErrNoConn
		}
		return diagSock{}, fmt.Errorf("sock_diag: %w", errno)
	case unix.SOCK_DIAG_BY_FAMILY:
	default:
		return diagSock{}, errors.New("sock_diag: unexpected reply")
	}
	if len(body) < inetDiagMsgSize {
		return diagSock{}, errors.New("sock_diag: short reply")
	}
	if body[1] != tcpEstablished {
		return diagSock{}, ErrNoConn
	}
	s := diagSock{rqueue: ne.Uint32(body[56:]), wqueue: ne.Uint32(body[60:])}
	for attrs := body[inetDiagMsgSize:]; len(attrs) >= 4; {
		l, typ := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
		if l < 4 || l > len(attrs) {
			break
		}
		if typ == inetDiagInfo {
			info := attrs[4:l]
			if len(info) < offBytesReceived+8 {
				return diagSock{}, errors.New("sock_diag: tcp_info without byte counters (Linux < 4.1)")
			}
			s.bytesAcked = ne.Uint64(info[offBytesAcked:])
			s.bytesReceived = ne.Uint64(info[offBytesReceived:])
			return s, nil
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	return diagSock{}, errors.New("sock_diag: reply without tcp_info")
}
