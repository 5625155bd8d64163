package ffpipe

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// output is one destination as ffmpeg writes it: a muxer, options for the
// muxer and its protocol in order, and the URL.
type output struct {
	format string
	opts   []option
	url    string
}

type option struct{ name, value string }

// Scheme is the lower-cased scheme of an output URL, "" for a file path.
func Scheme(url string) string {
	scheme, _, ok := strings.Cut(url, "://")
	if !ok {
		return ""
	}
	return strings.ToLower(scheme)
}

// outputFor chooses the muxer and the options from the URL's scheme:
//   - rtmp, rtmps: FLV, what RTMP carries. -tcp_nodelay: without it each
//     step of the handshake and every small audio packet waited for a
//     delayed ACK (Nagle). rtmps checks the server's certificate, against
//     tlsCA or the system's CAs (ffmpeg's own default is not to check).
//   - srt: MPEG-TS (ffmpeg sends it in SRT's live payload of seven TS
//     packets). pes_payload_size 0 sends every audio frame in its own PES
//     packet; by default the muxer gathers about 0.35 s of audio first.
//     SRT's own options (latency, passphrase, streamid) go in the URL.
//   - anything else (a file): format, or FLV.
//
// format, when given, replaces the muxer chosen from the scheme.
func outputFor(url, format, tlsCA string) output {
	o := output{url: url}
	switch Scheme(url) {
	case "rtmp", "rtmps":
		o.format = "flv"
		o.add("tcp_nodelay", "1")
		if Scheme(url) == "rtmps" {
			o.add("tls_verify", "1")
			if tlsCA != "" {
				o.add("ca_file", tlsCA)
			}
		}
	case "srt":
		o.format = "mpegts"
		o.add("pes_payload_size", "0")
	default:
		o.format = "flv"
	}
	if format != "" {
		o.format = format
	}
	if o.format == "flv" {
		// The output is not seekable: don't try to rewrite the header at
		// the end (ffmpeg would log two misleading errors per stream).
		o.add("flvflags", "no_duration_filesize")
	}
	return o
}

func (o *output) add(name, value string) { o.opts = append(o.opts, option{name, value}) }

// args renders o as ffmpeg's last arguments, for a single output.
func (o output) args() []string {
	args := []string{"-f", o.format}
	for _, opt := range o.opts {
		args = append(args, "-"+opt.name, opt.value)
	}
	return append(args, o.url)
}

// teeSlave renders o as one slave of the tee muxer. The first output
// (primary) is written in step with the encoder: its failure ends ffmpeg,
// which the session restarts, so its progress is what was sent. Every other
// one (restream) goes through a fifo of its own (fifo, see restreamFifo): a
// slow or dead restream drops its packets instead of holding the others up,
// and ffmpeg reopens it while it fails, which touches no other output. Its
// I/O is bounded (rw_timeout): a server that takes the connection and never
// answers, or stops reading, fails the restream instead of holding it.
func (o output) teeSlave(fifo string) string {
	var b strings.Builder
	b.WriteString("[f=" + teeEscape(o.format, teeOptSpecial))
	if fifo != "" {
		b.WriteString(":onfail=ignore:use_fifo=1:fifo_options=" + teeEscape(fifo, teeOptSpecial))
		o.add("rw_timeout", strconv.FormatInt(restreamTimeout.Microseconds(), 10))
	}
	for _, opt := range o.opts {
		b.WriteString(":" + opt.name + "=" + teeEscape(opt.value, teeOptSpecial))
	}
	b.WriteString("]" + o.url)
	return teeEscape(b.String(), teeListSpecial)
}

// restreamRetry is how often ffmpeg reopens a failed restream (its fifo
// has no backoff): a refused connection costs next to nothing, and a hung
// server one connection per restreamTimeout.
const restreamRetry = "2"

// restreamTimeout bounds a restream's connection, handshake and every
// write: past it the restream fails and is retried.
const restreamTimeout = 10 * time.Second

