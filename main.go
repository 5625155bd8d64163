// Command ffmpeg-publisher lets clients that cannot speak RTMP go live: it
// takes MP3 over HTTP and WebSocket and publishes one continuous RTMP stream
// per live ID, each through one long-lived ffmpeg.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/ffpipe"
	"ffmpeg-publisher/hooks"
	"ffmpeg-publisher/metrics"
	"ffmpeg-publisher/session"
	"ffmpeg-publisher/transport"
	"ffmpeg-publisher/web"

	"github.com/sirupsen/logrus"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// envPrefix: every flag -some-name can also be set as PUBLISHER_SOME_NAME.
const envPrefix = "PUBLISHER_"

// HTTP server limits against idle clients and huge headers. Headers have
// -header-timeout; bodies have their own deadlines per endpoint
// (-body-timeout), because uploads and WebSockets last as long as a stream.
const (
	idleTimeout    = 120 * time.Second
	maxHeaderBytes = 16 << 10
)

// Config is everything the command line and environment set.
type Config struct {
	Listen          string
	RTMP            string
	FFmpeg          string
	Key             string
	UploadDirectory string
	AudioBitrate    string
	FFmpegNice      int
	MaxStarting     int
	AudioCodec      string
	AACCoder        string
	IdleTimeout     time.Duration
	MaxSessions     int
	Takeover        bool
	MaxBody         int64
	MaxMessage      int64
	BodyTimeout     time.Duration
	WSReadTimeout   time.Duration
	ShutdownGrace   time.Duration
	AllowedOrigins  string
	PublicOrigin    string
	TrustedProxies  string
	LogLevel        string
	LogFormat       string
	TokenSecret     string
	AdminKey        string
	RateRequests    float64
	RateSessions    float64
	TLSCert         string
	TLSKey          string
	DrainDelay      time.Duration
	HeaderTimeout   time.Duration
	StallTimeout    time.Duration
	GapFill         time.Duration
	Prestart        bool
	PrestartWait    time.Duration // no flag: 0 means session's default
	Buffer          string
	SeqWait         time.Duration
	LegacyErrcode   int
	TLSCA           string
	Outputs         outputList
	OnPublish       string
	OnUpdate        string
	OnDone          string
	HookTimeout     time.Duration
	HookInterval    time.Duration
	HookFail        string
	HookSecret      string
	HookOnly        bool
	AudioRate       int
	AudioChannels   int
	Video           string
	OutputsFile     string
	RecordDir       string
	RecordKeep      time.Duration
	Admit           admission.Thresholds
	AdmitPressure   string
	AdmitMemoryMiB  int64
	AdmitMemory     admission.Memory // where memory is read; zero: this system's files
	WebRTCUDP       string
	WebRTCTCP       string
	WebRTCIP        string
}

