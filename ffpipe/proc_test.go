package ffpipe

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"ffmpeg-publisher/internal/fakeffmpeg"
	"ffmpeg-publisher/internal/rtmptest"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	fakeffmpeg.Main()
	goleak.VerifyTestMain(m)
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func fake(t *testing.T, mode string) (Config, string) {
	dir := t.TempDir()
	return Config{Binary: os.Args[0], Target: "rtmp://127.0.0.1:1/live/abc", ExtraEnv: fakeffmpeg.Env(dir, mode)}, dir
}

func waitDone(t *testing.T, p *Proc) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("ffmpeg did not end")
	}
}

func TestArgs(t *testing.T) {
	base := []string{"-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info",
		"-probesize", "32", "-analyzeduration", "0"}
	tail := []string{"-progress", "pipe:3", "-stats_period", "0.5", "-flush_packets", "1"}
	aac := []string{"-f", "mp3", "-i", "pipe:0", "-vn", "-c:a", "aac", "-b:a", "64k"}
	video := []string{"-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage,zerolatency", "-g", "10", "-keyint_min", "10", "-sc_threshold", "0"}
	// Escaped once for the slave's options, once more for the tee's list.
	fifo := `attempt_recovery\\=1\\:recover_any_error\\=1\\:max_recovery_attempts\\=0\\:recovery_wait_time\\=2\\:drop_pkts_on_overflow\\=1\\:queue_size\\=250`
	const timeout = ":rw_timeout=10000000"
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"defaults", Config{Target: "rtmp://h/live/a"}, cat(base,
			[]string{"-f", "mp3", "-i", "pipe:0", "-vn", "-c:a", "aac", "-b:a", "64k"}, tail,
			[]string{"-f", "flv", "-tcp_nodelay", "1", "-flvflags", "no_duration_filesize", "rtmp://h/live/a"})},
		{"bitrate and webm", Config{Target: "rtmp://h/live/b", InputFormat: "webm", AudioBitrate: "128k"}, cat(base,
			[]string{"-f", "webm", "-i", "pipe:0", "-vn", "-c:a", "aac", "-b:a", "128k"}, tail,
			[]string{"-f", "flv", "-tcp_nodelay", "1", "-flvflags", "no_duration_filesize", "rtmp://h/live/b"})},
		{"pcm says its rate and channels", Config{Target: "x", InputFormat: "s16le", SampleRate: 16000, Channels: 1, OutputFormat: "flv"}, cat(base,
			[]string{"-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "pipe:0", "-vn", "-c:a", "aac", "-b:a", "64k"}, tail,
			[]string{"-f", "flv", "-flvflags", "no_duration_filesize", "x"})},
		{"the fast AAC coder", Config{Target: "x", AACCoder: "fast", OutputFormat: "flv"}, cat(base,
			[]string{"-f", "mp3", "-i", "pipe:0", "-vn", "-c:a", "aac", "-b:a", "64k", "-aac_coder", "fast"}, tail,
			[]string{"-f", "flv", "-flvflags", "no_duration_filesize", "x"})},
		{"copy has no bitrate", Config{Target: "x", AudioCodec: "copy", AudioBitrate: "128k"}, cat(base,
			[]string{"-f", "mp3", "-i", "pipe:0", "-vn", "-c:a", "copy"}, tail,
			[]string{"-f", "flv", "-flvflags", "no_duration_filesize", "x"})},
		{"other muxer", Config{Target: "out.ts", OutputFormat: "mpegts"}, cat(base,
			[]string{"-f", "mp3", "-i", "pipe:0", "-vn", "-c:a", "aac", "-b:a", "64k"}, tail,
			[]string{"-f", "mpegts", "out.ts"})},
		{"rtmps checks the certificate", Config{Target: "rtmps://h/live/a"}, cat(base, aac, tail,
			[]string{"-f", "flv", "-tcp_nodelay", "1", "-tls_verify", "1", "-flvflags", "no_duration_filesize", "rtmps://h/live/a"})},
		{"rtmps with a private CA", Config{Target: "RTMPS://h/live/a", TLSCA: "/etc/ca.pem"}, cat(base, aac, tail,
			[]string{"-f", "flv", "-tcp_nodelay", "1", "-tls_verify", "1", "-ca_file", "/etc/ca.pem", "-flvflags", "no_duration_filesize", "RTMPS://h/live/a"})},
		{"srt is MPEG-TS", Config{Target: "srt://h:9000?streamid=a&latency=200000", TLSCA: "/etc/ca.pem"}, cat(base, aac, tail,
			[]string{"-f", "mpegts", "-pes_payload_size", "0", "srt://h:9000?streamid=a&latency=200000"})},
		{"several outputs go through tee", Config{Target: "rtmp://a/live/x", Also: []string{"srt://b:1", "rtmps://c/app/x"}, TLSCA: "/ca"}, cat(base, aac, tail,
			[]string{"-map", "0:a", "-f", "tee",
				"[f=flv:tcp_nodelay=1:flvflags=no_duration_filesize]rtmp://a/live/x" +
					"|[f=mpegts:onfail=ignore:use_fifo=1:fifo_options=" + fifo + ":pes_payload_size=0" + timeout + "]srt://b:1" +
					"|[f=flv:onfail=ignore:use_fifo=1:fifo_options=" + fifo + ":tcp_nodelay=1:tls_verify=1:ca_file=/ca:flvflags=no_duration_filesize" + timeout + "]rtmps://c/app/x"})},
		{"platform-ready: 48 kHz stereo and a black video", Config{Target: "rtmp://h/live/a", OutputRate: 48000, OutputChannels: 2, Video: "black"}, cat(base,
			[]string{"-f", "mp3", "-i", "pipe:0",
				"-filter_complex", "[0:a]aresample=8000,aformat=channel_layouts=mono,showwaves=s=320x180:n=5:colors=black@0,format=yuv420p[v]", "-map", "0:a", "-map", "[v]",
				"-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2"}, video, tail,
			[]string{"-f", "flv", "-tcp_nodelay", "1", "-flvflags", "no_duration_filesize", "rtmp://h/live/a"})},
		{"a picture, restreamed: global headers, no second map", Config{Target: "rtmp://h/live/a", Also: []string{"rtmp://r/live/a"}, AudioCodec: "copy", OutputRate: 44100, Video: "image:/p/cover.png"}, cat(base,
			[]string{"-f", "mp3", "-i", "pipe:0", "-i", "/p/cover.png",
				"-filter_complex", "[0:a]aresample=8000,aformat=channel_layouts=mono,showwaves=s=320x180:n=5:colors=black@0[w];[1:v]scale=320:180:force_original_aspect_ratio=decrease,pad=320:180:-1:-1,format=rgba[i];[w][i]overlay=eof_action=repeat,format=yuv420p[v]",
				"-map", "0:a", "-map", "[v]",
				"-c:a", "aac", "-b:a", "64k", "-ar", "44100"}, video, []string{"-flags:v", "+global_header"}, tail,
			[]string{"-f", "tee", "[f=flv:tcp_nodelay=1:flvflags=no_duration_filesize]rtmp://h/live/a" +
				"|[f=flv:onfail=ignore:use_fifo=1:fifo_options=" + strings.Replace(fifo, "250", `275\\:restart_with_keyframe\\=1`, 1) + ":tcp_nodelay=1:flvflags=no_duration_filesize" + timeout + "]rtmp://r/live/a"})},
		{"an archive alone goes through tee", Config{Target: "rtmp://a/live/x", Record: "/rec/x-20261201T000000.000Z.m4a"}, cat(base, aac, tail,
			[]string{"-map", "0:a", "-f", "tee", "[f=flv:tcp_nodelay=1:flvflags=no_duration_filesize]rtmp://a/live/x" +
				`|[f=mp4:onfail=ignore:use_fifo=1:fifo_options=drop_pkts_on_overflow\\=1\\:queue_size\\=250:movflags=+empty_moov+default_base_moof:frag_duration=1000000:flush_packets=1]/rec/x-20261201T000000.000Z.m4a`})},
		{"tee escapes its separators", Config{Target: "rtmp://a/live/x?k=a|b", Also: []string{"rtmps://c/x"}, TLSCA: `/my:ca]'s\`}, cat(base, aac, tail,
			[]string{"-map", "0:a", "-f", "tee",
				`[f=flv:tcp_nodelay=1:flvflags=no_duration_filesize]rtmp://a/live/x?k=a\|b` +
					`|[f=flv:onfail=ignore:use_fifo=1:fifo_options=` + fifo + `:tcp_nodelay=1:tls_verify=1:ca_file=/my\\:ca\\]\\\'s\\\\:flvflags=no_duration_filesize` + timeout + `]rtmps://c/x`})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Args(tc.cfg); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Args:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestReason(t *testing.T) {
	tail := []string{
		"[info] Input #0, mp3, from 'pipe:0':",
		"[tcp @ 0x55d0] [error] Connection to tcp://127.0.0.1:1935?tcp_nodelay=0 failed: Connection refused",
		"[error] rtmp://127.0.0.1/live/a: Connection refused",
	}
	want := "Connection to tcp://127.0.0.1:1935?tcp_nodelay=0 failed: Connection refused; rtmp://127.0.0.1/live/a: Connection refused"
	if got := Reason(tail); got != want {
		t.Errorf("Reason = %q, want %q", got, want)
	}
	if got := Reason([]string{"[info] a", "[info] last words"}); got != "last words" {
		t.Errorf("Reason without errors = %q", got)
	}
	if got := Reason(nil); got != "" {
		t.Errorf("Reason(nil) = %q", got)
	}
}

func TestStdinReachesFFmpegAndStopIsClean(t *testing.T) {
	cfg, dir := fake(t, fakeffmpeg.Normal)
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789"), 10000)
	if _, err := p.Write(want); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no progress report")
	}
	if err := p.Stop(10 * time.Second); err != nil { // a bound on a loaded machine, not a timing
		t.Fatalf("Stop: %v", err)
	}
	files := fakeffmpeg.OutputFiles(dir, "abc")
	if len(files) != 1 {
		t.Fatalf("want one output, got %v", files)
	}
	got, _ := os.ReadFile(files[0])
	if !bytes.Equal(got, want) {
		t.Fatalf("ffmpeg read %d bytes, want %d", len(got), len(want))
	}
	if pr := p.Progress(); pr.Reports == 0 || pr.TotalSize == 0 {
		t.Errorf("progress not parsed: %+v", pr)
	}
	if _, err := p.Write([]byte("x")); err == nil {
		t.Error("Write after exit succeeded")
	}
}

