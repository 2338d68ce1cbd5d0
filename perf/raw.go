package perf

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// RawConfig configures RunRaw. Zero values take the defaults given on each field.
type RawConfig struct {
	// ModelFile is the .onnx file to run.
	ModelFile string
	// Batches are the batch sizes to sweep (default 1, 2, 4, ..., 64). A model whose inputs
	// have no variable dimension 0 runs at its declared size only.
	Batches []int
	// Instances and Threads are the sessions run in parallel and the intra-op threads of each;
	// every pair with instances × threads ≤ Cores is measured (default for both: the powers
	// of two up to Cores, and Cores).
	Instances, Threads []int
	// Cores is the CPU budget (default runtime.GOMAXPROCS(0): the cores this process may use,
	// cgroup limits included).
	Cores int
	// Duration is each configuration's measured window (default 10s); Warmup precedes it
	// (default 2s; negative for none).
	Duration, Warmup time.Duration
	// Shapes, Data and Seed are as in Config.
	Shapes map[string][]int64
	Data   DataMode
	Seed   uint64
	// MaxSamples caps the latencies kept per configuration (default 10,000,000).
	MaxSamples int
	// Provider is the execution provider of the sessions (default engine.ProviderCPU), and
	// DeviceID the CUDA device they open on with engine.ProviderCUDA.
	Provider string
	DeviceID int
	// Logger receives progress at Info; nil discards it.
	Logger *slog.Logger
}

// RawReport is the result of RunRaw. Durations are nanoseconds in JSON.
type RawReport struct {
	ModelFile string        `json:"model_file"`
	Provider  string        `json:"provider"`
	Inputs    []tensor.Spec `json:"inputs"` // at the first batch size
	Data      DataMode      `json:"data"`
	Cores     int           `json:"cores"`
	Warmup    time.Duration `json:"warmup_ns"`
	Duration  time.Duration `json:"duration_ns"`
	Results   []RawResult   `json:"results"`
	// Best is the result with the most rows per second.
	Best RawResult `json:"best"`
}

// RawResult is the measurement of one configuration.
type RawResult struct {
	Batch     int `json:"batch"`
	Instances int `json:"instances"`
	Threads   int `json:"threads"`
	// Runs is the number of Run calls completed in the window, over all instances.
	Runs       int64   `json:"runs"`
	RunsPerSec float64 `json:"runs_per_sec"`
	RowsPerSec float64 `json:"rows_per_sec"`
	// Latency is the duration of one Run.
	Latency Latency `json:"latency"`
	// ClientCPU is this process's share of the machine's CPU during the window.
	ClientCPU float64 `json:"client_cpu"`
}

func (c RawConfig) withDefaults() (RawConfig, error) {
	if c.Cores == 0 {
		c.Cores = runtime.GOMAXPROCS(0)
	}
	if len(c.Batches) == 0 {
		c.Batches = []int{1, 2, 4, 8, 16, 32, 64}
	}
	if len(c.Instances) == 0 {
		c.Instances = powersUpTo(c.Cores)
	}
	if len(c.Threads) == 0 {
		c.Threads = powersUpTo(c.Cores)
	}
	c.Duration, c.Warmup = timings(c.Duration, c.Warmup)
	if c.MaxSamples == 0 {
		c.MaxSamples = DefaultMaxSamples
	}
	if c.Data == "" {
		c.Data = DataRandom
	}
	if c.Provider == "" {
		c.Provider = engine.ProviderCPU
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.ModelFile == "":
		return c, fmt.Errorf("%w: no model file", ErrConfig)
	case c.Cores < 0 || c.Duration < 0 || c.MaxSamples < 0 || c.DeviceID < 0:
		return c, fmt.Errorf("%w: negative cores, duration, sample cap or device", ErrConfig)
	}
	for _, list := range [][]int{c.Batches, c.Instances, c.Threads} {
		for _, v := range list {
			if v <= 0 {
				return c, fmt.Errorf("%w: batch, instance and thread counts must be positive, got %d", ErrConfig, v)
			}
		}
	}
	if _, err := ParseDataMode(string(c.Data)); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if len(c.pairs()) == 0 {
		return c, fmt.Errorf("%w: no instances × threads pair fits in %d cores", ErrConfig, c.Cores)
	}
	return c, nil
}

// powersUpTo returns 1, 2, 4, ... up to n, and n itself.
func powersUpTo(n int) []int {
	var out []int
	for v := 1; v < n; v *= 2 {
		out = append(out, v)
	}
	return append(out, max(n, 1))
}

// pair is one instances × threads configuration.
type pair struct{ instances, threads int }

// pairs lists the configurations with instances × threads ≤ Cores, by instances then threads.
func (c RawConfig) pairs() []pair {
	var out []pair
	for _, i := range slices.Compact(slices.Sorted(slices.Values(c.Instances))) {
		for _, t := range slices.Compact(slices.Sorted(slices.Values(c.Threads))) {
			if i*t <= c.Cores {
				out = append(out, pair{i, t})
			}
		}
	}
	return out
}