// parseConfig reads flags, then fills every flag not given on the command
// line from its environment variable.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("ffmpeg-publisher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", ":8081", "address to serve HTTP on")
	fs.StringVar(&c.RTMP, "rtmp", "rtmp://127.0.0.1:1935/live", "RTMP base URL: a stream goes to <rtmp>/<id>, or to the URL with {id} replaced")
	fs.StringVar(&c.FFmpeg, "ffmpeg", "ffmpeg", "ffmpeg executable")
	fs.StringVar(&c.Key, "key", "testkey", `publish key clients send as key=; "" disables the check`)
	fs.StringVar(&c.UploadDirectory, "upload-directory", "", "deprecated and ignored: no temporary files are written")
	fs.StringVar(&c.AudioBitrate, "audio-bitrate", "64k", "AAC bitrate")
	fs.StringVar(&c.AudioCodec, "audio-codec", "aac", `output codec: "aac", or "copy" to pass MP3 through`)
	fs.StringVar(&c.AACCoder, "aac-coder", "twoloop", `ffmpeg's AAC coder: "twoloop" (its default), or "fast", which takes about half the encoding CPU (BENCHMARKS.md, "Encoding: CPU against quality")`)
	fs.IntVar(&c.MaxStarting, "max-starting", 0, "most ffmpeg processes loading at once (others wait their turn): a herd of streams starting together no longer starves the running ones; 0: no limit")
	fs.IntVar(&c.FFmpegNice, "ffmpeg-nice", 0, "run ffmpeg processes at this nice value under SCHED_BATCH: quicker acknowledgements on a lightly loaded machine, fewer streams at full load; 0 leaves them as they are")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", session.DefaultIdleTimeout, "end a stream after this long without data")
	fs.IntVar(&c.MaxSessions, "max-sessions", 0, "most live streams at once; 0: no fixed limit, admission control refuses new streams past what the machine holds (CPU, memory, lag, starts)")
	fs.BoolVar(&c.Takeover, "takeover", true, "a new WebSocket, upload or WHIP connection for a live ID takes it from the connection holding it once that one has sent nothing for 1 s (a client that changed networks continues at once; one that streams is never replaced), as the on_publish hook approves; the old one is closed with 1008 or answered 409: replaced. false: the newcomer gets 409 until the old connection times out")
	fs.DurationVar(&c.Admit.Lag, "admit-lag", admission.DefaultLag, "refuse new streams while the publishing streams' lag (90th percentile) reaches this; 0 turns this measure off")
	fs.IntVar(&c.Admit.Starting, "admit-starting", admission.DefaultStarting, "refuse new streams while this many ffmpegs have not published yet; 0 turns this measure off")
	fs.Float64Var(&c.Admit.CPU, "admit-cpu", admission.DefaultCPU, "refuse new streams while CPU pressure (PSI some avg10, percent) reaches this; 0 turns this measure off")
	fs.Int64Var(&c.AdmitMemoryMiB, "admit-memory", admission.DefaultMemory>>20, "refuse new streams while less memory than this (MiB), and than a tenth of the total, is available: the kernel's MemAvailable, or the server's cgroup limits (a container, a systemd slice's MemoryMax) less usage if nearer; 0 turns this measure off")
	fs.StringVar(&c.AdmitPressure, "admit-pressure-file", admission.DefaultPressureFile, "CPU pressure (PSI) file read for -admit-cpu: a cgroup's cpu.pressure in a container; unreadable means unknown")
	fs.Int64Var(&c.MaxBody, "max-body", transport.DefaultMaxBody, "largest /base64 request body in bytes")
	fs.Int64Var(&c.MaxMessage, "max-message", transport.DefaultMaxMessage, "largest WebSocket message in bytes")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", transport.DefaultBodyTimeout, "time to receive a /base64 body, or a pause in an upload")
	fs.DurationVar(&c.WSReadTimeout, "ws-read-timeout", transport.DefaultWSReadTimeout, "close a WebSocket that sends no audio this long (answering pings does not count); pings go every third of it")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, time for streams to flush before ffmpeg is killed")
	fs.StringVar(&c.AllowedOrigins, "allowed-origins", "", `comma-separated origins of other sites whose pages may open a WebSocket ("*": any)`)
	fs.StringVar(&c.PublicOrigin, "public-origin", "", "comma-separated origins this server's pages are reached at (https://publisher.example.com); without it, only when reached by IP address or localhost")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.TokenSecret, "token-secret", "", "secret that signs publish tokens; empty disables tokens")
	fs.StringVar(&c.AdminKey, "admin-key", "", "key for the stream API and token minting; empty turns them off")
	fs.Float64Var(&c.RateRequests, "rate-requests", 50, "API requests per second per client IP (bursts of twice that); 0: no limit")
	fs.Float64Var(&c.RateSessions, "rate-sessions", 2, "new streams per second per client IP (bursts of 5 or twice that); 0: no limit")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate: serve HTTPS and WSS (with -tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for -tls-cert")
	fs.DurationVar(&c.StallTimeout, "stall-timeout", session.DefaultStallTimeout, "restart ffmpeg when its output stops advancing this long while audio arrives")
	fs.BoolVar(&c.Prestart, "prestart", true, "start a WebSocket's or upload's ffmpeg when it connects, before its first audio, so that ffmpeg's start overlaps the client's first frame (stopped if no audio comes within 10s)")
	fs.DurationVar(&c.GapFill, "gap-fill", time.Second, "feed silence after this long without client audio, keeping the publish alive; 0 turns it off")
	fs.StringVar(&c.Buffer, "buffer", "10s", "audio held per stream while its ffmpeg restarts: a duration (10s) or a size (512KiB, 1MiB)")
	fs.Var(&c.Outputs, "output", "output URL template, {id} replaced (as -rtmp); repeat for restreams: the first is the primary, each other one gets the stream best-effort. Given, it replaces -rtmp. In the environment, separated by spaces")
	fs.IntVar(&c.AudioRate, "audio-rate", 0, "published sample rate, e.g. 44100 or 48000 (what YouTube, Facebook and Twitch expect); 0 keeps the input's")
	fs.IntVar(&c.AudioChannels, "audio-channels", 0, "published channels (1 or 2); 0 keeps the input's")
	fs.StringVar(&c.Video, "video", "none", "video track for ingests that require one: none, black, or image:FILE (a still picture), H.264 at 5 fps with a keyframe every 2 s")
	fs.StringVar(&c.OutputsFile, "outputs-file", "", "file of rules \"PATTERN URL [URL...]\" sending matching IDs to their outputs ({id} replaced), reread on SIGHUP; an ID no rule matches goes to -output or -rtmp")
	fs.StringVar(&c.RecordDir, "record-dir", "", "also write every stream to this directory, a file per publish attempt named by ID and start time (fragmented MP4: .m4a, .mp4 with -video); a slow or full disk never holds up the outputs")
	fs.DurationVar(&c.RecordKeep, "record-keep", 0, "delete recordings older than this (168h: a week), checked hourly; 0 keeps them")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM file of the CAs that rtmps:// servers' certificates are checked against (a private CA); empty: the system's")
	fs.DurationVar(&c.SeqWait, "seq-wait", session.DefaultSeqWait, "how long a numbered /base64 chunk (seq=) waits for a missing predecessor")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", 10*time.Second, "time for a client to send its request headers (against slowloris)")
	fs.IntVar(&c.LegacyErrcode, "legacy-success-errcode", 0, "errcode of a successful /base64 reply: 0 as documented, or 200 as the old server answered, for clients that test errcode === 200")
	fs.DurationVar(&c.DrainDelay, "drain-delay", 0, "on SIGTERM, report not ready and keep serving this long before closing streams")
	fs.StringVar(&c.OnPublish, "on-publish", "", "URL the server POSTs to before a stream starts: a 2xx allows it, anything else refuses it")
	fs.StringVar(&c.OnUpdate, "on-update", "", "URL the server POSTs each live stream's figures to every -hook-interval: a non-2xx answer ends the stream")
	fs.StringVar(&c.OnDone, "on-done", "", "URL the server POSTs each stream's final figures to when it ends (retried)")
	fs.DurationVar(&c.HookTimeout, "hook-timeout", hooks.DefaultTimeout, "time a hook has to answer")
	fs.DurationVar(&c.HookInterval, "hook-interval", hooks.DefaultInterval, "time between on_update calls of a stream")
	fs.StringVar(&c.HookFail, "hook-fail", "closed", `when on_publish does not answer: "closed" refuses the stream (503), "open" lets it start`)
	fs.StringVar(&c.HookSecret, "hook-secret", "", "secret that signs every hook call (X-Publisher-Signature); empty sends them unsigned")
	fs.BoolVar(&c.HookOnly, "hook-only", false, "with -on-publish, the hook alone decides who publishes: keys and tokens are not checked")
	fs.StringVar(&c.WebRTCUDP, "webrtc-udp", "", "UDP address every WHIP (WebRTC) publisher's audio arrives on, e.g. :8189; empty turns WHIP off")
	fs.StringVar(&c.WebRTCTCP, "webrtc-tcp", "", "TCP address for WHIP publishers whose network blocks UDP (ICE-TCP), e.g. :8189; empty: UDP only")
	fs.StringVar(&c.WebRTCIP, "webrtc-ip", "", "comma-separated public IPs WHIP publishers are told to send to (a server behind NAT); empty: the interfaces' addresses")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		if v := getenv(env); v != "" && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	if err != nil {
		return c, err
	}
	switch {
	case c.LegacyErrcode != 0 && c.LegacyErrcode != http.StatusOK:
		return c, fmt.Errorf("-legacy-success-errcode must be 0 or 200, not %d", c.LegacyErrcode)
	case c.MaxStarting < 0:
		return c, fmt.Errorf("-max-starting must be 0 or more, not %d", c.MaxStarting)
	case c.FFmpegNice < 0 || c.FFmpegNice > 19:
		return c, fmt.Errorf("-ffmpeg-nice must be 0 to 19, not %d", c.FFmpegNice)
	case c.AACCoder != "twoloop" && c.AACCoder != "fast":
		return c, fmt.Errorf(`-aac-coder must be "twoloop" or "fast", not %q`, c.AACCoder)
	case c.AudioCodec != "aac" && c.AudioCodec != "copy":
		return c, fmt.Errorf("-audio-codec must be aac or copy, not %q", c.AudioCodec)
	case c.LogFormat != "text" && c.LogFormat != "json":
		return c, fmt.Errorf("-log-format must be text or json, not %q", c.LogFormat)
	case c.IdleTimeout <= 0 || c.BodyTimeout <= 0 || c.ShutdownGrace <= 0 || c.HeaderTimeout <= 0 || c.WSReadTimeout <= 0:
		return c, errors.New("timeouts must be positive")
	case c.MaxBody <= 0 || c.MaxMessage <= 0 || c.MaxSessions < 0 || c.RateRequests < 0 || c.RateSessions < 0:
		return c, errors.New("limits must be positive")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return c, errors.New("-tls-cert and -tls-key go together")
	case c.Admit.Lag < 0 || c.Admit.Starting < 0 || c.Admit.CPU < 0 || c.Admit.CPU > 100 || c.AdmitMemoryMiB < 0 || c.AdmitMemoryMiB > 1<<40:
		return c, errors.New("-admit-lag, -admit-starting, -admit-cpu and -admit-memory must not be negative, -admit-cpu at most 100")
	case c.DrainDelay < 0 || c.GapFill < 0 || c.StallTimeout <= 0 || c.SeqWait <= 0:
		return c, errors.New("-drain-delay and -gap-fill must not be negative, -stall-timeout must be positive")
	}
	if _, _, err := parseBuffer(c.Buffer); err != nil {
		return c, err
	}
	if err := checkPlatformFlags(c); err != nil {
		return c, err
	}
	if err := checkOutputFlags(c); err != nil {
		return c, err
	}
	if c.TLSCA != "" {
		if _, err := os.Stat(c.TLSCA); err != nil {
			return c, fmt.Errorf("-tls-ca: %w", err)
		}
	}
	if err := checkHooks(c); err != nil {
		return c, err
	}
	if _, err := origins(c); err != nil {
		return c, err
	}
	if _, err := transport.ParseCIDRs(c.TrustedProxies); err != nil {
		return c, fmt.Errorf("-trusted-proxies: %w", err)
	}
	return c, nil
}

