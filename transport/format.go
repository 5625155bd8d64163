package transport

import (
	"bytes"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"ffmpeg-publisher/session"
)

// streamFormat is the audio format a request names: format=, rate= and
// channels= in the query, or its Content-Type.
type streamFormat struct {
	name           string // "" names none: the stream's, or MP3 for a new one
	rate, channels int    // PCM's
}

// source describes a writer sending this format.
func (f streamFormat) source(transport, remote string) session.Source {
	return session.Source{Transport: transport, Remote: remote, Format: f.name, Rate: f.rate, Channels: f.channels}
}

// queryFormats are the names format= takes.
const queryFormats = "mp3, webm, pcm or aac"

// binaryFormat maps the media type of a binary chunk to the format it
// carries ("" for application/octet-stream: format= says). Any type not
// here is a base64 body, the legacy contract: text/plain, none, and the
// application/json a mini-program sends by default.
func binaryFormat(mediaType string) (format string, binary bool) {
	switch mediaType {
	case "audio/mpeg", "audio/mp3":
		return "mp3", true
	case "audio/l16": // little-endian, as recorders give (RFC 2586 says network order: see the README)
		return "pcm", true
	case "audio/webm": // a MediaRecorder's Blob type; codecs= is the Opus it holds
		return "webm", true
	case "audio/aac": // ADTS, as RFC 6381 and browsers use the type
		return "aac", true
	case "application/octet-stream":
		return "", true
	}
	return "", false
}

// requestFormat reads the format of r's audio from its query and, when
// it names a binary type, its Content-Type; both may say it if they agree.
// binary tells whether the body is raw audio rather than base64.
func requestFormat(r *http.Request) (f streamFormat, binary bool, err error) {
	q := r.URL.Query()
	var ctype string
	var params map[string]string
	if v := r.Header.Get("Content-Type"); v != "" {
		var perr error
		if ctype, params, perr = mime.ParseMediaType(v); perr != nil {
			if _, bin := binaryFormat(ctype); bin {
				return f, false, &badRequest{"unreadable Content-Type: " + perr.Error()}
			}
			ctype, params = "", nil // a legacy client's sloppy label on base64, never read before
		}
	}
	f.name, binary = binaryFormat(ctype)
	if !binary {
		params = nil
	}
	if v := q.Get("format"); v != "" {
		if f.name != "" && v != f.name {
			return f, false, &badRequest{"format=" + v + " contradicts Content-Type " + ctype}
		}
		f.name = v
	}
	return f, binary, f.pcm(q, params)
}

// queryFormat reads format=, rate= and channels= (a WebSocket).
func queryFormat(q url.Values) (streamFormat, error) {
	f := streamFormat{name: q.Get("format")}
	return f, f.pcm(q, nil)
}

// pcm checks the format's name and, for PCM, reads its rate and channels
// from the query and the Content-Type's parameters.
func (f *streamFormat) pcm(q url.Values, params map[string]string) error {
	switch f.name {
	case "", "mp3", "webm", "aac":
		if q.Get("rate") != "" || q.Get("channels") != "" {
			return &badRequest{"rate and channels are for format=pcm"}
		}
		return nil
	case "pcm":
	default:
		return &badRequest{"format must be " + queryFormats}
	}
	rate, err := pcmParam("rate", q.Get("rate"), params["rate"], "")
	if err != nil {
		return err
	}
	channels, err := pcmParam("channels", q.Get("channels"), params["channels"], "1")
	if err != nil {
		return err
	}
	if err := session.CheckPCM(rate, channels); err != nil {
		return &badRequest{err.Error()}
	}
	f.rate, f.channels = rate, channels
	return nil
}

// pcmParam reads one PCM parameter, said in the query or the Content-Type
// or both alike; def is its value when neither says it.
func pcmParam(name, query, ctype, def string) (int, error) {
	v := strings.TrimSpace(query)
	if c := strings.TrimSpace(ctype); c != "" {
		if v != "" && v != c {
			return 0, &badRequest{name + "=" + v + " contradicts the Content-Type's " + name + "=" + c}
		}
		v = c
	}
	if v == "" {
		v = def
	}
	if v == "" {
		return 0, &badRequest{"format=pcm needs " + name + "=: " + session.PCMAccepted()}
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, &badRequest{name + " must be a number: " + session.PCMAccepted()}
	}
	return n, nil
}

// readChunk reads a chunk's body into buf: raw bytes when binary, base64
// otherwise, decoded as it arrives. An empty chunk is refused.
func (s *Server) readChunk(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer, binary bool) error {
	body := http.MaxBytesReader(w, clientBody{r.Body}, s.cfg.MaxBody)
	if binary {
		if _, err := buf.ReadFrom(body); err != nil {
			return err
		}
	} else {
		dec := s.decoders.Get().(*b64Decoder)
		err := dec.decode(buf, body)
		s.decoders.Put(dec)
		if err != nil {
			if be := base64Problem(err); be != nil {
				return be
			}
			return err
		}
	}
	if buf.Len() == 0 && binary {
		return &badRequest{"empty body: send a chunk of audio"}
	}
	if buf.Len() == 0 {
		return errEmptyBody
	}
	return nil
}
