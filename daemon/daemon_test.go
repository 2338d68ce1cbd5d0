package daemon_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/tensor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var doubleSig = engine.Signature{
	Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1}}},
	Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
}

func double(in []tensor.Tensor) ([]tensor.Tensor, error) {
	v := in[0].Float32s()
	for i := range v {
		v[i] *= 2
	}
	return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, v)}, nil
}

type harness struct {
	rt     *enginetest.Runtime
	url    string
	states chan string
	done   chan struct{} // closed when Run returns
	err    error         // what Run returned
	cancel context.CancelFunc
}

// start runs a daemon in-process on a loopback port, over a fake engine serving model "double".
func start(t *testing.T, shutdownTimeout time.Duration) *harness {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Models.Repository = dir
	cfg.Server.ShutdownTimeout = shutdownTimeout
	h, _ := launch(t, dir, &cfg, daemon.Options{})
	return h
}

// launch writes model "double" into the repository dir, registers it with a fake engine and
// runs a daemon with cfg and opts (Runtime, Listener and Notify filled in) until the test ends.
func launch(t *testing.T, repo string, cfg *config.Config, opts daemon.Options) (*harness, *daemon.Daemon) {
	t.Helper()
	return launchLogged(t, repo, cfg, opts, quiet)
}

// launchLogged is launch with the daemon logging to log.
func launchLogged(t *testing.T, repo string, cfg *config.Config, opts daemon.Options, log *slog.Logger) (*harness, *daemon.Daemon) {
	t.Helper()
	testutil.WriteFile(t, repo, "double/1/model.onnx", []byte("fake"))
	rt := enginetest.New()
	rt.Register(filepath.Join(repo, "double", "1", "model.onnx"), doubleSig, double)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{rt: rt, url: "http://" + ln.Addr().String(), states: make(chan string, 256), done: make(chan struct{})}
	opts.Version, opts.Runtime, opts.Listener = "test", rt, ln
	opts.Notify = func(s string) error {
		for _, line := range strings.Split(s, "\n") {
			h.states <- line
		}
		return nil
	}
	d, err := daemon.New(cfg, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.err = d.Run(ctx); close(h.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	h.waitState(t, "READY=1")
	return h, d
}

// wait returns what Run returned once it has.
func (h *harness) wait() error {
	<-h.done
	return h.err
}

func (h *harness) waitState(t *testing.T, want string) {
	t.Helper()
	var seen []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case s := <-h.states:
			if s == want {
				return
			}
			seen = append(seen, s)
		case <-timeout:
			t.Fatalf("no %s; saw %q", want, seen)
		}
	}
}

const body = `{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2,3]}]}`

func post(url string) (int, string, error) { return postWith(http.DefaultClient, url) }

func postWith(c *http.Client, url string) (int, string, error) {
	resp, err := c.Post(url+"/v2/models/double/infer", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestServesThenDrainsInFlight(t *testing.T) {
	h := start(t, 30*time.Second)
	if code, b, err := post(h.url); err != nil || code != 200 || !strings.Contains(b, `"data":[2,4,6]`) {
		t.Fatalf("infer: %d %s %v", code, b, err)
	}

	gate := h.rt.Hold()
	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		code, b, err := post(h.url)
		inflight <- result{code, b, err}
	}()
	<-gate.Entered() // the request is inside the engine

	h.cancel()
	h.waitState(t, "STOPPING=1")
	// New requests are refused (503 while the listener closes, then no connection at all); the
	// held request is still running. A request sent after STOPPING=1 but before the daemon
	// begins refusing is admitted and held at the gate: its client gives up and sends again.
	client := &http.Client{Timeout: 250 * time.Millisecond}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("still accepting requests while stopping")
		}
		code, _, err := postWith(client, h.url)
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil || code == http.StatusServiceUnavailable {
			break
		}
	}
	select {
	case r := <-inflight:
		t.Fatalf("in-flight request finished before release: %+v", r)
	default:
	}
	gate.Release()
	r := <-inflight
	if r.err != nil || r.code != 200 || !strings.Contains(r.body, `"data":[2,4,6]`) {
		t.Fatalf("in-flight request during drain: %d %s %v", r.code, r.body, r.err)
	}
	if err := h.wait(); err != nil {
		t.Fatalf("Run after a clean drain: %v", err)
	}
	if h.rt.Closes() != h.rt.Opens() {
		t.Errorf("sessions opened %d, closed %d", h.rt.Opens(), h.rt.Closes())
	}
}

