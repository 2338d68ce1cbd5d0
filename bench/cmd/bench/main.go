// Command bench is `make bench`: on this machine, in one invocation, it measures how close
// inferd comes to the physical limit and writes the results, with ratios against the targets of
// the scheduler issue, to docs/benchmarks.md.
//
// For each of two models (a generated GEMM-heavy MLP 1024→4096→4096→1024 and the PaddleOCR
// mobile direction classifier ocr_cls) it measures, with `bin/inferd perf`:
//
//   - raw: the model in-process through ONNX Runtime, no server. A short sweep over batch size ×
//     instances × intra-op threads runs once; every repetition then measures its two fastest
//     configurations for the full duration, and the faster is that repetition's ceiling (two,
//     because a short sweep on a noisy machine can rank close configurations wrongly).
//   - inferd with dynamic batching (max_batch_size 64), binary and JSON tensors, at
//     concurrency 1 and 64;
//   - inferd with batching off (max_batch_size 0, same instances and threads), at 64;
//   - the plain Node.js server of bench/node-server (onnxruntime-node, JSON, same intra-op
//     thread count), at concurrency 1 and 64;
//   - for the MLP, inferd with [tuning] latency_budget = "50ms" at 64 (its p99 against the
//     budget);
//   - both models served by one inferd and loaded at once, each at 64: each one's share of its
//     solo throughput, and the sum of the shares.
//
// inferd's model.toml says nothing but max_batch_size (and the shape ocr_cls leaves open):
// calibration chooses instances, threads and the batch target (docs/tuning.md). Its choice,
// the calibration time on the first start and the profile found on later starts are reported.
// The out-of-the-box ratios are against the fastest raw configuration that 64 requests in
// flight can fill (instances × batch ≤ 64), measured again in each repetition.
//
// Raw and server runs alternate and the whole sequence repeats (-reps, 3 by default): these
// machines drift by several percent and are shared, so one repetition can be disturbed by other
// work. Every ratio is computed per repetition and the median reported; the per-repetition
// values are in the tables, and a raw run that got clearly less CPU than it should is flagged.
//
// It also measures latency at concurrency 1 on the demo MLP (4→8→3) against the loopback floor
// (bench/cmd/floor, a separate process answering a fixed body) plus the raw Run p50 plus 50 µs,
// and the binary wire path as the throughput of a 4 MiB FP32 tensor through an identity model.
//
// The load generator runs on the same cores as the server, so efficiency is throughput ÷
// (raw best × (1 − the client's CPU share)), the client share being perf's own measurement.
//
// Every number in the report comes from a JSON file perf wrote under -dir (build/bench by
// default, never committed); server logs and perf's tables are kept next to them. Servers listen
// on 127.0.0.1 port 0 and are stopped with SIGTERM at the end of their runs (SIGKILL only after a
// deadline). Run it from the module root: `make bench`, or `go run ./bench/cmd/bench -h`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	inferd, dir, out string
	nodeDir          string
	noNode           bool
	reps             int
	duration, warmup time.Duration
	sweepDuration    time.Duration
	sweepWarmup      time.Duration
	sweepBatches     string
	rawCandidates    int
	high             int
	ocrModel         string
	demoModel        string
	mlpInstances     int
	mlpDelay         string
	ocrInstances     int
	ocrDelay         string
	cores            int
}

