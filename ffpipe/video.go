package ffpipe

import (
	"strconv"
	"strings"
)

// The still video track: small and slow, because it only satisfies ingests
// that require video (YouTube, Facebook, Twitch), and platforms want a
// keyframe at least every 2 s.
const (
	videoWidth, videoHeight = 320, 180
	videoFPS                = 5
	keyframeEvery           = 2 * videoFPS // frames: 2 s
	// waveRate is what the audio is resampled to before it draws frames:
	// a whole number of samples per column makes the frame rate exact.
	waveRate       = 8000
	samplesPerLine = waveRate / (videoFPS * videoWidth)
)

// video is the arguments a video track adds, in their places.
type video struct {
	inputs []string // after the audio input
	graph  []string // -filter_complex and -map
	codec  []string // after the audio codec's options
}

// videoArgs returns the video track for spec ("black" or "image:FILE"),
// or nil for none. The frames are drawn from the audio (showwaves with
// invisible waves), so their timestamps are the audio's: the two cannot
// drift apart across restarts, catch-ups or gap fill, and a frame is made
// only as audio arrives. showwaves takes a whole number of samples per
// column, so the audio is resampled to a rate that makes the frame rate
// exact, and the keyframe interval with it (the fps filter would, at a
// hundred times the CPU in ffmpeg 5.1). An image is scaled to fit and padded with black.
// tee needs the encoder's headers out of band (global_header), as FLV has
// them.
func videoArgs(spec string, tee bool) *video {
	size := strconv.Itoa(videoWidth) + "x" + strconv.Itoa(videoHeight)
	waves := "[0:a]aresample=" + strconv.Itoa(waveRate) + ",aformat=channel_layouts=mono,showwaves=s=" + size +
		":n=" + strconv.Itoa(samplesPerLine) + ":colors=black@0"
	v := &video{}
	switch {
	case spec == "black":
		v.graph = []string{"-filter_complex", waves + ",format=yuv420p[v]"}
	case strings.HasPrefix(spec, "image:"):
		w, h := strconv.Itoa(videoWidth), strconv.Itoa(videoHeight)
		v.inputs = []string{"-i", strings.TrimPrefix(spec, "image:")}
		v.graph = []string{"-filter_complex", waves + "[w];[1:v]scale=" + w + ":" + h +
			":force_original_aspect_ratio=decrease,pad=" + w + ":" + h + ":-1:-1,format=rgba[i];[w][i]overlay=eof_action=repeat,format=yuv420p[v]"}
	default:
		return nil
	}
	v.graph = append(v.graph, "-map", "0:a", "-map", "[v]")
	k := strconv.Itoa(keyframeEvery)
	v.codec = []string{"-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage,zerolatency",
		"-g", k, "-keyint_min", k, "-sc_threshold", "0"}
	if tee {
		v.codec = append(v.codec, "-flags:v", "+global_header")
	}
	return v
}
