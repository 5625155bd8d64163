// Package whip receives Opus over WebRTC for WHIP (RFC 9725): it answers
// a publisher's SDP offer with pion, takes the audio track's RTP, puts it
// back in order, fills what was lost or left out (DTX) with silence on the
// sender's clock, and hands the Opus packets on. It knows nothing of HTTP
// or of sessions.
package whip

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"
)

// Config is where peers are reached.
type Config struct {
	// UDP carries every peer's ICE, DTLS and SRTP (one port for a
	// firewall rule); required.
	UDP net.PacketConn
	// TCP, when set, takes ICE-TCP (RFC 6544) for networks that block UDP.
	TCP net.Listener
	// PublicIPs are announced as the host candidates' addresses instead of
	// the interfaces' (a server behind 1:1 NAT); empty announces the
	// interfaces'.
	PublicIPs []string
	// Loopback offers loopback candidates too (a server and its clients on
	// one machine).
	Loopback bool
	// Logs is pion's logging; nil logs its errors to stderr.
	Logs logging.LoggerFactory
}

// ICE timing for peers: a publisher whose packets stop is disconnected
// after iceDisconnected and gone after iceFailed (pion's defaults, 5 s
// and 25 s, would hold a dead publisher's ID for longer than a reconnect
// takes).
const (
	iceDisconnected = 5 * time.Second
	iceFailed       = 10 * time.Second
	iceKeepalive    = 2 * time.Second
)

// Host answers offers; one serves every peer of a server.
type Host struct {
	api    *webrtc.API
	udp    ice.UDPMux
	tcp    ice.TCPMux
	gather time.Duration
}

// gatherTimeout bounds gathering; host candidates on muxes come at once.
const gatherTimeout = 5 * time.Second

// NewHost prepares pion for Opus-only peers on cfg's sockets. Close it
// after every peer.
func NewHost(cfg Config) (*Host, error) {
	if cfg.UDP == nil {
		return nil, errors.New("whip: no UDP socket")
	}
	logs := cfg.Logs
	if logs == nil {
		logs = logging.NewDefaultLoggerFactory()
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: opusRate, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType:        111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	// Of pion's defaults, what an Opus receiver uses: receiver reports, and
	// transport-wide feedback for the browser's bandwidth estimate. NACK
	// and simulcast are for video, and pion's stats recorder would count
	// every packet again for a GetStats nobody calls (rtpStats counts).
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureTWCCSender(m, ir); err != nil {
		return nil, err
	}
	h := &Host{gather: gatherTimeout}
	se := webrtc.SettingEngine{LoggerFactory: logs}
	h.udp = webrtc.NewICEUDPMux(logs.NewLogger("ice"), cfg.UDP)
	se.SetICEUDPMux(h.udp)
	types := []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6}
	if cfg.TCP != nil {
		h.tcp = webrtc.NewICETCPMux(logs.NewLogger("ice"), cfg.TCP, 8)
		se.SetICETCPMux(h.tcp)
		types = append(types, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6)
	}
	se.SetNetworkTypes(types)
	if len(cfg.PublicIPs) > 0 {
		for _, ip := range cfg.PublicIPs {
			if net.ParseIP(ip) == nil {
				h.Close()
				return nil, fmt.Errorf("whip: %q is not an IP address", ip)
			}
		}
		se.SetNAT1To1IPs(cfg.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	se.SetIncludeLoopbackCandidate(cfg.Loopback)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled) // a server has a name of its own
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	h.api = webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return h, nil
}

// Close closes the muxes, and with them the sockets.
func (h *Host) Close() {
	if h.udp != nil {
		h.udp.Close()
	}
	if h.tcp != nil {
		h.tcp.Close()
	}
}
