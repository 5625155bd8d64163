package ffpipe

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// diagConn is a sock_diag netlink socket kept open for one process's
// lookups: a look costs a send and a receive, not also a socket and a
// close, at every stall check of every stream. Not safe for concurrent
// use: connFinder's mu guards it.
type diagConn struct {
	fd     int
	open   bool
	closed bool // the process ended: no more lookups
	buf    []byte
}

// lookup is diagLookup on the kept socket; a failed exchange drops the
// socket, so the next look starts clean.
func (d *diagConn) lookup(t tcpTuple) (diagSock, error) {
	if d.closed {
		return diagSock{}, ErrNoConn
	}
	if !d.open {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return diagSock{}, fmt.Errorf("sock_diag: %w", err)
		}
		d.fd, d.open = fd, true
		if d.buf == nil {
			d.buf = make([]byte, 4096)
		}
	}
	if err := unix.Sendto(d.fd, diagRequest(t), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		d.drop()
		return diagSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	// The kernel answers a single-socket request within the send, in one
	// message: nothing to wait for, nothing left over for the next look.
	n, _, err := unix.Recvfrom(d.fd, d.buf, unix.MSG_DONTWAIT)
	if err != nil {
		d.drop()
		return diagSock{}, fmt.Errorf("sock_diag: %w", err)
	}
	return parseDiagReply(d.buf[:n])
}

func (d *diagConn) drop() {
	if d.open {
		unix.Close(d.fd)
		d.open = false
	}
}

// close releases the socket for good.
func (d *diagConn) close() {
	d.drop()
	d.closed = true
}

// close releases the finder's netlink socket once its process has ended.
func (f *connFinder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.diag.close()
}
