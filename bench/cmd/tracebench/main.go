// Command tracebench is `make bench-tracing`: what tracing costs a busy server. One inferd
// each with tracing off, on at sampling_ratio 1.0 and on at ratio 0 serve the benchmark MLP
// (1024→4096→4096→1024 FP32, generated; the model of make bench), with the same pinned
// instances and threads (no calibration, so the three differ only in [tracing]); the two
// traced ones export over OTLP/HTTP to a collector in this process that accepts every batch
// and counts its bytes. Each repetition loads the three in turn with `inferd perf`, binary
// tensors at concurrency 64, in an order that turns from one repetition to the next (after
// one unrecorded run each), and prints every run and the ratios on ÷ off and ratio-0 ÷ off;
// the medians over the repetitions are the figures (the targets: on ≥ 0.95, ratio 0
// no measurable difference). Run from the module root after make build.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/perf"
)

type options struct {
	inferd, dir       string
	reps, concurrency int
	instances         int
	threads           int
	duration, warmup  time.Duration
}

// mode is one server of the comparison.
type mode struct {
	name    string
	tracing string // the [tracing] table ("" off)
	url     string
	cmd     *exec.Cmd
}

func main() {
	var o options
	flag.StringVar(&o.inferd, "inferd", "bin/inferd", "the inferd binary (servers and load generator)")
	flag.StringVar(&o.dir, "dir", "build/bench-tracing", "work directory: model, configs, logs, perf JSON")
	flag.IntVar(&o.reps, "reps", 5, "repetitions of the off / on / ratio-0 sequence")
	flag.IntVar(&o.concurrency, "concurrency", 64, "closed-loop clients")
	flag.IntVar(&o.instances, "instances", 2, "instances of the MLP in every server")
	flag.IntVar(&o.threads, "threads", 1, "intra-op threads per instance")
	flag.DurationVar(&o.duration, "duration", 6*time.Second, "measured time of every run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before every run")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if _, err := os.Stat(o.inferd); err != nil {
		return fmt.Errorf("%s: %w (make build)", o.inferd, err)
	}
	if err := os.RemoveAll(o.dir); err != nil {
		return err
	}
	model := filepath.Join(o.dir, "mlp_wide.onnx")
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(model, testmodels.Wide(1024, 4096, 1024), 0o644); err != nil {
		return err
	}
	col, err := startCollector()
	if err != nil {
		return err
	}
	defer col.srv.Close()
	endpoint := "http://" + col.addr
	modes := []*mode{
		{name: "off"},
		{name: "on", tracing: fmt.Sprintf("[tracing]\nendpoint = %q\nsampling_ratio = 1.0\n", endpoint)},
		{name: "ratio0", tracing: fmt.Sprintf("[tracing]\nendpoint = %q\nsampling_ratio = 0.0\n", endpoint)},
	}
	for _, m := range modes {
		if err := m.start(ctx, o, model); err != nil {
			return err
		}
		defer m.stop()
	}
	fmt.Printf("tracebench: MLP 1024→4096→4096→1024, binary, concurrency %d, %d instance(s) × %d thread(s), %s per run (+%s warmup), %d repetitions\n",
		o.concurrency, o.instances, o.threads, o.duration, o.warmup, o.reps)
	// One unrecorded run each first: the first load of a fresh server (ORT's arenas, the
	// connection pools) is slower than the rest.
	for _, m := range modes {
		if _, err := m.load(ctx, options{inferd: o.inferd, dir: o.dir, concurrency: o.concurrency, duration: o.warmup, warmup: o.warmup}, 0); err != nil {
			return err
		}
	}
	rates := map[string][]float64{}
	var onRatios, zeroRatios []float64
	for rep := 1; rep <= o.reps; rep++ {
		got := map[string]float64{}
		// The order turns each repetition, so that a drift of the machine does not always
		// fall on the same mode.
		for i := range modes {
			m := modes[(i+rep-1)%len(modes)]
			before := col.spans.Load()
			st, err := m.load(ctx, o, rep)
			if err != nil {
				return err
			}
			got[m.name] = st.InferPerSec
			rates[m.name] = append(rates[m.name], st.InferPerSec)
			fmt.Printf("rep %d %-7s %8.1f infer/s  p50 %-9s p99 %-9s errors %d  collector: %d OTLP requests so far (+%d)\n",
				rep, m.name, st.InferPerSec, st.Latency.P50.Round(10*time.Microsecond), st.Latency.P99.Round(10*time.Microsecond), st.Errors,
				col.spans.Load(), col.spans.Load()-before)
		}
		on, zero := got["on"]/got["off"], got["ratio0"]/got["off"]
		onRatios, zeroRatios = append(onRatios, on), append(zeroRatios, zero)
		fmt.Printf("rep %d ratios: on/off %.3f  ratio0/off %.3f\n", rep, on, zero)
	}
	fmt.Printf("\nmedian infer/s: off %.1f, on %.1f, ratio0 %.1f\n", median(rates["off"]), median(rates["on"]), median(rates["ratio0"]))
	fmt.Printf("median ratios: on/off %.3f (target ≥ 0.95), ratio0/off %.3f (target: no measurable difference); per repetition on/off %s, ratio0/off %s\n",
		median(onRatios), median(zeroRatios), list(onRatios), list(zeroRatios))
	fmt.Printf("collector received %d OTLP export requests, %d bytes\n", col.spans.Load(), col.bytes.Load())
	return nil
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func list(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, " ")
}