func TestFailureCarriesFFmpegsReason(t *testing.T) {
	cfg, _ := fake(t, fakeffmpeg.Fail)
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	var ee *ExitError
	if !errors.As(p.Err(), &ee) {
		t.Fatalf("Err = %v, want *ExitError", p.Err())
	}
	msg := p.Err().Error()
	if !strings.HasPrefix(msg, "ffmpeg exited with status 1: ") || !strings.Contains(msg, "Connection refused") {
		t.Errorf("error = %q", msg)
	}
	select {
	case <-p.Ready():
		t.Error("Ready closed for an ffmpeg that never reported progress")
	default:
	}
}

func TestStopKillsAnFFmpegThatIgnoresEOFAndSIGINT(t *testing.T) {
	cfg, _ := fake(t, fakeffmpeg.IgnoreInt)
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	p.Write([]byte("data"))
	<-p.Ready()
	err = p.Stop(100 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Stop = %v, want killed", err)
	}
	if processAlive(p.Pid()) {
		t.Error("process still exists after Stop")
	}
}

func TestWriteDeadlineWhenFFmpegStopsReading(t *testing.T) {
	cfg, _ := fake(t, fakeffmpeg.NoRead)
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Millisecond)
	p.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	_, err = p.Write(make([]byte, 4<<20)) // more than any pipe buffer
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %v, want deadline exceeded", err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := Start(t.Context(), Config{Binary: filepath.Join(t.TempDir(), "no-ffmpeg"), Target: "x"}, quietLog())
	if err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
}

