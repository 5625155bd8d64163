package transport

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// keepUnacknowledged sets TCP_USER_TIMEOUT on c's socket: the kernel gives
// up on the connection once data it sent has gone unacknowledged for d. A
// peer that vanished without a word (a phone that lost its network) then
// costs at most d, instead of TCP's retransmissions (about 15 minutes), and
// so does its socket after the server closed it. Best effort: a connection
// that is not TCP keeps the kernel's default.
func keepUnacknowledged(c net.Conn, d time.Duration) {
	for {
		inner, ok := c.(interface{ NetConn() net.Conn }) // *tls.Conn
		if !ok {
			break
		}
		c = inner.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