// origins merges -public-origin and -allowed-origins: both name pages
// that may open a WebSocket, this server's own and other sites'.
func origins(c Config) ([]string, error) {
	public, err := transport.ParseOrigins(c.PublicOrigin)
	if err != nil {
		return nil, fmt.Errorf("-public-origin: %w", err)
	}
	allowed, err := transport.ParseOrigins(c.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("-allowed-origins: %w", err)
	}
	return append(public, allowed...), nil
}

func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func newLogger(c Config, out io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(out)
	level, err := logrus.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	l.SetLevel(level)
	if c.LogFormat == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	return l, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		os.Exit(tokenCommand(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ffmpeg-publisher:", err)
		os.Exit(2)
	}
	logger, err := newLogger(cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ffmpeg-publisher:", err)
		os.Exit(2)
	}
	log := logrus.NewEntry(logger)
	keepHangups(log, cfg.OutputsFile != "")
	stop, hurry, release := shutdownSignals(log)
	defer release()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.WithError(err).Fatal("cannot listen")
	}
	if err := serveUntil(stop, hurry, cfg, ln, log); err != nil {
		log.WithError(err).Fatal("server failed")
	}
}

// shutdownSignals turns SIGINT and SIGTERM into two contexts: the first
// signal ends stop (a graceful shutdown), a second one ends hurry (cut it
// short), so an operator or a service manager that asks again is obeyed
// instead of ignored. release stops listening.
func shutdownSignals(log *logrus.Entry) (stop, hurry context.Context, release func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	stop, stopNow := context.WithCancel(context.Background())
	hurry, hurryNow := context.WithCancel(context.Background())
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		for n := 0; n < 2; n++ {
			select {
			case sig := <-sigs:
				if n == 0 {
					log.WithField("signal", sig.String()).Info("shutting down; a second signal stops at once")
					stopNow()
				} else {
					log.WithField("signal", sig.String()).Warn("second signal: stopping now, ffmpeg processes are killed")
					hurryNow()
				}
			case <-quit:
				return
			}
		}
	}()
	return stop, hurry, func() {
		signal.Stop(sigs)
		close(quit)
		<-exited
		stopNow()
		hurryNow()
	}
}

