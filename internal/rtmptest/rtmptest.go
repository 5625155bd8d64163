// Package rtmptest runs the real parts for end-to-end tests: nginx with the
// RTMP module on a free loopback port, recording every publish session to
// its own FLV, and ffmpeg/ffprobe to make test audio and to measure what
// arrived.
package rtmptest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RTMPModule is where Debian's libnginx-mod-rtmp installs the module.
const RTMPModule = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

// StreamModule is where Debian's libnginx-mod-stream installs the module
// that terminates TLS in front of nginx-rtmp (StartTLS).
const StreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// Require returns the path of each tool. A missing tool skips the test on a
// developer machine and fails it in CI (CI is set), where the end-to-end
// tests must run. -short skips them too (`make test-short`).
func Require(t testing.TB, tools ...string) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("uses the real ffmpeg and nginx-rtmp: not in -short runs")
	}
	var paths []string
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err == nil && tool == "nginx" {
			if _, err = os.Stat(RTMPModule); err != nil {
				err = fmt.Errorf("libnginx-mod-rtmp is not installed: %w", err)
			}
		}
		if err != nil {
			missing(t, tool, err)
		}
		paths = append(paths, p)
	}
	return paths
}

// missing skips the test for lack of tool, or fails it in CI.
func missing(t testing.TB, tool string, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required for the end-to-end tests in CI: %v", tool, err)
	}
	t.Skipf("%s not available (run `make deps`): %v", tool, err)
}

// Server is a running nginx-rtmp.
type Server struct {
	Dir    string // nginx prefix: config, logs, temp paths
	RecDir string // one FLV per publish session
	Addr   string // 127.0.0.1:port
	URL    string // rtmp://127.0.0.1:port/live
	// With StartTLS: nginx's stream module terminates TLS on TLSAddr and
	// passes the bytes to Addr; its certificate is signed by the CA in
	// CAFile.
	TLSAddr string
	TLSURL  string // rtmps://127.0.0.1:port/live
	CAFile  string
	tls     string // the stream block, or ""
	cmd     *exec.Cmd
	exited  chan struct{}
}

const config = `load_module %[1]s;
%[6]s
%[2]s
daemon off;
master_process on;
worker_processes 1;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log info;
events { worker_connections 4096; }
rtmp {
    server {
        listen %[4]s;
        chunk_size 4096;
        application live {
            live on;
            record all;
            record_path %[5]s;
            record_unique on;
            record_append on;
        }
    }
}
%[7]s
`

// Start runs nginx-rtmp until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	Require(t, "nginx")
	s, err := Launch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// Launch runs nginx-rtmp on a free loopback port with its files in dir,
// for tools outside tests (bench/). Stop ends it.
func Launch(dir string) (*Server, error) {
	return launch(&Server{Dir: dir, RecDir: filepath.Join(dir, "rec")})
}

func launch(s *Server) (*Server, error) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.RecDir, 0o777); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		err := s.start(nginx)
		if err == nil {
			return s, nil
		}
		s.Addr = "" // another port
		if attempt == 4 {
			return nil, fmt.Errorf("nginx-rtmp did not start: %v\n%s", err, s.ErrorLog())
		}
	}
}

func (s *Server) start(nginx string) error {
	if s.Addr == "" {
		addr, err := freePort()
		if err != nil {
			return err
		}
		s.Addr, s.URL = addr, "rtmp://"+addr+"/live"
		if s.tls != "" {
			if s.TLSAddr, err = freePort(); err != nil {
				return err
			}
			s.TLSURL = "rtmps://" + s.TLSAddr + "/live"
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers must be able to write recordings
	}
	conf := filepath.Join(s.Dir, "nginx.conf")
	loadStream, stream := "", ""
	if s.tls != "" {
		loadStream, stream = "load_module "+StreamModule+";", fmt.Sprintf(s.tls, s.TLSAddr, s.Addr)
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, config, RTMPModule, user, s.Dir, s.Addr, s.RecDir, loadStream, stream), 0o644); err != nil {
		return err
	}
	s.cmd = exec.Command(nginx, "-p", s.Dir, "-c", conf, "-e", filepath.Join(s.Dir, "error.log"))
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	cmd, exited := s.cmd, make(chan struct{})
	s.exited = exited
	go func() { cmd.Wait(); close(exited) }() // not s's fields: Restart replaces them
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.exited:
			return fmt.Errorf("nginx exited")
		default:
		}
		if listening(s.Addr) && (s.tls == "" || listening(s.TLSAddr)) {
			return nil
		}
	}
	s.stop()
	return fmt.Errorf("nginx not listening on %s", s.Addr)
}

// freePort finds a free loopback port. nginx takes it; another process
// grabbing it first means a retry.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM) // fast shutdown; the master ends its workers
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Signal sends sig to nginx's master and workers (SIGSTOP/SIGCONT to
// freeze it).
func (s *Server) Signal(sig syscall.Signal) error { return syscall.Kill(-s.cmd.Process.Pid, sig) }

// ErrorLog returns nginx's log.
func (s *Server) ErrorLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "error.log"))
	return string(b)
}

// PublishCount is how many times a stream called name was published.
func (s *Server) PublishCount(name string) int {
	re := regexp.MustCompile(`publish: name='` + regexp.QuoteMeta(name) + `' `)
	return len(re.FindAllString(s.ErrorLog(), -1))
}

// PublishCounts is PublishCount for every name at once, from one read
// of the log (a benchmark has a thousand names).
func (s *Server) PublishCounts() map[string]int {
	counts := map[string]int{}
	for _, m := range publishRE.FindAllStringSubmatch(s.ErrorLog(), -1) {
		counts[m[1]]++
	}
	return counts
}

