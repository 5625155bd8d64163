package session

import (
	"net"
	"net/url"
	"sync"
	"time"
)

// An RTMP server that stops reading (a hung process, SIGSTOP) does not show
// in ffmpeg for a long time: TCP buffers on both sides take its output
// (measured here: 30 s of 64 kbps audio into a frozen nginx-rtmp, and
// ffmpeg's progress kept advancing). The prober notices sooner: every
// probeEvery it opens a connection to each RTMP server in use and sends the
// start of an RTMP handshake; a server that accepts the connection but does
// not answer within the stall timeout is not serving. Sessions then say so
// (log, stream info) but keep their publish: restarting ffmpeg would throw
// away the audio held in its socket, and a new connection would hang too.

// probeEvery: one small connection per RTMP server every 2 s costs nothing
// and tells a stall well within the default 5 s stall timeout.
const probeEvery = 2 * time.Second

// probeIdle: a server no session asked about for this long is not probed.
const probeIdle = 10 * time.Second

type prober struct {
	timeout time.Duration

	mu     sync.Mutex // guards the fields below
	hosts  map[string]*hostHealth
	stop   chan struct{} // nil when the loop is not running
	done   chan struct{}
	closed bool
}

type hostHealth struct {
	wanted  time.Time // last asked about
	failing time.Time // since when probes fail; zero while healthy
	probing bool
}

func newProber(timeout time.Duration) *prober {
	return &prober{timeout: timeout, hosts: map[string]*hostHealth{}}
}

// rtmpHostPort returns host:port of an rtmp:// URL, or "" for others.
func rtmpHostPort(target string) string {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "rtmp" || u.Hostname() == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		port = "1935"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// stalledFor tells how long host has been failing probes (0: healthy or
// unknown) and keeps it probed.
func (p *prober) stalledFor(host string, now time.Time) time.Duration {
	if host == "" {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0
	}
	h := p.hosts[host]
	if h == nil {
		h = &hostHealth{}
		p.hosts[host] = h
	}
	h.wanted = now
	if p.stop == nil {
		p.stop, p.done = make(chan struct{}), make(chan struct{})
		go p.loop(p.stop, p.done)
	}
	if h.failing.IsZero() {
		return 0
	}
	return now.Sub(h.failing)
}

func (p *prober) loop(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	var running sync.WaitGroup
	defer running.Wait()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			p.mu.Lock()
			for host, h := range p.hosts {
				if now.Sub(h.wanted) > probeIdle {
					delete(p.hosts, host)
					continue
				}
				if h.probing {
					continue // the last probe still waits: it is failing
				}
				h.probing = true
				running.Add(1)
				go func() {
					defer running.Done()
					ok := handshakeAnswers(host, p.timeout, stop)
					p.mu.Lock()
					defer p.mu.Unlock()
					h.probing = false
					switch {
					case ok:
						h.failing = time.Time{}
					case h.failing.IsZero():
						h.failing = now
					}
				}()
			}
			p.mu.Unlock()
		}
	}
}

// handshakeAnswers sends C0 and C1 of an RTMP handshake and waits for the
// first byte of the answer.
func handshakeAnswers(host string, timeout time.Duration, stop <-chan struct{}) bool {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", host)
	if err != nil {
		return false
	}
	defer c.Close()
	finished := make(chan struct{})
	defer close(finished)
	go func() { // give up at once when the registry closes
		select {
		case <-stop:
			c.SetDeadline(time.Now())
		case <-finished:
		}
	}()
	c.SetDeadline(time.Now().Add(timeout))
	hello := make([]byte, 1+1536) // C0: version 3; C1: time, zeros, "random" bytes
	hello[0] = 3
	if _, err := c.Write(hello); err != nil {
		return false
	}
	var s0 [1]byte
	_, err = c.Read(s0[:])
	return err == nil
}

// close stops probing and waits for the probes in flight.
func (p *prober) close() {
	p.mu.Lock()
	stop, done := p.stop, p.done
	p.stop = nil
	p.closed = true
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}