// RunRaw measures the model in-process, with no server: for every instances × threads pair it
// opens that many sessions, and for every batch size runs them in parallel (one goroutine per
// session, Run in a loop on tensors built once per configuration) for the warmup and the
// duration. It returns every configuration's rows per second and the best.
func RunRaw(ctx context.Context, rt engine.Runtime, cfg RawConfig) (*RawReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sig, err := rt.Inspect(ctx, cfg.ModelFile)
	if err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	type shaped struct {
		batch  int
		inputs []tensor.Tensor
		rows   int64
	}
	var plans []shaped
	seen := map[int64]bool{}
	for _, b := range cfg.Batches {
		specs, rows, err := resolveShapes(sig.Inputs, cfg.Shapes, b)
		if err != nil {
			return nil, err
		}
		if seen[rows] { // no variable batch dimension: every batch size is the same run
			continue
		}
		seen[rows] = true
		inputs, err := buildInputs(specs, cfg.Data, cfg.Seed)
		if err != nil {
			return nil, err
		}
		plans = append(plans, shaped{b, inputs, rows})
	}
	rep := &RawReport{
		ModelFile: cfg.ModelFile, Provider: cfg.Provider, Data: cfg.Data, Cores: cfg.Cores,
		Warmup: cfg.Warmup, Duration: cfg.Duration,
	}
	for _, t := range plans[0].inputs {
		rep.Inputs = append(rep.Inputs, tensor.Spec{Name: t.Name, DataType: t.DataType, Shape: t.Shape})
	}
	for _, p := range cfg.pairs() {
		sessions, err := openSessions(ctx, rt, cfg, p)
		if err != nil {
			return rep, err
		}
		for _, pl := range plans {
			cfg.Logger.Info("perf raw", "model", filepath.Base(cfg.ModelFile), "batch", pl.batch, "instances", p.instances, "threads", p.threads)
			res, err := runConfig(ctx, sessions, pl.inputs, cfg)
			if err != nil {
				closeAll(sessions)
				return rep, err
			}
			res.Batch, res.Instances, res.Threads = int(pl.rows), p.instances, p.threads
			res.RowsPerSec = res.RunsPerSec * float64(pl.rows)
			cfg.Logger.Info("perf raw done", "rows_per_sec", res.RowsPerSec, "p50", res.Latency.P50)
			rep.Results = append(rep.Results, res)
			if res.RowsPerSec > rep.Best.RowsPerSec {
				rep.Best = res
			}
		}
		closeAll(sessions)
	}
	return rep, nil
}

func openSessions(ctx context.Context, rt engine.Runtime, cfg RawConfig, p pair) ([]engine.Session, error) {
	sessions := make([]engine.Session, 0, p.instances)
	for range p.instances {
		s, err := rt.Open(ctx, cfg.ModelFile, engine.Options{IntraOpThreads: p.threads, InterOpThreads: 1,
			Provider: cfg.Provider, DeviceID: cfg.DeviceID})
		if err != nil {
			closeAll(sessions)
			return nil, fmt.Errorf("perf: opening %s with %d threads: %w", cfg.ModelFile, p.threads, err)
		}
		sessions = append(sessions, s)
	}
	return sessions, nil
}

func closeAll(sessions []engine.Session) {
	for _, s := range sessions {
		_ = s.Close() // a failed close of a benchmark session changes no result
	}
}

// runConfig runs every session in its own goroutine on the same inputs for the warmup and the
// window, and counts the runs that end inside the window.
func runConfig(ctx context.Context, sessions []engine.Session, inputs []tensor.Tensor, cfg RawConfig) (RawResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	begin := time.Now()
	win := window{begin.Add(cfg.Warmup), begin.Add(cfg.Warmup + cfg.Duration)}
	type instance struct {
		runs int64
		lat  []time.Duration
		err  error
	}
	per := max(cfg.MaxSamples/len(sessions), 1)
	results := make([]instance, len(sessions))
	var wg sync.WaitGroup
	for i, s := range sessions {
		res := &results[i]
		res.lat = make([]time.Duration, 0, min(per, 1<<10))
		wg.Go(func() {
			for {
				t0 := time.Now()
				if !t0.Before(win.end) || ctx.Err() != nil {
					return
				}
				if _, err := s.Run(ctx, inputs, nil); err != nil {
					res.err = err
					cancel()
					return
				}
				if t1 := time.Now(); win.contains(t1) {
					res.runs++
					if len(res.lat) < per {
						res.lat = append(res.lat, t1.Sub(t0))
					}
				}
			}
		})
	}
	var out RawResult
	var cpu0, cpu1 cpuMark
	if sleepUntil(ctx, win.start) == nil {
		cpu0 = markCPU()
		if sleepUntil(ctx, win.end) == nil {
			cpu1 = markCPU()
		}
	}
	wg.Wait()
	var samples []time.Duration
	for _, r := range results {
		if r.err != nil {
			return out, fmt.Errorf("perf: run: %w", r.err)
		}
		out.Runs += r.runs
		samples = append(samples, r.lat...)
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	out.Latency = Summarize(samples)
	out.RunsPerSec = float64(out.Runs) / cfg.Duration.Seconds()
	out.ClientCPU = cpuShare(cpu0, cpu1)
	return out, nil
}

// WriteTable writes the raw results as a table, then the best configuration.
func (r *RawReport) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "Raw in-process run of %s on %s: %s, %s data; %d cores\n",
		r.ModelFile, r.Provider, describeInputs(r.Inputs), r.Data, r.Cores)
	fmt.Fprintf(w, "%s per configuration after %s warmup\n\n", r.Duration, r.Warmup)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "Batch\tInstances\tThreads\tRuns/s\tRows/s\tp50 ms\tp90 ms\tp99 ms\tMax ms\tCPU\t")
	for _, x := range r.Results {
		l := x.Latency
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%.1f%%\t\n", x.Batch, x.Instances, x.Threads,
			x.RunsPerSec, x.RowsPerSec, ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), 100*x.ClientCPU)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("perf: writing table: %w", err)
	}
	b := r.Best
	_, err := fmt.Fprintf(w, "\nBest: %.1f rows/s at batch %d, %d instance(s) × %d thread(s)\n", b.RowsPerSec, b.Batch, b.Instances, b.Threads)
	return err
}
