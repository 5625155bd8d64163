package admission

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"ffmpeg-publisher/session"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestParsePressure reads "some avg10" from the kernel's PSI text, and
// says unknown for text without it (a kernel without PSI, or garbage).
func TestParsePressure(t *testing.T) {
	for _, c := range []struct {
		text string
		want float64
	}{
		{"some avg10=12.41 avg60=13.30 avg300=22.89 total=7858234078\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", 12.41},
		{"full avg10=50.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=87.5 avg60=1 avg300=1 total=1\n", 87.5},
		{"some avg60=13.30 total=1\n", -1},
		{"some avg10=x\n", -1},
		{"", -1},
	} {
		if got := ParsePressure([]byte(c.text)); got != c.want {
			t.Errorf("ParsePressure(%q) = %v, want %v", c.text, got, c.want)
		}
	}
}

// TestMachineProbe: the probe takes the streams' lag and starts from the
// registry's list and the CPU pressure from the file, and treats a
// missing file (no PSI in this kernel) as unknown, never as pressure.
func TestMachineProbe(t *testing.T) {
	var streams []session.StreamLoad
	for i := 0; i < 10; i++ { // lags 0.1 … 1.0 s
		streams = append(streams, session.StreamLoad{State: session.StateLive, FFmpeg: "publishing", Held: time.Duration(i+1) * 100 * time.Millisecond})
	}
	streams = append(streams,
		session.StreamLoad{State: session.StateLive, FFmpeg: "publishing", Held: 30 * time.Second, Stalled: true}, // not our load
		session.StreamLoad{State: session.StateLive, FFmpeg: "restarting", Held: 9 * time.Second},                 // nor this
		session.StreamLoad{State: session.StateNew, FFmpeg: "not started"},
		session.StreamLoad{State: session.StateLive, FFmpeg: "starting", Held: 2 * time.Second},
		session.StreamLoad{State: session.StateEnding, FFmpeg: "starting"},
		session.StreamLoad{State: session.StateNew, FFmpeg: "starting", Waiting: true}, // loaded, waits for its client
	)
	psi := t.TempDir() + "/cpu"
	if err := os.WriteFile(psi, []byte("some avg10=42.00 avg60=1.00 avg300=1.00 total=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mem := Memory{Meminfo: t.TempDir() + "/meminfo"}
	if err := os.WriteFile(mem.Meminfo, []byte("MemTotal:  4000000 kB\nMemAvailable:  1000000 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := Machine(func() []session.StreamLoad { return streams }, psi, mem)()
	want := Load{Streams: 10, Lag: 900 * time.Millisecond, Starting: 2, CPU: 42, Memory: 1000000 << 10, MemoryTotal: 4000000 << 10}
	if l != want {
		t.Errorf("load %+v, want %+v", l, want)
	}
	if l := Machine(func() []session.StreamLoad { return nil }, psi+".missing", Memory{})(); l.CPU != -1 || l.Memory != 0 || l.Streams != 0 || l.Lag != 0 {
		t.Errorf("no PSI, no streams: %+v", l)
	}
}

// TestSaturationHysteresis: any measure at its threshold saturates at once;
// the server takes streams again only after every measure has stayed under
// 80% of its threshold for calmFor, and a relapse restarts that wait.
func TestSaturationHysteresis(t *testing.T) {
	th := Thresholds{Lag: time.Second, Starting: 10, CPU: 50, Memory: 100 << 20}
	logger, logs := test.NewNullLogger()
	c := New(nil, th, logrus.NewEntry(logger))
	now := time.Now()
	look := func(l Load) {
		now = now.Add(Every)
		c.observe(l, now)
	}
	calm := Load{Streams: 5, Lag: 300 * time.Millisecond, CPU: 10, Memory: 1 << 30}
	with := func(f func(*Load)) Load { l := calm; f(&l); return l }
	look(calm)
	if err := c.Check(); err != nil {
		t.Fatalf("calm: %v", err)
	}
	for _, hot := range []struct {
		load, warm Load // at the threshold; under it but above 80% of it
		why        string
	}{
		{with(func(l *Load) { l.Lag = time.Second }), with(func(l *Load) { l.Lag = 850 * time.Millisecond }), ReasonLag},
		{Load{Starting: 10, CPU: -1}, with(func(l *Load) { l.Starting = 9 }), ReasonStarting},
		{Load{CPU: 50}, with(func(l *Load) { l.CPU = 45 }), ReasonCPU},
		{Load{CPU: -1, Memory: 99 << 20}, with(func(l *Load) { l.Memory = 110 << 20 }), ReasonMemory}, // free memory: less is worse
	} {
		look(hot.load)
		var sat *Saturated
		if err := c.Check(); !errors.As(err, &sat) || sat.Reason != hot.why || sat.RetryAfter <= 0 {
			t.Fatalf("%+v: Check = %v, want saturated by %s", hot.load, err, hot.why)
		}
		for i := 0; i < 3*calmLooks; i++ {
			look(hot.warm)
		}
		if c.Check() == nil {
			t.Fatalf("%s: left saturation within 80%% of the threshold (%+v)", hot.why, hot.warm)
		}
		for i := 0; i < calmLooks-1; i++ {
			look(calm)
		}
		if c.Check() == nil {
			t.Fatalf("left saturation after %d calm looks, want %d", calmLooks-1, calmLooks)
		}
		look(calm)
		if err := c.Check(); err != nil {
			t.Fatalf("still saturated after %d calm looks: %v", calmLooks, err)
		}
	}
	// One line when saturation begins, one when it ends: no more however
	// long it lasts.
	var levels []logrus.Level
	for _, e := range logs.AllEntries() {
		levels = append(levels, e.Level)
	}
	want := []logrus.Level{logrus.WarnLevel, logrus.InfoLevel, logrus.WarnLevel, logrus.InfoLevel, logrus.WarnLevel, logrus.InfoLevel, logrus.WarnLevel, logrus.InfoLevel}
	if !slices.Equal(levels, want) {
		t.Errorf("logged %v, want %v", levels, want)
	}
	// Unknown CPU (no PSI) and no streams never saturate.
	look(Load{CPU: -1})
	if err := c.Check(); err != nil {
		t.Errorf("unknown load: %v", err)
	}
}

// TestAdmitHerd: between two looks, admitted streams count as starting,
// so a herd arriving at once is let in up to the start threshold and the
// rest is refused (and counted) until a look sees the starts through.
func TestAdmitHerd(t *testing.T) {
	c := New(nil, Thresholds{Starting: 4, CPU: 50}, nil)
	c.observe(Load{Starting: 1, CPU: -1}, time.Now())
	for i := 0; i < 3; i++ {
		if err := c.Admit(); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	var sat *Saturated
	if err := c.Admit(); !errors.As(err, &sat) || sat.Reason != ReasonStarting {
		t.Fatalf("fifth start at once: %v, want refused", err)
	}
	if err := c.Check(); err != nil {
		t.Errorf("a herd's refusal is not saturation: %v", err)
	}
	c.observe(Load{Starting: 0, CPU: -1}, time.Now())
	if err := c.Admit(); err != nil {
		t.Errorf("after the starts: %v", err)
	}
	if got := c.Status().Refused[ReasonStarting]; got != 1 {
		t.Errorf("refused %d, want 1", got)
	}
	// Saturated: every new stream is refused and counted under its reason.
	c.observe(Load{CPU: 99}, time.Now())
	if err := c.Admit(); !errors.As(err, &sat) || sat.Reason != ReasonCPU {
		t.Errorf("saturated: %v", err)
	}
	if st := c.Status(); !st.Saturated || st.Reason != ReasonCPU || st.Refused[ReasonCPU] != 1 {
		t.Errorf("status %+v", st)
	}
}

// TestRunLooks: Run looks through the probe until its context ends.
func TestRunLooks(t *testing.T) {
	looked := make(chan struct{}, 1)
	c := New(func() Load {
		select {
		case looked <- struct{}{}:
		default:
		}
		return Load{CPU: 100}
	}, DefaultThresholds(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	<-looked
	cancel()
	<-done
	if c.Check() == nil {
		t.Error("the probe's load was not observed")
	}
}

// One lagging stream never saturates the server alone, however few run.
func TestOneLaggingStreamIsNotTheMachine(t *testing.T) {
	pub := func(held time.Duration) session.StreamLoad {
		return session.StreamLoad{State: session.StateLive, FFmpeg: "publishing", Held: held}
	}
	for _, c := range []struct {
		streams []session.StreamLoad
		want    time.Duration
	}{
		{[]session.StreamLoad{pub(5 * time.Second)}, 0},
		{[]session.StreamLoad{pub(5 * time.Second), pub(100 * time.Millisecond)}, 100 * time.Millisecond},
		{[]session.StreamLoad{pub(5 * time.Second), pub(4 * time.Second), pub(0)}, 4 * time.Second},
	} {
		if got := FromStreams(c.streams).Lag; got != c.want {
			t.Errorf("%d streams: lag %s, want %s", len(c.streams), got, c.want)
		}
	}
}
