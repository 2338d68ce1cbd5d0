package daemon_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
)

// sample returns the value of the series written exactly as series (name{labels}, labels in
// the exposition's alphabetical order) in a /metrics body.
func sample(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Errorf("no series %s in /metrics:\n%s", series, grepLines(body, strings.SplitN(series, "{", 2)[0]))
	return -1
}

func postBody(t *testing.T, url, model, body string) int {
	t.Helper()
	resp, err := http.Post(url+"/v2/models/"+model+"/infer", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("response without X-Request-Id")
	}
	return resp.StatusCode
}

// TestInferenceMetrics drives requests through the daemon and reads them back from /metrics:
// outcomes by model and version, histograms, batch sizes, in-flight and pending requests, model
// states and build info, all wired from the scheduler and the repository.
func TestInferenceMetrics(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Models.Repository = dir
	cfg.Scheduler.CalibrationTime = 0 // one instance, as written: the in-flight counts below rely on it
	h, _ := launch(t, dir, &cfg, daemon.Options{Revision: "abc123", RuntimeVersion: "1.29.0"})
	for range 3 {
		if code := postBody(t, h.url, "double", body); code != 200 {
			t.Fatalf("infer: %d", code)
		}
	}
	if code := postBody(t, h.url, "double", `{"inputs":`); code != 400 {
		t.Errorf("malformed: %d", code)
	}
	if code := postBody(t, h.url, "nope", body); code != 404 {
		t.Errorf("unknown model: %d", code)
	}

	// One request held inside the engine is in flight, none pending.
	gate := h.rt.Hold()
	held := make(chan int, 1)
	go func() { held <- postBody(t, h.url, "double", body) }()
	<-gate.Entered()
	m := get(t, h.url+"/metrics")
	if got := sample(t, m, `inferd_inference_in_flight_requests{model="double",version="1"}`); got != 1 {
		t.Errorf("in flight while one request runs: %g", got)
	}
	if got := sample(t, m, `inferd_inference_pending_requests{model="double",version="1"}`); got != 0 {
		t.Errorf("pending while one request runs: %g", got)
	}
	gate.Release()
	if code := <-held; code != 200 {
		t.Fatalf("held request: %d", code)
	}

	m = get(t, h.url+"/metrics")
	for series, want := range map[string]float64{
		`inferd_inference_requests_total{model="double",outcome="success",version="1"}`:        4,
		`inferd_inference_requests_total{model="double",outcome="client_error",version=""}`:    1,
		`inferd_inference_requests_total{model="",outcome="not_found",version=""}`:             1,
		`inferd_inference_requests_total{model="double",outcome="queue_full",version="1"}`:     0,
		`inferd_inference_request_duration_seconds_count{model="double",version="1"}`:          4,
		`inferd_inference_request_duration_seconds_bucket{model="double",version="1",le="10"}`: 4,
		`inferd_inference_queue_duration_seconds_count{model="double",version="1"}`:            4,
		`inferd_inference_compute_duration_seconds_count{model="double",version="1"}`:          4,
		// batched by default (every dimension 0 of "double" is variable): 3 rows a request
		`inferd_inference_batch_size_bucket{model="double",version="1",le="1"}`: 0,
		`inferd_inference_batch_size_bucket{model="double",version="1",le="4"}`: 4,
		`inferd_inference_batch_size_sum{model="double",version="1"}`:           12,
		`inferd_inference_in_flight_requests{model="double",version="1"}`:       0,
		`inferd_model_instances{model="double",version="1"}`:                    1,
		`inferd_model_state{model="double",state="ready",version="1"}`:          1,
		`inferd_model_state{model="double",state="loading",version="1"}`:        0,
		`inferd_model_loads_total{model="double",result="success"}`:             1,
		`inferd_config_last_reload_successful`:                                  1,
	} {
		if got := sample(t, m, series); got != want {
			t.Errorf("%s = %g, want %g", series, got, want)
		}
	}
	if !strings.Contains(m, `ort_version="1.29.0",revision="abc123",version="test"} 1`) {
		t.Errorf("build info:\n%s", grepLines(m, "inferd_build_info"))
	}
	if got := sample(t, m, `inferd_config_last_reload_success_timestamp_seconds`); got < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("config success timestamp %g, want the start", got)
	}
}

// TestSeparateMetricsListener: with a metrics listener, /metrics moves there and leaves the
// API's listener; the listener closes with the daemon.
func TestSeparateMetricsListener(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Models.Repository = dir
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	murl := "http://" + mln.Addr().String()
	h, _ := launch(t, dir, &cfg, daemon.Options{MetricsListener: mln})
	if code := postBody(t, h.url, "double", body); code != 200 {
		t.Fatalf("infer: %d", code)
	}
	m := get(t, murl+"/metrics")
	if got := sample(t, m, `inferd_inference_requests_total{model="double",outcome="success",version="1"}`); got != 1 {
		t.Errorf("successes on the metrics listener: %g", got)
	}
	for _, u := range []string{h.url + "/metrics", murl + "/v2/models/double"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", u, resp.StatusCode)
		}
	}
	h.cancel()
	if err := h.wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(murl + "/metrics"); err == nil {
		t.Error("the metrics listener still answers after the daemon stopped")
	}
}

// lockedBuffer is a log destination the test reads while the daemon writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReloadTurnsOnRequestLogs: a reload that sets log.level = "debug" makes every request
// logged with the id its response carries, without a restart; metrics.listen needs one.
func TestReloadTurnsOnRequestLogs(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "inferd.toml")
	base := "[models]\nrepository = \"models\"\nquiet_period = \"1h\"\n[log]\nlevel = \"info\"\n"
	if err := os.WriteFile(cfgPath, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	h, d := launchLogged(t, filepath.Join(dir, "models"), cfg, daemon.Options{ConfigPath: cfgPath, LogLevel: level}, log)

	if code := postBody(t, h.url, "double", body); code != 200 {
		t.Fatalf("infer: %d", code)
	}
	if strings.Contains(logs.String(), "msg=request ") {
		t.Fatalf("request logged at info:\n%s", grepLines(logs.String(), "msg=request "))
	}
	debug := strings.Replace(base, "info", "debug", 1) + "[metrics]\nlisten = \"127.0.0.1:1\"\n"
	if err := os.WriteFile(cfgPath, []byte(debug), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", h.url+"/v2/models/double/infer", strings.NewReader(body))
	req.Header.Set("X-Request-Id", "reload-test-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Request-Id") != "reload-test-1" {
		t.Errorf("response id %q, want the client's", resp.Header.Get("X-Request-Id"))
	}
	line := grepLines(logs.String(), "request_id=reload-test-1")
	if !strings.Contains(line, "level=DEBUG") || !strings.Contains(line, "status=200") || !strings.Contains(line, "component=api") {
		t.Errorf("request log after the reload to debug: %q", line)
	}
	if health := get(t, h.url+"/health"); !strings.Contains(health, `"restart_required":["metrics.listen"]`) {
		t.Errorf("/health does not say metrics.listen needs a restart: %s", health)
	}
	if m := get(t, h.url+"/metrics"); !strings.Contains(m, "inferd_build_info") {
		t.Error("/metrics left the API's listener before a restart")
	}
}