// serve runs the server on ln until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, cfg Config, ln net.Listener, log *logrus.Entry) error {
	return serveUntil(ctx, context.Background(), cfg, ln, log)
}

// serveUntil is serve, where the end of hurry cuts the shutdown short: no
// more drain delay, and the remaining ffmpegs are killed at once.
func serveUntil(ctx, hurry context.Context, cfg Config, ln net.Listener, log *logrus.Entry) error {
	if cfg.UploadDirectory != "" {
		log.Warn("-upload-directory is deprecated and ignored: audio goes straight to ffmpeg, no files are written")
	}
	ffmpegPath, err := exec.LookPath(cfg.FFmpeg)
	if err != nil {
		return fmt.Errorf("ffmpeg not found (-ffmpeg %q): %w", cfg.FFmpeg, err)
	}
	route, err := newRoute(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := startArchive(ctx, cfg, log); err != nil {
		return err
	}
	if cfg.HookOnly {
		log.Info("-hook-only: the on_publish hook alone decides who publishes")
	} else if cfg.Key == "testkey" {
		log.Warn("using the default key \"testkey\": set -key or PUBLISHER_KEY")
	} else if cfg.Key == "" {
		log.Warn("-key is empty: anyone can publish")
	}
	bufBytes, bufAudio, _ := parseBuffer(cfg.Buffer)
	ready := newFFmpegCheck(ffmpegPath)
	if err := ready.check(); err != nil {
		return err
	}
	mets := metrics.New()
	hks := newHooks(cfg, mets, log)
	var watcher session.Watcher // not a nil *hooks.Hooks in an interface
	var publishHook transport.PublishHook
	if hks != nil {
		watcher, publishHook = hks, hks
		defer hks.Close(context.Background()) // a no-op after the shutdown's Close; stops the worker if serving failed
	}
	launcher := ffpipe.NewLauncher(cfg.MaxStarting)
	defer launcher.Close() // after reg.Close: every ffmpeg has ended
	var reg *session.Registry
	th := cfg.Admit
	th.Memory = cfg.AdmitMemoryMiB << 20
	mem := cfg.AdmitMemory
	if mem == (admission.Memory{}) {
		mem = admission.SystemMemory()
	}
	adm := admission.New(admission.Machine(func() []session.StreamLoad { return reg.Loads(nil) }, cfg.AdmitPressure, mem), th, log)
	reg = session.NewRegistry(session.Config{
		Admission: adm,
		Observer:  mets,
		Watcher:   watcher,
		FFmpeg: ffpipe.Config{
			Binary:         ffmpegPath,
			AudioCodec:     cfg.AudioCodec,
			AudioBitrate:   cfg.AudioBitrate,
			AACCoder:       aacCoder(cfg.AACCoder),
			Nice:           cfg.FFmpegNice,
			Launcher:       launcher,
			TLSCA:          cfg.TLSCA,
			OutputRate:     cfg.AudioRate,
			OutputChannels: cfg.AudioChannels,
			Video:          cfg.Video,
		},
		RTMPBase:     cfg.RTMP,
		Route:        route,
		RecordDir:    cfg.RecordDir,
		IdleTimeout:  cfg.IdleTimeout,
		MaxSessions:  cfg.MaxSessions,
		Takeover:     cfg.Takeover,
		StallTimeout: cfg.StallTimeout,
		GapFill:      cfg.GapFill,
		Prestart:     cfg.Prestart,
		PrestartWait: cfg.PrestartWait,
		BufferBytes:  bufBytes,
		BufferAudio:  bufAudio,
		SeqWait:      cfg.SeqWait,
	}, log)
	whipHost, err := newWHIP(cfg, log)
	if err != nil {
		return err
	}
	if whipHost != nil {
		defer whipHost.Close() // after the API's Shutdown: every peer has ended
	}
	allowedOrigins, _ := origins(cfg)
	proxies, _ := transport.ParseCIDRs(cfg.TrustedProxies)
	if cfg.TokenSecret != "" && len(cfg.TokenSecret) < 16 {
		log.Warn("-token-secret is short: use at least 32 random characters")
	}
	api := transport.New(transport.Config{
		Hooks:          publishHook,
		HookOnly:       cfg.HookOnly,
		Key:            cfg.Key,
		TokenSecret:    []byte(cfg.TokenSecret),
		AdminKey:       cfg.AdminKey,
		RateRequests:   cfg.RateRequests,
		RateSessions:   cfg.RateSessions,
		Ready:          readiness(ready.check, adm.Check),
		Admission:      adm.Status,
		Metrics:        mets.Handler(),
		Observer:       mets,
		MaxBody:        cfg.MaxBody,
		MaxMessage:     cfg.MaxMessage,
		BodyTimeout:    cfg.BodyTimeout,
		WSReadTimeout:  cfg.WSReadTimeout,
		AllowedOrigins: allowedOrigins,
		TrustedProxies: proxies,
		Version:        version,
		Demo:           web.Handler(),
		SuccessErrcode: cfg.LegacyErrcode,
		Status:         web.StatusHandler(),
		WHIP:           whipHost,
	}, reg, log)
	mets.WatchLimits(api.LimitStats)
	mets.WatchSessions(cfg.MaxSessions, reg.List)
	mets.WatchWebRTC(reg.List)
	mets.WatchAdmission(adm.Status)
	stopAdmission := runAdmission(adm)
	defer stopAdmission()
	srv := &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          nil,
	}
	log.WithFields(logrus.Fields{
		"listen": ln.Addr().String(), "outputs": cfg.Outputs.shown(cfg.RTMP), "ffmpeg": ffmpegPath, "version": version,
	}).Info("ffmpeg-publisher listening")

	serveErr := make(chan error, 1)
	go func() {
		if cfg.TLSCert != "" {
			serveErr <- srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}

	// Shutdown: stop accepting, tell WebSockets to go, end every session
	// (stdin closed: ffmpeg sends what it was given), then wait. The
	// grace context is fresh: ctx is already cancelled.
	api.Drain()
	if cfg.DrainDelay > 0 {
		reg.Drain()
		log.WithField("drain_delay", cfg.DrainDelay).Info("draining: not ready, still serving")
		select {
		case <-time.After(cfg.DrainDelay):
		case <-hurry.Done():
		case err := <-serveErr:
			return err
		}
	}
	log.WithField("grace", cfg.ShutdownGrace).Info("shutting down")
	graceCtx, cancel := context.WithTimeout(hurry, cfg.ShutdownGrace)
	defer cancel()
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Shutdown(graceCtx) }()
	wsDone := make(chan struct{})
	go func() { api.Shutdown(graceCtx); close(wsDone) }()
	if err := reg.Close(graceCtx); err != nil {
		log.WithError(err).Warn("grace period over: remaining ffmpeg processes were killed")
	}
	if hks != nil {
		flushCtx, cancelFlush := context.WithTimeout(hurry, hooksFlush)
		hks.Close(flushCtx) // every stream has ended: its on_done is queued
		cancelFlush()
	}
	<-wsDone
	if err := <-httpDone; err != nil {
		srv.Close()
	}
	log.Info("stopped")
	return nil
}