// collector accepts OTLP/HTTP exports and counts them.
type collector struct {
	srv          *http.Server
	addr         string
	spans, bytes atomic.Int64 // export requests and their bytes
}

func startCollector() (*collector, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &collector{addr: ln.Addr().String()}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		c.spans.Add(1)
		c.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

// start runs the mode's inferd on 127.0.0.1 and waits until it is ready.
func (m *mode) start(ctx context.Context, o options, model string) error {
	dir, err := filepath.Abs(filepath.Join(o.dir, m.name))
	if err != nil {
		return err
	}
	version := filepath.Join(dir, "models", "mlp", "1")
	if err := os.MkdirAll(version, 0o755); err != nil {
		return err
	}
	data, err := os.ReadFile(model)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(version, "model.onnx"), data, 0o644); err != nil {
		return err
	}
	toml := fmt.Sprintf("max_batch_size = 64\n[instance]\ncount = %d\n", o.instances)
	if err := os.WriteFile(filepath.Join(dir, "models", "mlp", "model.toml"), []byte(toml), 0o644); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	m.url = "http://" + port
	cfg := fmt.Sprintf("# Generated by make bench-tracing (bench/cmd/tracebench).\n[server]\nlisten = %q\n[models]\nrepository = \"models\"\ncontrol = \"none\"\n[engine]\nintra_op_threads = %d\n[scheduler]\ncalibration_time = \"0s\"\n%s",
		port, o.threads, m.tracing)
	config := filepath.Join(dir, "inferd.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "inferd.log"))
	if err != nil {
		return err
	}
	m.cmd = exec.Command(o.inferd, "serve", "--config", config)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("starting inferd %s: %w", m.name, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(m.url + "/v2/models/mlp/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("inferd %s not ready within 2m (log: %s)", m.name, logf.Name())
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *mode) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		_ = m.cmd.Process.Kill()
		<-done
	}
}

// load runs `inferd perf` against the mode's server and returns its one step.
func (m *mode) load(ctx context.Context, o options, rep int) (*perf.Step, error) {
	file := filepath.Join(o.dir, fmt.Sprintf("rep%d-%s.json", rep, m.name))
	cmd := exec.CommandContext(ctx, o.inferd, "perf", "-u", m.url, "-m", "mlp", "--format", "binary",
		"--concurrency", fmt.Sprint(o.concurrency), "--duration", o.duration.String(), "--warmup", o.warmup.String(), "--json", file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("inferd perf (%s, rep %d): %w\n%s", m.name, rep, err, out)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var r perf.Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(r.Steps) != 1 {
		return nil, errors.New(file + ": want one step")
	}
	return &r.Steps[0], nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
