package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/internal/redact"
	"ffmpeg-publisher/routing"
	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
)

// outputList is -output, given once per output; a value with spaces (the
// environment's form) holds several.
type outputList []string

func (o *outputList) String() string { return strings.Join(*o, " ") }

func (o *outputList) Set(v string) error {
	*o = append(*o, strings.Fields(v)...)
	return nil
}

// route gives each stream its outputs, by its name; nil without -output
// (-rtmp then).
func (o outputList) route() func(id, name string) []string {
	if len(o) == 0 {
		return nil
	}
	return func(_, name string) []string {
		out := make([]string, len(o))
		for i, t := range o {
			out[i] = session.Target(t, name)
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

// checkOutputFlags refuses an -output (or -rtmp) the server must not
// publish to: only rtmp://, rtmps:// and srt:// URLs with a host.
func checkOutputFlags(c Config) error {
	for i, t := range c.Outputs {
		if err := ffpipe.CheckURL(strings.ReplaceAll(t, "{id}", "id")); err != nil {
			return fmt.Errorf("-output #%d: %w", i+1, err)
		}
	}
	if len(c.Outputs) == 0 && c.RTMP != "" {
		if err := ffpipe.CheckURL(strings.ReplaceAll(c.RTMP, "{id}", "id")); err != nil {
			return fmt.Errorf("-rtmp: %w", err)
		}
	}
	return nil
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

// newRoute gives each ID its outputs: -outputs-file's rule for it, else
// -output's templates; nil (then -rtmp) without either. The file is read
// now and again at each SIGHUP until ctx ends.
func newRoute(ctx context.Context, cfg Config, log *logrus.Entry) (func(id, name string) []string, error) {
	templates := cfg.Outputs.route()
	if cfg.OutputsFile == "" {
		return templates, nil
	}
	file, err := routing.Open(cfg.OutputsFile)
	if err != nil {
		return nil, fmt.Errorf("-outputs-file: %w", err)
	}
	go reloadOnHUP(ctx, file, log)
	return func(id, name string) []string {
		if outs := file.OutputsFor(id, name); outs != nil {
			return outs
		}
		if templates != nil {
			return templates(id, name)
		}
		return nil
	}, nil
}

// reloadOnHUP rereads the routing file at each SIGHUP until ctx ends;
// streams that start afterwards use it.
func reloadOnHUP(ctx context.Context, file *routing.File, log *logrus.Entry) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			if t, err := file.Reload(); err != nil {
				log.WithError(err).Error("routing file not reloaded: the previous rules stay")
			} else {
				log.WithField("rules", t.Rules()).Info("routing file reloaded: new streams follow it")
			}
		case <-ctx.Done():
			return
		}
	}
}

// keepHangups makes SIGHUP harmless for the life of the process: Go's
// default ends it, and operators and logrotate send it. With
// -outputs-file, reloadOnHUP rereads the file as well.
func keepHangups(log *logrus.Entry, reloads bool) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if !reloads {
				log.Info("SIGHUP: nothing to reload (no -outputs-file)")
			}
		}
	}()
}