func main() {
	var o options
	flag.StringVar(&o.inferd, "inferd", "bin/inferd", "the inferd binary (server and load generator)")
	flag.StringVar(&o.dir, "dir", "build/bench", "work directory: generated models, configs, logs and every perf JSON file")
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "the markdown report to write")
	flag.StringVar(&o.nodeDir, "node-dir", "bench/node-server", "the Node.js baseline server (npm install is run there)")
	flag.BoolVar(&o.noNode, "no-node", false, "skip the Node.js rows")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of the whole raw/server sequence (the median of 3 survives one disturbed repetition)")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "measured time of every step (each concurrency level, each raw run)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured time before every step")
	flag.DurationVar(&o.sweepDuration, "sweep-duration", 3*time.Second, "measured time per configuration of the raw sweep")
	flag.DurationVar(&o.sweepWarmup, "sweep-warmup", 500*time.Millisecond, "warmup per configuration of the raw sweep")
	flag.StringVar(&o.sweepBatches, "sweep-batches", "1,8,32,64", "batch sizes of the raw sweep (instances and threads: perf's default, powers of two up to the cores)")
	flag.IntVar(&o.rawCandidates, "raw-candidates", 2, "the sweep's fastest configurations measured again in every repetition (the fastest is the ceiling)")
	flag.IntVar(&o.high, "concurrency", 64, "the high concurrency level the targets are stated at")
	flag.StringVar(&o.ocrModel, "ocr-model", "build/ocr-models/ocr_cls/1/model.onnx", "the PaddleOCR classifier (scripts/fetch-ocr-models.sh fetches it)")
	flag.StringVar(&o.demoModel, "demo-model", "configs/models/mlp/1/model.onnx", "the small model of the latency target")
	flag.IntVar(&o.mlpInstances, "mlp-instances", 0, "instances of the MLP in inferd (0: calibration's choice, out of the box)")
	flag.StringVar(&o.mlpDelay, "mlp-queue-delay", "", `max_queue_delay of the MLP in inferd ("": inferd's default)`)
	flag.IntVar(&o.ocrInstances, "ocr-instances", 0, "instances of ocr_cls in inferd (0: calibration's choice, out of the box)")
	flag.StringVar(&o.ocrDelay, "ocr-queue-delay", "", `max_queue_delay of ocr_cls in inferd ("": inferd's default)`)
	flag.IntVar(&o.cores, "threads", runtime.NumCPU(), "intra-op threads of the Node.js session and of the raw latency run (inferd's session default is cores ÷ instances)")
	flag.Parse()
	if o.reps < 1 || o.duration <= 0 || o.sweepDuration <= 0 || o.high < 2 || o.cores < 1 {
		fmt.Fprintln(os.Stderr, "bench: -reps, -threads must be ≥ 1, durations positive, -concurrency ≥ 2")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run does the whole benchmark and writes the report.
func run(ctx context.Context, o options) error {
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the module root (make bench)")
	}
	b, err := newBench(o)
	if err != nil {
		return err
	}
	defer b.stopAll()

	res := &results{started: b.started, machine: machineInfo(o)}
	if err := b.prepare(ctx); err != nil {
		return err
	}
	if f := strings.Fields(res.machine.loadStart); len(f) > 0 {
		if l, err := strconv.ParseFloat(f[0], 64); err == nil && l > 0.5*float64(o.cores) {
			fmt.Printf("bench: warning: load average %s on %d cores before the start: other work will skew the numbers\n", res.machine.loadStart, o.cores)
		}
	}
	specs := b.modelSpecs()
	for _, spec := range specs {
		res.models = append(res.models, &modelResult{spec: spec})
	}

	// The sweeps pick each model's raw configuration once.
	for _, m := range res.models {
		m.sweep = b.raw(ctx, m.spec.key+"-sweep", m.spec.file, m.spec.shape, o.sweepBatches, "", "", o.sweepDuration, o.sweepWarmup)
		if m.sweep.err != nil {
			return fmt.Errorf("raw sweep of %s: %w", m.spec.key, m.sweep.err)
		}
	}
	// Profiles kept by an earlier run would hide the first calibration's time.
	if err := removeStates(filepath.Join(o.dir, "servers")); err != nil {
		return err
	}
	for rep := 1; rep <= o.reps; rep++ {
		for _, m := range res.models {
			m.reps = append(m.reps, b.measureModel(ctx, m, rep))
		}
		res.shared = append(res.shared, b.measureShared(ctx, res.models, rep))
		res.latency = append(res.latency, b.measureLatency(ctx, rep))
		res.wire = append(res.wire, b.measureWire(ctx, rep))
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	res.nodeNote = b.nodeNote
	res.commands = b.commands
	res.elapsed = time.Since(b.started)
	res.machine.loadEnd = loadavg()

	md := res.markdown(o)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Printf("\n%s\nwrote %s in %s (JSON files and logs in %s)\n", res.summary(o), o.out, res.elapsed.Round(time.Second), o.dir)
	return nil
}

// removeStates removes the state directories (calibration profiles) of the servers under dir.
func removeStates(dir string) error {
	states, _ := filepath.Glob(filepath.Join(dir, "*", "state"))
	for _, st := range states {
		if err := os.RemoveAll(st); err != nil {
			return err
		}
	}
	return nil
}
