package main

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"ffmpeg-publisher/admission"
	"ffmpeg-publisher/internal/rtmptest"
	"ffmpeg-publisher/metrics"
	"ffmpeg-publisher/session"
	"ffmpeg-publisher/transport"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The shipped Prometheus rules and Grafana dashboard, checked by
// Prometheus's own promtool and against the metrics the server exports.

const promDir = "deploy/prometheus"

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	tool := rtmptest.Require(t, "promtool")[0]
	cmd := exec.Command(tool, args...)
	cmd.Dir = promDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	promtool(t, "check", "config", "prometheus.yml") // and the rule files it names
	promtool(t, "test", "rules", "tests.yml")
	t.Run("every alert has a firing and a quiet case", func(t *testing.T) {
		alerts := readDeploy(t, "alerts.yml")
		tests := readDeploy(t, "tests.yml")
		names := regexp.MustCompile(`(?m)^\s*- alert: (\S+)$`).FindAllStringSubmatch(alerts, -1)
		if len(names) < 7 {
			t.Fatalf("%d alerts in alerts.yml", len(names))
		}
		for _, m := range names {
			name := regexp.QuoteMeta(m[1])
			if !regexp.MustCompile(`alertname: ` + name + `\n\s*exp_alerts: \[\]`).MatchString(tests) {
				t.Errorf("%s: no case where it stays quiet (exp_alerts: [])", m[1])
			}
			if !regexp.MustCompile(`alertname: ` + name + `\n\s*exp_alerts:\n\s*- exp_labels:`).MatchString(tests) {
				t.Errorf("%s: no case where it fires", m[1])
			}
		}
	})
	t.Run("every metric named is exported", func(t *testing.T) {
		exported := exportedMetrics(t)
		recorded := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^\s*- record: (\S+)$`).FindAllStringSubmatch(readDeploy(t, "rules.yml"), -1) {
			recorded[m[1]] = true
		}
		for _, file := range []string{"rules.yml", "alerts.yml"} {
			for _, expr := range regexp.MustCompile(`(?m)^\s*expr: (.+)$`).FindAllStringSubmatch(readDeploy(t, file), -1) {
				checkNames(t, file, expr[1], exported, recorded)
			}
		}
		for _, expr := range dashboardExprs(t) {
			checkNames(t, "dashboard", expr, exported, recorded)
		}
	})
	t.Run("dashboard", func(t *testing.T) {
		exprs := dashboardExprs(t)
		// promtool parses every expression, as rules of a scratch file.
		var rules strings.Builder
		rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		for i, e := range exprs {
			q, _ := json.Marshal(e) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:expr%d\n        expr: %s\n", i, q)
		}
		scratch := writeTemp(t, "dashboard-rules.yml", rules.String())
		promtool(t, "check", "rules", scratch)
	})
}

func readDeploy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(promDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricName matches what could be a metric or recording rule name of
// ours in an expression; labels and functions do not start so.
var metricName = regexp.MustCompile(`\b(?:instance:)?publisher_[a-z0-9_]+(?::[a-z0-9_]+)*|\bup\b`)

func checkNames(t *testing.T, where, expr string, exported, recorded map[string]bool) {
	t.Helper()
	found := metricName.FindAllString(expr, -1)
	if len(found) == 0 {
		t.Errorf("%s: %q names no metric of ours", where, expr)
	}
	for _, name := range found {
		if !exported[name] && !recorded[name] && name != "up" {
			t.Errorf("%s: %q uses %s, which the server does not export and no rule records", where, expr, name)
		}
	}
}

// exportedMetrics is every series name a server's /metrics can hold.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	m.WatchLimits(func() []transport.LimitStats { return []transport.LimitStats{{Limit: "requests"}} })
	m.WatchSessions(1, func() []session.Info { return nil })
	m.WatchAdmission(func() admission.Status { return admission.Status{Last: admission.Load{CPU: 1}} })
	m.Replied("/base64", 200, 0) // histograms show once observed
	m.StdinWritten(0)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for name, f := range fams {
		names[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}

// grafanaDashboard is the part of Grafana's dashboard JSON checked here.
type grafanaDashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			X, Y, W, H int
		} `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// dashboardExprs reads deploy/grafana's dashboard, checks its shape, and
// returns its queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("deploy/grafana/ffmpeg-publisher.json")
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard: title %q, uid %q, %d panels", d.Title, d.UID, len(d.Panels))
	}
	var exprs []string
	var ids []int
	for _, p := range d.Panels {
		if slices.Contains(ids, p.ID) {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids = append(ids, p.ID)
		g := p.GridPos
		if p.Title == "" || p.Type == "" || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || len(p.Targets) == 0 {
			t.Errorf("panel %d %q: type %q, gridPos %+v, %d targets", p.ID, p.Title, p.Type, g, len(p.Targets))
		}
		for _, q := range p.Targets {
			if q.Expr == "" || q.RefID == "" {
				t.Errorf("panel %q: a target without expr or refId", p.Title)
			}
			exprs = append(exprs, q.Expr)
		}
	}
	return exprs
}
