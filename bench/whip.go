package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"ffmpeg-publisher/internal/markers"
	"ffmpeg-publisher/internal/whipclient"

	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// opusFrame is what a WebRTC sender puts in one RTP packet.
const opusFrame = 20 * time.Millisecond

// makeOpus encodes seconds of marker audio (each 100 ms names itself, so
// the recording says where the source audio landed) with libopus as a
// WebRTC sender does: 48 kHz mono, 20 ms frames, low delay. It returns the
// packets, read from Ogg pages of one packet each.
func makeOpus(seconds int) ([][]byte, error) {
	n := markers.Markers(time.Duration(seconds) * time.Second)
	if n > markers.MaxMarkers {
		return nil, fmt.Errorf("%d s of marker audio: the markers run out at %d", seconds, markers.MaxMarkers)
	}
	ogg, err := markers.Encode(markers.PCM(n, 48000), 48000, "-c:a", "libopus", "-b:a", "32k",
		"-frame_duration", "20", "-application", "lowdelay", "-page_duration", "20000", "-f", "ogg")
	if err != nil {
		return nil, err
	}
	r, _, err := oggreader.NewWith(bytes.NewReader(ogg))
	if err != nil {
		return nil, err
	}
	var pkts [][]byte
	for {
		payload, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return pkts, nil
		}
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(payload, []byte("OpusTags")) {
			pkts = append(pkts, payload)
		}
	}
}

// opusChunks makes each packet one send.
func opusChunks(pkts [][]byte) []chunk {
	out := make([]chunk, len(pkts))
	for i, p := range pkts {
		out[i] = chunk{data: p, from: time.Duration(i) * opusFrame, to: time.Duration(i+1) * opusFrame}
	}
	return out
}

// whipClient publishes over WHIP: offer, ICE and DTLS (first audio counts
// from here, as a WebSocket's counts from its dial), then each packet at
// real-time pace from the moment the connection is up, then DELETE.
func whipClient(base string, s *stream) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(s.chunks))*opusFrame+30*time.Second)
	defer cancel()
	c, err := whipclient.Publish(ctx, base+"/whip/"+s.id, "bench")
	if err != nil {
		return err
	}
	defer c.Close()
	s.mu.Lock()
	s.sent0 = time.Now()
	t0 := s.sent0
	s.mu.Unlock()
	for _, ch := range s.chunks {
		time.Sleep(time.Until(t0.Add(ch.from)))
		if err := c.Write(ch.data); err != nil {
			return err
		}
	}
	// The last packets go over UDP, the DELETE over TCP: let them land
	// first, as an encoder's last frames leave before OBS stops.
	time.Sleep(200 * time.Millisecond)
	status, err := c.Delete(ctx, "bench")
	if err == nil && status/100 != 2 {
		err = fmt.Errorf("DELETE: %d", status)
	}
	return err
}

// heard is one audio message at the player, for placing content.
type heard struct {
	ts time.Duration // RTMP timestamp
	at time.Time     // arrival
}

// earByContent finds the onset of each of the n markers sent in the
// stream's recording and takes when the message holding it reached the
// player: capture to ear by content, the codecs' delays included, where
// the table's column maps RTMP timestamps to source time. sent0 is when
// the first packet left; onsets heard before from (the steady window, as
// for the lag) are not counted. It also counts the markers found nowhere.
func earByContent(recordings []string, msgs []heard, tagDur time.Duration, sent0, from time.Time, n int) (ears []time.Duration, missing int, err error) {
	recs, err := markers.Recordings(recordings)
	if err != nil {
		return nil, 0, err
	}
	if len(recs) != 1 || len(msgs) == 0 {
		return nil, 0, fmt.Errorf("%d recordings and %d messages: want one publish", len(recs), len(msgs))
	}
	first := msgs[0].ts
	seen := map[int]bool{}
	for _, r := range recs[0] {
		seen[r.Marker] = true
		if !r.FromPrev || r.Marker == 0 { // the run's start is not its marker's
			continue
		}
		ts := first + r.Start
		i := sort.Search(len(msgs), func(i int) bool { return msgs[i].ts+tagDur > ts })
		if i == len(msgs) || msgs[i].at.Before(from) {
			continue
		}
		// The onset was captured a frame before its packet left (the frame
		// fills first), as the table adds a chunk's length to the lag.
		captured := sent0.Add(time.Duration(r.Marker)*markers.Unit - opusFrame)
		ears = append(ears, msgs[i].at.Sub(captured))
	}
	for m := range n {
		if !seen[m] {
			missing++
		}
	}
	return ears, missing, nil
}

// contentLines writes, for each WHIP row, its connection time and its
// capture to ear found by content.
func contentLines(b *strings.Builder, os []*outcome) {
	for _, o := range os {
		if o.format != "opus" {
			continue
		}
		fmt.Fprintf(b, "%s: offer to connected (ICE, DTLS) p50 %s / max %s, part of its first audio. By content (each marker's onset found in the recording, and when the message holding it reached the player, less when it was captured): capture to ear p50 %s / p95 %s over %d markers; %d markers sent but never heard.\n\n",
			o.scenario, ms(pct(o.connects, .5)), ms(pct(o.connects, 1)), ms(pct(o.ears, .5)), ms(pct(o.ears, .95)), len(o.ears), o.unheard)
	}
}
