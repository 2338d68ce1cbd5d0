package metrics

import (
	"bytes"
	"flag"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/exposition.golden from the current output")

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics answered %d: %s", rec.Code, rec.Body)
	}
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func TestExposition(t *testing.T) {
	m := New(BuildInfo{Version: "1.2.3", Revision: "abc123", ORTVersion: "1.29.0"})
	m.ConfigReloads.WithLabelValues("failed").Inc()
	m.ConfigLastReloadSuccessful.Set(0)
	m.ModelLoads.WithLabelValues("mlp", "success").Add(2)
	body := scrape(t, m)
	for _, want := range []string{
		`inferd_build_info{goversion="go`,
		`ort_version="1.29.0",revision="abc123",version="1.2.3"} 1`,
		`inferd_config_reloads_total{result="failed"} 1`,
		`inferd_config_last_reload_successful 0`,
		`inferd_model_loads_total{model="mlp",result="success"} 2`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

// Two Metrics in one process (a test's daemons, a reload's generations) count apart: no
// collector or registration is global.
func TestMetricsAreIndependent(t *testing.T) {
	a, b := New(BuildInfo{Version: "a"}), New(BuildInfo{Version: "b"})
	a.ConfigReloads.WithLabelValues("failed").Inc()
	b.ConfigReloads.WithLabelValues("applied").Add(3)
	b.ModelLoads.WithLabelValues("mlp", "success").Inc()
	gotA, gotB := scrape(t, a), scrape(t, b)
	for _, c := range []struct {
		body, want, not string
	}{
		{gotA, `inferd_config_reloads_total{result="failed"} 1`, `result="applied"`},
		{gotA, `version="a"} 1`, `model="mlp"`},
		{gotB, `inferd_config_reloads_total{result="applied"} 3`, `result="failed"`},
		{gotB, `inferd_model_loads_total{model="mlp",result="success"} 1`, `version="a"`},
	} {
		if !strings.Contains(c.body, c.want) || strings.Contains(c.body, c.not) {
			t.Errorf("exposition has %q: %t, has %q: %t (want true, false)", c.want, strings.Contains(c.body, c.want), c.not, strings.Contains(c.body, c.not))
		}
	}
}

// fixture is a Metrics with every inferd metric set to known values: one model version that
// served, one request for an unknown model, one for a model without a ready version, and a
// model that failed as a whole.
func fixture(t *testing.T) *Metrics {
	t.Helper()
	m := New(BuildInfo{Version: "1.2.3", Revision: "0123456789abcdef", GoVersion: "go1.26.8", ORTVersion: "1.29.0"})
	m.ConfigReloads.WithLabelValues("applied").Inc()
	m.ConfigReloads.WithLabelValues("failed").Inc()
	m.ConfigLastReloadSuccessful.Set(0)
	m.ConfigLastReloadTimestamp.Set(1700000100)
	m.ConfigLastReloadSuccessTimestamp.Set(1700000000)
	m.ModelLoads.WithLabelValues("mlp", "success").Inc()
	m.ModelLoads.WithLabelValues("broken", "failure").Inc()
	m.ModelLastLoadTimestamp.WithLabelValues("mlp", "success").Set(1699999990)
	m.ModelLastLoadTimestamp.WithLabelValues("broken", "failure").Set(1699999991)

	outcomes := []string{"success", "client_error", "not_found", "unavailable", "queue_full", "timeout", "canceled", "server_error"}
	inf := NewInference(outcomes, func() []InferenceStats {
		return []InferenceStats{{
			Model: "mlp", Version: "1",
			Outcomes: map[string]uint64{"success": 5, "queue_full": 1, "timeout": 2},
			RequestDuration: Histogram{Count: 5, Sum: 0.0125,
				Buckets: map[float64]uint64{0.00005: 0, 0.001: 1, 0.01: 5}},
			QueueDuration: Histogram{Count: 5, Sum: 0.0025,
				Buckets: map[float64]uint64{0.00005: 1, 0.001: 5, 0.01: 5}},
			ComputeDuration: Histogram{Count: 2, Sum: 0.008,
				Buckets: map[float64]uint64{0.00005: 0, 0.001: 0, 0.01: 2}},
			BatchSizes: map[int]uint64{1: 1, 4: 1},
			Pending:    3,
			InFlight:   4,
		}}
	})
	inf.Refused("", "", "not_found")
	inf.Refused("mlp", "1", "client_error")
	inf.Refused("mlp", "1", "client_error")
	inf.Refused("broken", "", "unavailable")
	states := NewModelStates([]string{"loading", "ready", "unavailable", "unloading"}, func() []ModelState {
		return []ModelState{{"broken", "", "unavailable"}, {"mlp", "1", "ready"}}
	})
	tuning := NewTuning(func() []TuningState {
		return []TuningState{{Model: "mlp", Version: "1", Instances: 2, IntraOpThreads: 1, BatchTarget: 32}, {Model: "ocr", Version: "3", Instances: 1, IntraOpThreads: 2}}
	})
	traces := NewTracing(func() TracingStats {
		return TracingStats{Exported: 120, DroppedQueueFull: 7, DroppedExportFailed: 16}
	})
	m.Registry.MustRegister(inf, states, tuning, traces)
	return m
}

// normalise keeps what is stable of an exposition: inferd's families whole; of the Go runtime's
// and the process's (go_*, process_*), which vary with the Go release and the kernel, only
// their names and types.
func normalise(exposition string) string {
	var out []string
	for _, line := range strings.Split(exposition, "\n") {
		name := line
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name = rest
		} else if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name = rest
		}
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			if !strings.HasPrefix(line, "# TYPE ") {
				continue
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// TestGoldenExposition compares the whole of /metrics, normalised, with
// testdata/exposition.golden (go test ./metrics/ -run Golden -update rewrites it).
func TestGoldenExposition(t *testing.T) {
	got := normalise(scrape(t, fixture(t)))
	path := filepath.Join("testdata", "exposition.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("/metrics differs from %s (rerun with -update if the change is intended):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// TestPromtoolCheckMetrics lints the whole exposition with Prometheus' own promtool.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("INFERD_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("INFERD_REQUIRE_PROMETHEUS is set but promtool is not installed (Debian package prometheus)")
		}
		t.Skip("promtool not found: install Debian's prometheus package to lint /metrics (.ci/run does)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t, fixture(t)))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
	if s := strings.TrimSpace(out.String()); s != "" {
		t.Errorf("promtool check metrics has remarks:\n%s", s)
	}
}

func TestBatchHistogram(t *testing.T) {
	h := batchHistogram(map[int]uint64{1: 3, 3: 2, 64: 1, 5000: 1})
	if h.Count != 7 || h.Sum != 3+6+64+5000 {
		t.Errorf("count %d sum %g", h.Count, h.Sum)
	}
	for bound, want := range map[float64]uint64{1: 3, 2: 3, 4: 5, 32: 5, 64: 6, 1024: 6} {
		if h.Buckets[bound] != want {
			t.Errorf("bucket le=%g: %d, want %d", bound, h.Buckets[bound], want)
		}
	}
}
