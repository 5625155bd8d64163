// Package ffpipe runs one ffmpeg child that reads audio on its standard input
// and publishes it to its output URLs (rtmp, rtmps, srt, files), several
// through the tee muxer.
//
// Contract: bytes written with Write go to ffmpeg's stdin in order. ffmpeg
// reports progress on a pipe (fd 3); the first report means the output is
// open and its header written, which for an RTMP target means the publish has
// started (Ready). Done is closed once the process has been waited for, and
// Err then tells how it ended:
//   - nil: ffmpeg exited 0 (stdin was closed and it flushed its output),
//     or it exited 255 after our own SIGINT;
//   - *ExitError: anything else, carrying ffmpeg's last stderr lines.
//
// ffmpeg names its output URLs in its output; every line is redacted as it
// is read (internal/redact), so the stored lines, the logs and the errors
// built from them never hold the outputs' secrets.
//
// The child runs in its own process group, is sent SIGKILL by the kernel if
// the parent dies (Pdeathsig, see Launcher), and Stop always ends in SIGKILL
// so a stop can never hang.
package ffpipe

import (
	"strconv"
	"strings"
	"time"
)

// Config describes one ffmpeg invocation. The zero value of each field is
// documented; Target is the only required field.
type Config struct {
	// Binary is the ffmpeg executable; "" means "ffmpeg" from PATH.
	Binary string
	// InputFormat is ffmpeg's -f for stdin; "" means "mp3". The session
	// frames MP3 in FLV tags ("flv") so that ffmpeg reads it frame by
	// frame rather than in 1 KiB blocks.
	InputFormat string
	// SampleRate and Channels describe raw input (PCM), which says
	// neither itself; 0 leaves them to the demuxer.
	SampleRate int
	Channels   int
	// AudioCodec is the output codec; "" means "aac". "copy" passes the
	// input through untouched (FLV carries MP3).
	AudioCodec string
	// AudioBitrate is -b:a for the encoder, e.g. "64k"; "" means "64k".
	// Ignored with AudioCodec "copy".
	AudioBitrate string
	// AACCoder is ffmpeg's -aac_coder: "" (its default, twoloop) or
	// "fast", which costs about half the CPU (BENCHMARKS.md, "Encoding").
	AACCoder string
	// OutputFormat is the muxer of every output; "" means the one its
	// URL's scheme calls for (see outputFor).
	OutputFormat string
	// Target is the output URL, e.g. rtmp://host/app/id.
	Target string
	// Also are restreams fed by the same ffmpeg, through the tee muxer
	// (see teeSlave): Target stays the primary output, whose failure ends
	// ffmpeg; a restream that fails is retried by ffmpeg itself, and
	// Proc.Outputs tells its state. Empty: Target alone, without tee.
	Also []string
	// Record is a file the stream is also written to (fragmented MP4,
	// readable up to its last second if ffmpeg is killed), through a fifo
	// that drops rather than waits: a slow or full disk never holds up the
	// outputs; a write error ends the recording only. "" for none.
	Record string
	// CatchUp is the most audio this ffmpeg is given at once at its start
	// (held audio it replays faster than real time): the restreams' and
	// the archive's queues hold that much (see restreamQueue). 0 is fine
	// for a stream's first ffmpeg.
	CatchUp time.Duration
	// OutputRate and OutputChannels are the published audio's sample rate
	// (-ar: 44100, 48000) and channels (-ac); 0 keeps the input's. Either
	// means encoding, even with AudioCodec "copy".
	OutputRate     int
	OutputChannels int
	// Video is the video track: "" or "none" for none, "black", or
	// "image:FILE" for a still picture (see videoArgs).
	Video string
	// TLSCA is a PEM file of the CAs rtmps:// servers' certificates are
	// checked against; "" means the system's.
	TLSCA string
	// LiveID is the live ID in Target's path: logs and errors show Target
	// up to it, the rest, its userinfo and its query hidden. "" means
	// Target's last path segment.
	LiveID string
	// Launcher forks ffmpeg and bounds how many load at once. nil means no
	// bound, and a fork from the caller's thread: Pdeathsig then fires if
	// that thread ends, as one locked by an exited goroutine does.
	Launcher *Launcher
	// ExtraEnv is appended to the child's environment (tests use it to
	// steer a fake ffmpeg).
	ExtraEnv []string
	// Nice, when above 0, runs ffmpeg at this nice value under
	// SCHED_BATCH (see Start); 0 leaves its scheduling as inherited.
	Nice int
}