// ffmpegCheck runs "ffmpeg -version" to tell whether ffmpeg can start, at
// most once per ffmpegCheckEvery (readiness probes come every few seconds).
type ffmpegCheck struct {
	path string

	mu   sync.Mutex // guards the fields below
	at   time.Time
	last error
}

const ffmpegCheckEvery = 30 * time.Second

func newFFmpegCheck(path string) *ffmpegCheck { return &ffmpegCheck{path: path} }

func (c *ffmpegCheck) check() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < ffmpegCheckEvery {
		return c.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.at = time.Now()
	c.last = nil
	if out, err := exec.CommandContext(ctx, c.path, "-hide_banner", "-version").Output(); err != nil || !strings.HasPrefix(string(out), "ffmpeg version") {
		c.last = fmt.Errorf("ffmpeg (%s) cannot run: %v", c.path, err)
	}
	return c.last
}

// tokenCommand is "ffmpeg-publisher token -id ID -ttl 1h": it prints a
// publish token signed with -token-secret (or PUBLISHER_TOKEN_SECRET).
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ffmpeg-publisher token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "live ID the token allows publishing to")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	secret := fs.String("token-secret", getenv(envName("token-secret")), "the server's -token-secret (default $"+envName("token-secret")+")")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintln(stderr, "ffmpeg-publisher token: -ttl must be positive")
		return 2
	}
	token, err := transport.MintToken([]byte(*secret), *id, time.Now().Add(*ttl))
	if err != nil {
		fmt.Fprintln(stderr, "ffmpeg-publisher token:", err)
		return 2
	}
	fmt.Fprintln(stdout, token)
	return 0
}