// restreamFifo: recover from any error, forever, at a fixed pace; drop
// packets rather than block the encoder when the queue is full, with a
// queue that holds a catch-up whole (restreamQueue); with video, restart at
// a keyframe after a drop or a recovery.
func restreamFifo(queue int, video bool) string {
	f := "attempt_recovery=1:recover_any_error=1:max_recovery_attempts=0:recovery_wait_time=" + restreamRetry +
		":drop_pkts_on_overflow=1:queue_size=" + strconv.Itoa(queue)
	if video {
		f += ":restart_with_keyframe=1"
	}
	return f
}

// restreamQueue sizes a fifo's queue, in packets, so that a healthy output
// never drops on a catch-up: a new ffmpeg replays the audio it is given
// (catchUp) faster than real time, and a restream still connecting must
// queue all of it. Counted at 50 AAC packets a second (48 kHz), plus the
// video's frames, with catchUpMargin more; never below ffmpeg's default.
func restreamQueue(catchUp time.Duration, video bool) int {
	perSecond := 50
	if video {
		perSecond += videoFPS
	}
	return max(60, int((catchUp+catchUpMargin).Seconds()*float64(perSecond)))
}

// catchUpMargin covers audio that arrives while the catch-up is sent, and
// a restream that connects slowly.
const catchUpMargin = 5 * time.Second

// The tee muxer reads its argument twice: the list of slaves split on "|",
// then each slave's options split on ":" up to "]"; each reading takes a
// backslash as an escape and quotes as quoting.
const (
	teeListSpecial = `|\'`
	teeOptSpecial  = `:]=\'`
)

func teeEscape(s, special string) string {
	if !strings.ContainsAny(s, special) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(special, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// recordSlave is the tee slave of the archive file: fragmented MP4 with a
// fragment a second, each written out at once (flush_packets), so that a
// kill loses at most the last second; behind a fifo that drops packets
// when the disk does not keep up, and no recovery, which would reopen and
// truncate the file.
func recordSlave(path string, queue int) string {
	return teeEscape("[f=mp4:onfail=ignore:use_fifo=1:fifo_options="+teeEscape("drop_pkts_on_overflow=1:queue_size="+strconv.Itoa(queue), teeOptSpecial)+
		":movflags=+empty_moov+default_base_moof:frag_duration=1000000:flush_packets=1]"+path, teeListSpecial)
}

// CheckURL tells whether u is an output the server publishes to: an
// rtmp://, rtmps:// or srt:// URL with a host. Anything else (a file, a
// pipe, another protocol ffmpeg knows) is refused. The error never quotes
// u, which may hold a key.
func CheckURL(u string) error {
	scheme := Scheme(u)
	switch scheme {
	case "rtmp", "rtmps", "srt":
	case "":
		return errors.New("not a URL: want rtmp://, rtmps:// or srt://")
	default:
		return fmt.Errorf("%s:// is not an output: want rtmp://, rtmps:// or srt://", shortScheme(scheme))
	}
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || strings.ContainsAny(u, " \t\r\n") {
		return fmt.Errorf("a %s:// URL without a host, or with spaces", scheme)
	}
	return nil
}

// shortScheme names a scheme in an error without letting a long one (a
// URL without "://" early on) carry a key along.
func shortScheme(s string) string {
	if len(s) > 10 || strings.ContainsAny(s, "/?@:=&") {
		return "this"
	}
	return s
}

// shownForms lists every form in which ffmpeg's command line and its words
// may carry the outputs' secrets: each URL as given, and as the tee's list
// escapes it (a key with |, ' or \ in it), for the redaction.
func shownForms(urls []string) []string {
	forms := append([]string(nil), urls...)
	for _, u := range urls {
		if e := teeEscape(u, teeListSpecial); e != u {
			forms = append(forms, e)
		}
	}
	return forms
}