func (c Config) binary() string { return orDefault(c.Binary, "ffmpeg") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// progressFD is where ffmpeg writes -progress reports: the first entry of
// exec.Cmd.ExtraFiles becomes fd 3 in the child.
const progressFD = 3

// Args returns ffmpeg's argument list (without argv[0]) for cfg.
//
// Input options are chosen for live input arriving in real time:
//   - -probesize 32 -analyzeduration 0: open the output after the first
//     frame instead of buffering about 1.6 s of audio to probe the stream
//     (measured: the publish starts ~0.3 s after the first byte instead of
//     ~1.6 s);
//   - -flush_packets 1: hand every muxed packet to the RTMP connection at
//     once instead of filling a 32 KiB I/O buffer first.
//
// Not used: -fflags +nobuffer, which drops the packet read while probing:
// a new attempt's first frame. And -threads 1 -filter_threads 1 (measured with 60 streams: no
// change in CPU or memory for an audio-only graph in ffmpeg 5.1) and
// -aac_coder fast (0.88% → 0.55% of a core per stream, but a lower-quality
// coder). BENCHMARKS.md has the numbers.
//
// -progress goes to fd 3 so that stderr stays human-readable for the log and
// so the session can tell when the output is open (first report).
func Args(cfg Config) []string {
	codec := orDefault(cfg.AudioCodec, "aac")
	args := []string{
		"-hide_banner", "-nostdin", "-nostats",
		"-loglevel", "level+info",
		"-probesize", "32", "-analyzeduration", "0",
		"-f", orDefault(cfg.InputFormat, "mp3"),
	}
	if cfg.SampleRate > 0 {
		args = append(args, "-ar", strconv.Itoa(cfg.SampleRate))
	}
	if cfg.Channels > 0 {
		args = append(args, "-ac", strconv.Itoa(cfg.Channels))
	}
	args = append(args, "-i", "pipe:0")
	if codec == "copy" && (cfg.OutputRate > 0 || cfg.OutputChannels > 0) {
		codec = "aac"
	}
	tee := len(cfg.Also) > 0 || cfg.Record != ""
	video := videoArgs(cfg.Video, tee)
	if video == nil {
		args = append(args, "-vn")
	} else {
		args = append(args, video.inputs...)
		args = append(args, video.graph...)
	}
	args = append(args, "-c:a", codec)
	if codec != "copy" {
		args = append(args, "-b:a", orDefault(cfg.AudioBitrate, "64k"))
		if cfg.AACCoder != "" && codec == "aac" {
			args = append(args, "-aac_coder", cfg.AACCoder)
		}
		if cfg.OutputRate > 0 {
			args = append(args, "-ar", strconv.Itoa(cfg.OutputRate))
		}
		if cfg.OutputChannels > 0 {
			args = append(args, "-ac", strconv.Itoa(cfg.OutputChannels))
		}
	}
	if video != nil {
		args = append(args, video.codec...)
	}
	args = append(args,
		"-progress", "pipe:"+strconv.Itoa(progressFD), "-stats_period", "0.5",
		"-flush_packets", "1",
	)
	outs := cfg.Outputs()
	if !tee {
		return append(args, outputFor(outs[0], cfg.OutputFormat, cfg.TLSCA).args()...)
	}
	queue := restreamQueue(cfg.CatchUp, video != nil)
	slaves := make([]string, len(outs))
	for i, url := range outs {
		fifo := ""
		if i > 0 {
			fifo = restreamFifo(queue, video != nil)
		}
		slaves[i] = outputFor(url, cfg.OutputFormat, cfg.TLSCA).teeSlave(fifo)
	}
	if cfg.Record != "" {
		slaves = append(slaves, recordSlave(cfg.Record, queue))
	}
	if video == nil {
		args = append(args, "-map", "0:a") // with video, videoArgs maps both
	}
	return append(args, "-f", "tee", strings.Join(slaves, "|"))
}

// Outputs lists every output URL, Target first.
func (c Config) Outputs() []string { return append([]string{c.Target}, c.Also...) }

// CommandLine renders argv for logs. It is never executed by a shell.
func CommandLine(cfg Config) string {
	return cfg.binary() + " " + strings.Join(Args(cfg), " ")
}
