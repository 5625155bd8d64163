package whip

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Errors of an offer, for the HTTP reply.
var (
	ErrBadOffer = errors.New("the body is not an SDP offer")
	ErrNoOpus   = errors.New("the offer has no Opus audio to send: this server takes Opus only")
)

// Deliver takes the Opus packets of a peer, in order, gaps filled; an error
// ends the peer. Calls come from one goroutine and may block.
type Deliver func(pkts [][]byte) error

// Peer is one publisher's connection.
type Peer struct {
	pc      *webrtc.PeerConnection
	deliver Deliver

	ended   chan struct{} // closed when the connection is over
	endOnce sync.Once
	readers sync.WaitGroup // the audio track's reader

	mu     sync.Mutex // guards the fields below
	closed bool       // Close began: no new reader
	track  bool       // an audio track is being read
	err    error      // why it ended, nil for the remote's close or ours
	stats  rtpStats
}

// Accept answers offer; the peer hands the audio it receives to deliver
// until it ends. The answer holds every candidate (no trickle).
func (h *Host) Accept(offer string, deliver Deliver) (*Peer, string, error) {
	if err := CheckOffer(offer); err != nil {
		return nil, "", err
	}
	pc, err := h.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, "", err
	}
	p := &Peer{pc: pc, deliver: deliver, ended: make(chan struct{})}
	pc.OnTrack(p.onTrack)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			p.end(nil)
		}
	})
	answer, err := p.answer(offer, h.gather)
	if err != nil {
		p.Close()
		return nil, "", err
	}
	return p, answer, nil
}

func (p *Peer) answer(offer string, gather time.Duration) (string, error) {
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	gathered := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-time.After(gather):
		return "", errors.New("whip: ICE gathering did not complete")
	}
	return p.pc.LocalDescription().SDP, nil
}

// CheckOffer refuses an offer that is not SDP, or sends no Opus audio.
func CheckOffer(offer string) error {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(offer); err != nil {
		return fmt.Errorf("%w: %v", ErrBadOffer, err)
	}
	for _, m := range sd.MediaDescriptions {
		if m.MediaName.Media != "audio" || m.MediaName.Port.Value == 0 {
			continue
		}
		if _, recvonly := m.Attribute("recvonly"); recvonly {
			continue
		}
		if _, inactive := m.Attribute("inactive"); inactive {
			continue
		}
		for _, a := range m.Attributes {
			if a.Key == "rtpmap" && strings.Contains(strings.ToLower(a.Value), " opus/48000") {
				return nil
			}
		}
	}
	return ErrNoOpus
}

// onTrack reads the first Opus audio track; any other is left unread.
func (p *Peer) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	if tr.Kind() != webrtc.RTPCodecTypeAudio || !strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeOpus) {
		return
	}
	p.mu.Lock()
	if p.closed || p.track {
		p.mu.Unlock()
		return
	}
	p.track = true
	p.readers.Add(1)
	p.mu.Unlock()
	defer p.readers.Done()
	p.read(tr)
}

// read passes the track's audio on until the connection ends.
func (p *Peer) read(tr *webrtc.TrackRemote) {
	order := newReorder(reorderDepth)
	var tl timeline
	var ordered []*rtp.Packet
	var pkts [][]byte
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			pkts = pkts[:0]
			for _, o := range order.flush(ordered[:0]) {
				pkts = tl.frames(pkts, o)
			}
			if len(pkts) > 0 {
				p.deliver(pkts)
			}
			p.end(nil)
			return
		}
		now := time.Now()
		ordered = order.push(pkt, ordered[:0])
		pkts = pkts[:0]
		for _, o := range ordered {
			pkts = tl.frames(pkts, o)
		}
		p.mu.Lock()
		p.stats.received(pkt, now)
		p.stats.Late, p.stats.Filled = order.late, tl.filled
		p.mu.Unlock()
		if len(pkts) == 0 {
			continue
		}
		if err := p.deliver(pkts); err != nil {
			p.end(err)
			return
		}
	}
}

// end marks the connection over, with why (nil: closed).
func (p *Peer) end(err error) {
	p.endOnce.Do(func() {
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.ended)
	})
}

// Ended is closed when the connection is over: closed by either side,
// failed, or its audio refused. Close it then.
func (p *Peer) Ended() <-chan struct{} { return p.ended }

// Err is why the peer ended: what Deliver returned, or nil.
func (p *Peer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Stats returns the receiver's counters so far.
func (p *Peer) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.Stats
}

// Close ends the connection and waits for its reader.
func (p *Peer) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.end(nil)
	p.pc.Close()
	p.readers.Wait()
}