func processAlive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// TestRealFFmpegWritesAAC runs Debian's ffmpeg with our arguments, writing
// FLV to a file, and checks the result with ffprobe.
func TestRealFFmpegWritesAAC(t *testing.T) {
	ffmpeg := rtmptest.Require(t, "ffmpeg", "ffprobe")[0]
	dir := t.TempDir()
	mp3 := filepath.Join(dir, "in.mp3")
	gen := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=2",
		"-ac", "1", "-ar", "16000", "-b:a", "32k", "-f", "mp3", mp3)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("generate mp3: %v\n%s", err, out)
	}
	data, _ := os.ReadFile(mp3)
	out := filepath.Join(dir, "out.flv")
	p, err := Start(t.Context(), Config{Binary: ffmpeg, Target: out}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration",
		"-of", "default=nw=1", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(probe), "codec_name=aac") {
		t.Errorf("ffprobe: %s", probe)
	}
}

func TestNiceRunsFFmpegAsABatchTask(t *testing.T) {
	cfg, _ := fake(t, fakeffmpeg.Normal)
	cfg.Nice = 7
	p, err := Start(t.Context(), cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.Kill()
		waitDone(t, p)
	}()
	// Once it has loaded (the fake speaks at once).
	var attr *unix.SchedAttr
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if attr, err = unix.SchedGetAttr(p.Pid(), 0); err != nil {
			t.Fatal(err)
		}
		if attr.Policy == unix.SCHED_BATCH && attr.Nice == 7 {
			return
		}
	}
	t.Errorf("ffmpeg runs with policy %d nice %d, want SCHED_BATCH (%d) nice 7", attr.Policy, attr.Nice, unix.SCHED_BATCH)
}