// The most -buffer may hold per stream, in memory (which admission
// control's memory measure sees): 10 minutes of 320 kbps MP3 fit in 64 MiB.
const (
	maxBufferBytes = 64 << 20
	maxBufferAudio = 10 * time.Minute
)

// parseBuffer reads -buffer: a duration of audio, or a size in bytes with
// an optional KiB/MiB (or k/M, KB/MB) suffix.
func parseBuffer(v string) (bytes int, audio time.Duration, err error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		if d > maxBufferAudio {
			return 0, 0, fmt.Errorf("-buffer %q: at most %s of audio per stream", v, maxBufferAudio)
		}
		return 0, d, nil
	}
	num, mult := strings.TrimSpace(v), 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"KB", 1000}, {"MB", 1000 * 1000}, {"k", 1000}, {"M", 1000 * 1000}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return 0, 0, fmt.Errorf("-buffer %q: want a duration like 10s or a size like 512KiB", v)
	}
	if n > maxBufferBytes/mult {
		return 0, 0, fmt.Errorf("-buffer %q: at most %d MiB per stream", v, maxBufferBytes>>20)
	}
	return n * mult, 0, nil
}

// hooksFlush bounds how long shutdown waits for on_done notifications still
// queued; it fits in the margin the shipped unit's TimeoutStopSec leaves.
const hooksFlush = 3 * time.Second