func TestDrainTimeout(t *testing.T) {
	h := start(t, 200*time.Millisecond)
	gate := h.rt.Hold()
	defer gate.Release()
	go func() { _, _, _ = post(h.url) }()
	<-gate.Entered()
	h.cancel()
	err := h.wait()
	if err == nil || !strings.Contains(err.Error(), "did not finish within 200ms") {
		t.Fatalf("Run with a stuck request: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("drain error does not wrap the deadline: %v", err)
	}
}

func TestReadyAndStatusNotifications(t *testing.T) {
	h := start(t, time.Second)
	resp, err := http.Get(h.url + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"name":"double"`) {
		t.Fatalf("/ready: %d %s", resp.StatusCode, b)
	}
	h.cancel()
	_ = h.wait()
	var rest []string
	for len(h.states) > 0 {
		rest = append(rest, <-h.states)
	}
	if !slices.Contains(rest, "STOPPING=1") {
		t.Errorf("no STOPPING=1 in %q", rest)
	}
}

// startWithConfig runs a daemon in-process whose configuration comes from a file it can
// reload, over the fake engine and model "double".
func startWithConfig(t *testing.T, content string) (*harness, *daemon.Daemon, string, *slog.LevelVar) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "inferd.toml")
	if err := os.WriteFile(cfgPath, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	h, d := launch(t, filepath.Join(dir, "models"), cfg, daemon.Options{ConfigPath: cfgPath, LogLevel: level})
	return h, d, cfgPath, level
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestReload(t *testing.T) {
	// A long quiet period keeps the file watcher out of the way: this test reloads by hand.
	base := "[models]\nrepository = \"models\"\nquiet_period = \"1h\"\n[log]\nlevel = \"info\"\n"
	h, d, cfgPath, level := startWithConfig(t, base)
	ctx := context.Background()

	// Identical bytes: nothing happens, and systemd still hears RELOADING=1 ... READY=1.
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	h.waitState(t, "RELOADING=1")
	if usec := <-h.states; !strings.HasPrefix(usec, "MONOTONIC_USEC=") || len(usec) < len("MONOTONIC_USEC=1") {
		t.Errorf("RELOADING=1 followed by %q, want MONOTONIC_USEC=<now>", usec)
	}
	h.waitState(t, "READY=1")
	if m := get(t, h.url+"/metrics"); !strings.Contains(m, `inferd_config_reloads_total{result="unchanged"} 1`) {
		t.Errorf("metrics after an unchanged reload:\n%s", grepLines(m, "inferd_config"))
	}

	// An invalid file changes nothing and says why.
	if err := os.WriteFile(cfgPath, []byte(base+"[server]\nlisten = 8080\nmax_request_bytes = 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := d.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "inferd.toml:7") {
		t.Fatalf("invalid reload: %v", err)
	}
	health := get(t, h.url+"/health")
	if !strings.Contains(health, `"result":"failed"`) || !strings.Contains(health, "inferd.toml:7") {
		t.Errorf("/health after a failed reload: %s", health)
	}
	m := get(t, h.url+"/metrics")
	if !strings.Contains(m, `inferd_config_reloads_total{result="failed"} 1`) || !strings.Contains(m, "inferd_config_last_reload_successful 0") {
		t.Errorf("metrics after a failed reload:\n%s", grepLines(m, "inferd_config"))
	}
	if code, _, err := post(h.url); err != nil || code != 200 {
		t.Fatalf("serving after a failed reload: %d %v", code, err)
	}

	// A valid change applies live: log level, request limit; listen needs a restart.
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(base, "info", "debug", 1)+"[server]\nlisten = \"127.0.0.1:1\"\nmax_request_bytes = 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("log level %s after reload, want debug", level.Level())
	}
	if code, b, _ := post(h.url); code != 413 {
		t.Errorf("request over the reloaded limit: %d %s", code, b)
	}
	if health := get(t, h.url+"/health"); !strings.Contains(health, `"restart_required":["server.listen"]`) {
		t.Errorf("/health does not say listen needs a restart: %s", health)
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A reload that parses and validates but cannot be applied (here: the new repository is a file,
// so the models cannot be read from it) is a failed reload: /health, the reload metrics and
// sd_notify say so, and the previous configuration stays in force, all of it.
func TestReloadWhoseApplyFails(t *testing.T) {
	base := "[models]\nrepository = \"models\"\ncontrol = \"none\"\n"
	h, d, cfgPath, _ := startWithConfig(t, base)
	notADir := filepath.Join(filepath.Dir(cfgPath), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	changed := "[models]\nrepository = \"file\"\ncontrol = \"none\"\n[server]\nmax_request_bytes = 10\n"
	if err := os.WriteFile(cfgPath, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	for len(h.states) > 0 {
		<-h.states
	}
	err := d.Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), notADir) {
		t.Fatalf("reload onto a repository that is a file: %v", err)
	}
	var status string
	for len(h.states) > 0 {
		if s := <-h.states; strings.HasPrefix(s, "STATUS=") {
			status = s
		}
	}
	if !strings.HasPrefix(status, "STATUS=configuration reload failed, previous configuration in force: ") {
		t.Errorf("sd_notify: %q", status)
	}
	if health := get(t, h.url+"/health"); !strings.Contains(health, `"config":{"state":"degraded","detail":{`) || !strings.Contains(health, `"result":"failed"`) {
		t.Errorf("/health: %s", health)
	}
	m := get(t, h.url+"/metrics")
	if !strings.Contains(m, `inferd_config_reloads_total{result="failed"} 1`) || strings.Contains(m, `inferd_config_reloads_total{result="applied"}`) ||
		!strings.Contains(m, "inferd_config_last_reload_successful 0") {
		t.Errorf("metrics:\n%s", grepLines(m, "inferd_config"))
	}
	// Nothing of the new configuration took effect: the old limit, the old models.
	if code, b, err := post(h.url); err != nil || code != 200 {
		t.Errorf("infer after the failed reload: %d %s %v", code, b, err)
	}

	// Once the file is fixed, the same reload applies.
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(changed, `"file"`, `"models"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := post(h.url); code != http.StatusRequestEntityTooLarge {
		t.Errorf("infer after the fixed reload: %d, want 413 under the new limit", code)
	}
}