// Every line ffmpeg prints naming its target, and every error and log line
// built from them, shows the target without its secrets.
func TestFFmpegsWordsAreRedacted(t *testing.T) {
	var logs bytes.Buffer
	l := logrus.New()
	l.SetOutput(&logs)
	l.SetLevel(logrus.DebugLevel)
	cfg, _ := fake(t, fakeffmpeg.Leak)
	cfg.Target = "rtmp://user:pw0rd@127.0.0.1:1/live/abc/KEYSECRET?secret=hunter2"
	cfg.LiveID = "abc"
	p, err := Start(t.Context(), cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	var ee *ExitError
	if !errors.As(p.Err(), &ee) {
		t.Fatalf("Err = %v, want *ExitError", p.Err())
	}
	texts := map[string]string{
		"Err":  p.Err().Error(),
		"Tail": strings.Join(p.Tail(), "\n"),
		"log":  logs.String(),
	}
	for name, text := range texts {
		for _, secret := range []string{"hunter2", "KEYSECRET", "pw0rd", "user:"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds %q:\n%s", name, secret, text)
			}
		}
	}
	const shown = "rtmp://…@127.0.0.1:1/live/abc…"
	if !strings.Contains(texts["Err"], shown+": Connection reset by peer") {
		t.Errorf("Err = %q, want the redacted target", texts["Err"])
	}
	for _, want := range []string{"fname = …", "publish command for '…'", "cmd=\"" + os.Args[0]} {
		if !strings.Contains(texts["log"], want) {
			t.Errorf("the debug log lacks %q:\n%s", want, texts["log"])
		}
	}
}

// A key holding the tee's special characters (| ' \\) reaches the command
// line escaped; the debug log of it shows no part of the key either way.
func TestTeeEscapedSecretsAreRedacted(t *testing.T) {
	var logs bytes.Buffer
	l := logrus.New()
	l.SetOutput(&logs)
	l.SetLevel(logrus.DebugLevel)
	cfg, _ := fake(t, fakeffmpeg.Leak)
	cfg.Target = `rtmp://127.0.0.1:1/live/abc?key=KEYONE|KEYTWO'KEYTHREE\KEYFOUR`
	cfg.Also = []string{`rtmps://127.0.0.1:2/app/abc/KEYFIVE|KEYSIX`}
	cfg.Record = filepath.Join(t.TempDir(), "abc.m4a")
	cfg.LiveID = "abc"
	p, err := Start(t.Context(), cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	if !strings.Contains(logs.String(), "cmd=") || !strings.Contains(CommandLine(cfg), `KEYONE\|KEYTWO\'KEYTHREE\\KEYFOUR`) {
		t.Fatalf("the test does not exercise the escaped form:\n%s", CommandLine(cfg))
	}
	for _, secret := range []string{"KEYONE", "KEYTWO", "KEYTHREE", "KEYFOUR", "KEYFIVE", "KEYSIX"} {
		if strings.Contains(logs.String(), secret) || strings.Contains(p.Err().Error(), secret) {
			t.Errorf("%s shown:\n%s", secret, logs.String())
		}
	}
}