var publishRE = regexp.MustCompile(`publish: name='([^']*)' `)

// ConnectionCount is how many connections nginx accepted, publishes or not,
// including the one Start made to see it listening.
func (s *Server) ConnectionCount() int {
	return strings.Count(s.ErrorLog(), " client connected '")
}

// PID is nginx's master process (its worker is a child of it).
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Recordings lists the FLV files recorded for name.
func (s *Server) Recordings(name string) []string {
	m, _ := filepath.Glob(filepath.Join(s.RecDir, name+"-*.flv"))
	return m
}

// Recorded describes what arrived at the RTMP server for one stream.
type Recorded struct {
	Files    int
	Codecs   string    // audio codec of each file, comma-separated
	Duration float64   // seconds of audio, over all files
	Each     []float64 // seconds of audio in each file, oldest first
	Rate     int       // sample rate of the last file
}

// WaitRecorded waits until name was published at least publishes times and
// its recordings stopped growing, then measures them with ffprobe. The
// waiting looks at file sizes only: on a loaded machine two ffprobe runs
// per file and poll would take longer than the stream itself.
func (s *Server) WaitRecorded(t testing.TB, name string, publishes int) Recorded {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	stable := 0
	for {
		sizes := s.sizes(name)
		if sizes == last && sizes != "" && s.PublishCount(name) >= publishes {
			stable++
		} else {
			stable = 0
		}
		last = sizes
		if stable >= 4 {
			return s.Measure(name)
		}
		if time.Now().After(deadline) {
			t.Fatalf("recordings of %s did not settle: %+v (sizes %s), %d of %d publishes",
				name, s.Measure(name), sizes, s.PublishCount(name), publishes)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// sizes lists the recordings of name with their sizes.
func (s *Server) sizes(name string) string {
	var b strings.Builder
	for _, f := range s.Recordings(name) {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d ", filepath.Base(f), fi.Size())
		}
	}
	return b.String()
}

// Measure describes what was recorded for name so far.
func (s *Server) Measure(name string) Recorded {
	var r Recorded
	for _, f := range s.Recordings(name) {
		codec, rate, dur := probe(f)
		r.Files++
		if r.Codecs != "" {
			r.Codecs += ","
		}
		r.Codecs += codec
		r.Duration += dur
		r.Each = append(r.Each, dur)
		r.Rate = rate
	}
	return r
}

// Probe returns the audio codec, sample rate and duration of a media file,
// the duration measured from its packets: the last one's end minus the
// first one's start.
func Probe(t testing.TB, file string) (codec string, rate int, seconds float64) {
	t.Helper()
	return probe(file)
}

func probe(file string) (codec string, rate int, seconds float64) {
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name,sample_rate", "-of", "default=nw=1", file).Output()
	if err != nil {
		return "", 0, 0 // a file nginx has just created
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "codec_name":
			codec = v
		case "sample_rate":
			rate, _ = strconv.Atoi(v)
		}
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", file).Output()
	if err != nil {
		return codec, rate, 0
	}
	first, end := -1.0, 0.0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pts, dur, _ := strings.Cut(line, ",")
		p, err1 := strconv.ParseFloat(pts, 64)
		d, err2 := strconv.ParseFloat(strings.TrimRight(dur, ","), 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if first < 0 {
			first = p
		}
		end = max(end, p+d)
	}
	if first < 0 {
		return codec, rate, 0
	}
	return codec, rate, end - first
}

// MP3 makes a sine tone of the given length as MP3. With bare, it is only
// frames (no ID3 tag, no Xing header), as a recorder's frame callback gives.
func MP3(t testing.TB, seconds float64, rate, channels int, bitrate string, bare bool) []byte {
	t.Helper()
	out, err := GenerateMP3(seconds, rate, channels, bitrate, bare)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// GenerateMP3 is MP3 for tools outside tests.
func GenerateMP3(seconds float64, rate, channels int, bitrate string, bare bool) ([]byte, error) {
	args := []string{"-hide_banner", "-loglevel", "error", "-f", "lavfi",
		"-i", fmt.Sprintf("sine=f=440:d=%g:r=%d", seconds, rate),
		"-ac", strconv.Itoa(channels), "-ar", strconv.Itoa(rate), "-b:a", bitrate}
	if bare {
		args = append(args, "-write_xing", "0", "-id3v2_version", "0")
	}
	args = append(args, "-f", "mp3", "pipe:1")
	var stderr bytes.Buffer
	cmd := exec.Command("ffmpeg", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ffmpeg: %v\n%s", err, stderr.String())
	}
	return out, nil
}

// Stop shuts nginx down (its publishers are disconnected).
func (s *Server) Stop() { s.stop() }

// Restart starts nginx again on the same port, after Stop.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	nginx := Require(t, "nginx")[0]
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = s.start(nginx); err == nil {
			return
		}
	}
	t.Fatalf("nginx-rtmp did not restart on %s: %v", s.Addr, err)
}

// MaxPTSGap is the largest step between consecutive audio packets'
// timestamps in a recording, in seconds: a hole in the stream shows here.
func MaxPTSGap(t testing.TB, file string) float64 {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0",
		"-show_entries", "packet=pts_time", "-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	prev, gap := -1.0, 0.0
	for _, line := range strings.Fields(string(out)) {
		p, err := strconv.ParseFloat(strings.TrimRight(line, ","), 64)
		if err != nil {
			continue
		}
		if prev >= 0 {
			gap = max(gap, p-prev)
		}
		prev = p
	}
	return gap
}
