package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// Bench audio: 44.1 kHz mono MP3 at 64 kbps, what FLV carries as it is
// (so -audio-codec copy passes it through) and what the capacity targets
// are stated in.
const (
	rate        = 44100
	mp3Samples  = 1152 // per MPEG-1 layer III frame
	aacSamples  = 1024 // per AAC frame
	audioFilter = "sine=f=220:r=44100:d=%d,tremolo=f=3:d=0.9[t];anoisesrc=c=pink:r=44100:a=0.05:d=%d[n];[t][n]amix=inputs=2:normalize=0"
)

// makeAudio encodes seconds of a speech-like signal (a tone swelling three
// times a second over pink noise: a pure tone is far cheaper to encode to
// AAC than voice) as bare MP3 frames, as a recorder's frame callback gives.
func makeAudio(seconds int) ([]byte, error) {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error",
		"-filter_complex", fmt.Sprintf(audioFilter, seconds, seconds),
		"-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3", "pipe:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("making the test audio: %v: %s", err, stderr.String())
	}
	return out, nil
}

// makePCM is the same signal as 44.1 kHz mono s16le, what format=pcm
// streams send.
func makePCM(seconds int) ([]byte, error) {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error",
		"-filter_complex", fmt.Sprintf(audioFilter, seconds, seconds), "-ac", "1", "-f", "s16le", "pipe:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("making the test PCM: %v: %s", err, stderr.String())
	}
	return out, nil
}

// pcmQuery names the bench's PCM to the publisher.
const pcmQuery = "&format=pcm&rate=44100&channels=1"

// pcmChunks cuts mono PCM into sends of d each.
func pcmChunks(audio []byte, d time.Duration) []chunk {
	size := 2 * int(int64(d)*rate/int64(time.Second))
	var out []chunk
	for k := 0; k*size < len(audio); k++ {
		c := chunk{data: audio[k*size : min(len(audio), (k+1)*size)], from: time.Duration(k) * d}
		c.to = c.from + time.Duration(len(c.data)/2)*time.Second/rate
		out = append(out, c)
	}
	return out
}

// makeADTS is the same signal as AAC in ADTS at the same bitrate, as an
// app's encoder gives it: what format=aac streams send.
func makeADTS(seconds int) ([]byte, error) {
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error",
		"-filter_complex", fmt.Sprintf(audioFilter, seconds, seconds),
		"-ac", "1", "-c:a", "aac", "-b:a", "64k", "-f", "adts", "pipe:1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("making the test ADTS: %v: %s", err, stderr.String())
	}
	return out, nil
}

// adtsChunks cuts ADTS into sends of d each, at frame boundaries.
func adtsChunks(audio []byte, d time.Duration) []chunk {
	var out []chunk
	var frames int64
	dur := func(n int64) time.Duration { return time.Duration(n*aacSamples) * time.Second / rate }
	cur := chunk{}
	for i := 0; i+7 <= len(audio); {
		n := int(audio[i+3]&3)<<11 | int(audio[i+4])<<3 | int(audio[i+5])>>5
		if start := dur(frames); start >= cur.from+d && len(cur.data) > 0 {
			out = append(out, cur)
			cur = chunk{from: start / d * d}
		}
		cur.data = audio[i-len(cur.data) : i+n]
		frames++
		cur.to = dur(frames)
		i += n
	}
	if len(cur.data) > 0 {
		out = append(out, cur)
	}
	return out
}

// chunk is one client send: the frames whose audio starts in
// [k·d, (k+1)·d).
type chunk struct {
	data     []byte
	from, to time.Duration // the audio it holds
}

// frameLen is the length of the MPEG-1 layer III frame whose header is at
// b (44.1 kHz: 144 · bitrate / rate, plus a padding byte).
func frameLen(b []byte) int {
	kbps := [16]int{0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0}[b[2]>>4]
	return 144*kbps*1000/rate + int(b[2]>>1&1)
}

func frameDur(n int64) time.Duration { return time.Duration(n) * time.Second * mp3Samples / rate }

// chunks cuts audio into sends of d each, at frame boundaries.
func chunks(audio []byte, d time.Duration) []chunk {
	var out []chunk
	var frames int64
	cur := chunk{}
	for i := 0; i+4 <= len(audio); {
		n := frameLen(audio[i:])
		start := frameDur(frames)
		if start >= cur.from+d && len(cur.data) > 0 {
			out = append(out, cur)
			cur = chunk{from: start / d * d}
		}
		cur.data = audio[i-len(cur.data) : i+n]
		frames++
		cur.to = frameDur(frames)
		i += n
	}
	if len(cur.data) > 0 {
		out = append(out, cur)
	}
	return out
}

// recordedAudio counts the audio in nginx-rtmp's FLV recordings: audio
// tags times their frame's samples (AAC sequence headers carry none), at
// sampleRate (FLV's own rate field says 44 kHz for any AAC).
func recordedAudio(files []string, sampleRate int) time.Duration {
	var samples int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(b) < 13 {
			continue
		}
		b = b[13:]
		for len(b) >= 15 {
			size := int(binary.BigEndian.Uint32(b[0:4]) & 0xFFFFFF)
			if len(b) < 15+size {
				break
			}
			if b[0] == 8 && size > 1 {
				switch b[11] >> 4 {
				case 10: // AAC: packet type 0 is the sequence header
					if size > 2 && b[12] == 1 {
						samples += aacSamples
					}
				case 2:
					samples += mp3Samples
				}
			}
			b = b[15+size:]
		}
	}
	return time.Duration(samples) * time.Second / time.Duration(sampleRate)
}
