package main

import (
	"fmt"
	"net"
	"strings"

	"ffmpeg-publisher/whip"

	"github.com/sirupsen/logrus"
)

// newWHIP opens the WebRTC sockets of -webrtc-udp and -webrtc-tcp; nil
// when WHIP is off.
func newWHIP(cfg Config, log *logrus.Entry) (*whip.Host, error) {
	if cfg.WebRTCUDP == "" {
		return nil, nil
	}
	udp, err := net.ListenPacket("udp", cfg.WebRTCUDP)
	if err != nil {
		return nil, fmt.Errorf("-webrtc-udp: %w", err)
	}
	wc := whip.Config{UDP: udp, Loopback: loopbackAddr(udp.LocalAddr())}
	if cfg.WebRTCTCP != "" {
		if wc.TCP, err = net.Listen("tcp", cfg.WebRTCTCP); err != nil {
			udp.Close()
			return nil, fmt.Errorf("-webrtc-tcp: %w", err)
		}
	}
	if cfg.WebRTCIP != "" {
		for _, ip := range strings.Split(cfg.WebRTCIP, ",") {
			wc.PublicIPs = append(wc.PublicIPs, strings.TrimSpace(ip))
		}
	}
	h, err := whip.NewHost(wc)
	if err != nil {
		udp.Close()
		if wc.TCP != nil {
			wc.TCP.Close()
		}
		return nil, fmt.Errorf("-webrtc-ip: %w", err)
	}
	log.WithFields(logrus.Fields{"udp": udp.LocalAddr().String(), "tcp": cfg.WebRTCTCP, "public_ip": cfg.WebRTCIP}).Info("WHIP on")
	return h, nil
}

// loopbackAddr tells a socket bound to a loopback address: its peers can
// only be on this machine, so loopback candidates are the ones to offer.
func loopbackAddr(a net.Addr) bool {
	u, ok := a.(*net.UDPAddr)
	return ok && u.IP.IsLoopback()
}
