// Package whipclient is a WHIP publisher built with pion, for tests and
// the bench: it posts an offer, connects, and sends Opus packets it is
// given as RTP in real time, optionally losing and reordering some.
package whipclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Client is one publishing peer.
type Client struct {
	pc       *webrtc.PeerConnection
	track    *webrtc.TrackLocalStaticRTP
	http     *http.Client
	Resource string // the session's URL, from Location
	seq      uint16
	ts       uint32
}

// RefusedError is a reply other than 201 to the offer.
type RefusedError struct {
	Status int
	Body   string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("WHIP offer refused: %d %s", e.Status, e.Body)
}

// Publish offers to send Opus to endpoint (http://host/whip/ID) with
// bearer as the Authorization, and waits until the connection is up.
func Publish(ctx context.Context, endpoint, bearer string) (*Client, error) {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	c := &Client{pc: pc, http: &http.Client{Timeout: 10 * time.Second}, seq: uint16(rand.Uint32()), ts: rand.Uint32()}
	if err := c.publish(ctx, endpoint, bearer); err != nil {
		pc.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) publish(ctx context.Context, endpoint, bearer string) error {
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "whipclient")
	if err != nil {
		return err
	}
	c.track = track
	if _, err := c.pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		return err
	}
	connected := make(chan struct{})
	failed := make(chan struct{})
	c.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			close(connected)
		case webrtc.PeerConnectionStateFailed:
			close(failed)
		}
	})
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(offer); err != nil {
		return err
	}
	<-gathered
	answer, loc, err := Offer(ctx, c.http, endpoint, bearer, c.pc.LocalDescription().SDP)
	if err != nil {
		return err
	}
	c.Resource = loc
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return err
	}
	select {
	case <-connected:
		return nil
	case <-failed:
		return errors.New("WHIP connection failed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Offer posts an SDP offer and returns the answer and the session's URL.
func Offer(ctx context.Context, hc *http.Client, endpoint, bearer, offer string) (answer, location string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(offer))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", "", &RefusedError{resp.StatusCode, string(body)}
	}
	loc, err := resp.Location()
	if err != nil {
		return "", "", err
	}
	return string(body), loc.String(), nil
}

// Impair is what the network does to the packets sent: Loss of them lost,
// Reorder of them swapped with the next; Rand draws. The first packet
// arrives first and the last always arrives, so that the receiver can know
// of every loss.
type Impair struct {
	Loss, Reorder float64
	Rand          *rand.Rand
}

// Send sends pkts (20 ms Opus packets) in real time, as RTP; it returns
// how many packets the impairment dropped.
func (c *Client) Send(ctx context.Context, pkts [][]byte, imp Impair) (dropped int, err error) {
	start := time.Now()
	var swapped *rtp.Packet
	for i, payload := range pkts {
		if wait := time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return dropped, ctx.Err()
			}
		}
		p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: c.seq, Timestamp: c.ts, Marker: i == 0}, Payload: payload}
		c.seq++
		c.ts += 960
		if imp.Rand != nil && imp.Rand.Float64() < imp.Loss && i > 0 && i < len(pkts)-1 {
			dropped++
			continue
		}
		if imp.Rand != nil && swapped == nil && imp.Rand.Float64() < imp.Reorder && i > 0 {
			swapped = p // goes after the next one
			continue
		}
		if err := c.track.WriteRTP(p); err != nil {
			return dropped, err
		}
		if swapped != nil {
			if err := c.track.WriteRTP(swapped); err != nil {
				return dropped, err
			}
			swapped = nil
		}
	}
	if swapped != nil {
		return dropped, c.track.WriteRTP(swapped)
	}
	return dropped, nil
}

// Write sends one 20 ms Opus packet now, as the next RTP packet: for a
// caller that paces the packets itself.
func (c *Client) Write(payload []byte) error {
	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: c.seq, Timestamp: c.ts}, Payload: payload}
	c.seq++
	c.ts += 960
	return c.track.WriteRTP(p)
}

// Delete ends the WHIP session (DELETE on its URL) and returns the status.
func (c *Client) Delete(ctx context.Context, bearer string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.Resource, nil)
	if err != nil {
		return 0, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Close closes the peer connection (a DTLS close tells the server).
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return c.pc.Close()
}
