package session

// WebRTCStats is what a WebRTC (WHIP) publisher's receiver reports say of
// its audio, shown in the stream list.
type WebRTCStats struct {
	PacketsReceived int64   `json:"packets_received"`
	PacketsLost     int64   `json:"packets_lost"`   // expected by sequence number, never received
	PacketsLate     int64   `json:"packets_late"`   // arrived after their place was given up
	JitterMS        float64 `json:"jitter_ms"`      // RTP interarrival jitter (RFC 3550)
	FilledSeconds   float64 `json:"filled_seconds"` // silence put in for lost packets and DTX, on the sender's clock
}