// checkHooks validates the hook flags.
func checkHooks(c Config) error {
	for _, h := range []struct{ flag, url string }{{"-on-publish", c.OnPublish}, {"-on-update", c.OnUpdate}, {"-on-done", c.OnDone}} {
		if h.url == "" {
			continue
		}
		if u, err := url.Parse(h.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s must be an http:// or https:// URL", h.flag)
		}
	}
	switch {
	case c.HookFail != "open" && c.HookFail != "closed":
		return fmt.Errorf("-hook-fail must be open or closed, not %q", c.HookFail)
	case c.HookTimeout <= 0 || c.HookInterval <= 0:
		return errors.New("-hook-timeout and -hook-interval must be positive")
	case c.HookOnly && c.OnPublish == "":
		return errors.New("-hook-only needs -on-publish: without it anyone could publish")
	}
	return nil
}

// newHooks returns the hooks the flags ask for, or nil when none is set.
func newHooks(c Config, mets *metrics.Metrics, log *logrus.Entry) *hooks.Hooks {
	if c.OnPublish == "" && c.OnUpdate == "" && c.OnDone == "" {
		return nil
	}
	if c.HookSecret == "" {
		log.Warn("hook calls are not signed: set -hook-secret so the application can verify them")
	}
	return hooks.New(hooks.Config{
		OnPublish: c.OnPublish, OnUpdate: c.OnUpdate, OnDone: c.OnDone,
		Timeout: c.HookTimeout, Interval: c.HookInterval, Secret: []byte(c.HookSecret),
		FailOpen: c.HookFail == "open", RevokedFor: c.IdleTimeout, Observer: mets,
	}, log)
}

// aacCoder is -aac-coder as ffpipe takes it: ffmpeg's default is left out
// of the command line.
func aacCoder(flag string) string {
	if flag == "twoloop" {
		return ""
	}
	return flag
}
