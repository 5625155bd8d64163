package main

import (
	"fmt"
	"os"
	"strings"

	"ffmpeg-publisher/internal/redact"
	"ffmpeg-publisher/session"
)

// outputList is -output, given once per output; a value with spaces (the
// environment's form) holds several.
type outputList []string

func (o *outputList) String() string { return strings.Join(*o, " ") }

func (o *outputList) Set(v string) error {
	*o = append(*o, strings.Fields(v)...)
	return nil
}

// route gives each ID its outputs; nil without -output (-rtmp then).
func (o outputList) route() func(id string) []string {
	if len(o) == 0 {
		return nil
	}
	return func(id string) []string {
		out := make([]string, len(o))
		for i, t := range o {
			out[i] = session.Target(t, id)
		}
		return out
	}
}

// shown lists the output templates for the startup log, secrets hidden.
func (o outputList) shown(rtmp string) string {
	all := o
	if len(all) == 0 {
		all = outputList{rtmp}
	}
	shown := make([]string, len(all))
	for i, t := range all {
		shown[i] = redact.URL(session.Target(t, "{id}"), "{id}")
	}
	return strings.Join(shown, " ")
}

// checkPlatformFlags validates -audio-rate, -audio-channels and -video.
func checkPlatformFlags(c Config) error {
	switch c.AudioRate {
	case 0, 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000:
	default:
		return fmt.Errorf("-audio-rate must be an AAC sample rate such as 44100 or 48000 (or 0), not %d", c.AudioRate)
	}
	if c.AudioChannels < 0 || c.AudioChannels > 2 {
		return fmt.Errorf("-audio-channels must be 1, 2 or 0, not %d", c.AudioChannels)
	}
	switch file, isImage := strings.CutPrefix(c.Video, "image:"); {
	case c.Video == "none" || c.Video == "black":
	case isImage:
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("-video: %w", err)
		}
	default:
		return fmt.Errorf(`-video must be none, black or image:FILE, not %q`, c.Video)
	}
	return nil
}
