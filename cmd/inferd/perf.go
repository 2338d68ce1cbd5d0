package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/perf"
)

// perfFlags are the raw values of `inferd perf`'s flags, parsed in run.
type perfFlags struct {
	url, model, version, grpc string
	protocol                  string
	concurrency               string
	rate                      float64
	maxOutstanding            int
	duration, warmup          time.Duration
	timeout                   time.Duration
	shapes                    []string
	batch                     int
	data, format              string
	seed                      uint64
	jsonPath                  string
	raw, stream               bool
	modelFile, library        string
	rawBatches                string
	rawInstances, rawThreads  string
	rawProvider               string
	rawDevice                 int
	verbose                   bool
}

func perfCommand(env []string) *cobra.Command {
	var f perfFlags
	cmd := &cobra.Command{
		Use:   "perf",
		Short: "Measure a KServe v2 server (concurrency sweep or fixed rate), or the model's raw in-process limit",
		Long: `perf sends KServe v2 inference requests to a server and reports throughput, latency
percentiles, this client's share of the machine's CPU and, when the server has the statistics
extension, its queue/compute split and average batch size.

Closed loop (default): for each --concurrency level, that many clients send a request, wait for
its answer and send the next. Open loop (--rate): requests leave at a fixed rate with at most
--max-outstanding in flight; the rest are dropped and counted.

--protocol grpc sends ModelInfer calls on one connection; with --stream, each step's requests go
on one ModelStreamInfer stream instead, the concurrency (or --max-outstanding) being the number
of requests in flight on it.

--raw runs --model-file in this process through ONNX Runtime with no server, over a sweep of
batch size x instances x intra-op threads (instances x threads <= cores), and reports the best
rows/s: the physical limit a server on this machine can approach.`,
		Example: `  inferd perf -m mlp --concurrency 1:64:x4 --format binary
  inferd perf -m mlp --protocol grpc --stream --concurrency 64 --format binary
  inferd perf -m ocr_cls --shape x=1,3,48,192 --batch 8 --rate 200 --duration 30s --json out.json
  inferd perf --raw --model-file model.onnx --duration 2s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			level := slog.LevelWarn
			if f.verbose {
				level = slog.LevelInfo
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			return f.run(ctx, cmd, env, log)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.url, "url", "u", "http://127.0.0.1:8080", "server base URL")
	fl.StringVarP(&f.model, "model", "m", "", "model name (required without --raw)")
	fl.StringVar(&f.version, "model-version", "", "model version (default: the server's choice)")
	fl.StringVar(&f.concurrency, "concurrency", "1", `closed-loop levels: "1,4,16,64", a range "1:64:x2" (factor) or "1:8:2" (step)`)
	fl.Float64Var(&f.rate, "rate", 0, "open loop: requests per second (instead of --concurrency)")
	fl.IntVar(&f.maxOutstanding, "max-outstanding", perf.DefaultMaxOutstanding, "open loop: most requests in flight; beyond, requests are dropped")
	fl.DurationVar(&f.duration, "duration", perf.DefaultDuration, "measured time per step (per configuration with --raw)")
	fl.DurationVar(&f.warmup, "warmup", perf.DefaultWarmup, "unmeasured time before each step (0 for none)")
	fl.DurationVar(&f.timeout, "timeout", perf.DefaultRequestTimeout, "limit for one request")
	fl.StringArrayVar(&f.shapes, "shape", nil, "full shape of an input, name=d0,d1,... (repeatable; default: the model's, -1 as 1)")
	fl.IntVar(&f.batch, "batch", 0, "rows per request: dimension 0 of inputs whose dimension 0 is variable (0: as the shape says)")
	fl.StringVar(&f.data, "data", string(perf.DataRandom), "input data: random (seeded) or zero")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of random input data")
	fl.StringVar(&f.format, "format", "json", "request and response encoding: json or binary (the binary tensor extension); with --grpc, typed contents or raw")
	fl.StringVar(&f.protocol, "protocol", "http", "how requests are sent: http, or grpc (ModelInfer calls to --grpc; metadata and statistics still from --url)")
	fl.StringVar(&f.grpc, "grpc", "", "--protocol grpc: host:port of the gRPC listener (default: --url's host, port 8001)")
	fl.BoolVar(&f.stream, "stream", false, "--protocol grpc: send each step's requests on one ModelStreamInfer stream, --concurrency of them in flight on it (matched by id)")
	fl.StringVar(&f.jsonPath, "json", "", "also write every result to this file as JSON")
	fl.BoolVar(&f.raw, "raw", false, "no server: run --model-file in-process and sweep batch x instances x threads")
	fl.StringVar(&f.modelFile, "model-file", "", "--raw: the .onnx file")
	fl.StringVar(&f.library, "onnxruntime-library", "", "--raw: path to libonnxruntime.so (default: $INFERD_ONNXRUNTIME_LIBRARY, /usr/lib/inferd, next to the binary, build/onnxruntime)")
	fl.StringVar(&f.rawBatches, "raw-batches", "1:64:x2", "--raw: batch sizes")
	fl.StringVar(&f.rawInstances, "raw-instances", "", "--raw: instance counts (default: powers of two up to the cores, and the cores)")
	fl.StringVar(&f.rawProvider, "raw-provider", "cpu", "--raw: execution provider, cpu or cuda (needs make deps-cuda's library, docs/gpu.md)")
	fl.IntVar(&f.rawDevice, "raw-device", 0, "--raw --raw-provider cuda: the CUDA device (ordinal) to run on")
	fl.StringVar(&f.rawThreads, "raw-threads", "", "--raw: intra-op thread counts (default: as --raw-instances)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "log progress to stderr")
	return cmd
}

func (f *perfFlags) run(ctx context.Context, cmd *cobra.Command, env []string, log *slog.Logger) error {
	shapes := map[string][]int64{}
	for _, s := range f.shapes {
		name, shape, err := perf.ParseShape(s)
		if err != nil {
			return err
		}
		shapes[name] = shape
	}
	data, err := perf.ParseDataMode(f.data)
	if err != nil {
		return err
	}
	if f.duration <= 0 {
		return fmt.Errorf("--duration %s: must be positive", f.duration)
	}
	warmup := f.warmup
	if warmup == 0 {
		warmup = -1 // perf treats 0 as "default"; the flag's 0 means none
	}
	if f.raw {
		return f.runRaw(ctx, cmd.OutOrStdout(), env, log, perf.RawConfig{
			ModelFile: f.modelFile, Duration: f.duration, Warmup: warmup,
			Shapes: shapes, Data: data, Seed: f.seed, Logger: log,
		})
	}
	if f.format != "json" && f.format != "binary" {
		return fmt.Errorf("--format %q: want json or binary", f.format)
	}
	grpcAddr, err := f.grpcAddr()
	if err != nil {
		return err
	}
	if f.stream && grpcAddr == "" {
		return errors.New("--stream needs --protocol grpc")
	}
	cfg := perf.Config{
		URL: f.url, Model: f.model, Version: f.version, Rate: f.rate, MaxOutstanding: f.maxOutstanding,
		Duration: f.duration, Warmup: warmup, Shapes: shapes, Batch: f.batch, Data: data, Seed: f.seed,
		Binary: f.format == "binary", GRPC: grpcAddr, Stream: f.stream, RequestTimeout: f.timeout, Logger: log,
	}
	if f.rate == 0 {
		if cfg.Concurrency, err = perf.ParseSweep(f.concurrency); err != nil {
			return fmt.Errorf("--concurrency: %w", err)
		}
	}
	rep, runErr := perf.Run(ctx, cfg)
	if rep == nil {
		return runErr
	}
	if err := f.output(cmd.OutOrStdout(), rep, rep.WriteTable); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		return runErr
	}
	if failed := rep.Failed(); len(failed) > 0 {
		return fmt.Errorf("every request failed at %s", strings.Join(failed, ", "))
	}
	return nil
}

func (f *perfFlags) runRaw(ctx context.Context, out io.Writer, env []string, log *slog.Logger, cfg perf.RawConfig) error {
	if cfg.ModelFile == "" {
		return errors.New("--raw needs --model-file")
	}
	switch strings.ToLower(f.rawProvider) {
	case "cpu":
		cfg.Provider = engine.ProviderCPU
	case "cuda":
		cfg.Provider, cfg.DeviceID = engine.ProviderCUDA, f.rawDevice
	default:
		return fmt.Errorf("--raw-provider %q: want cpu or cuda", f.rawProvider)
	}
	var err error
	if cfg.Batches, err = perf.ParseSweep(f.rawBatches); err != nil {
		return fmt.Errorf("--raw-batches: %w", err)
	}
	if f.rawInstances != "" {
		if cfg.Instances, err = perf.ParseSweep(f.rawInstances); err != nil {
			return fmt.Errorf("--raw-instances: %w", err)
		}
	}
	if f.rawThreads != "" {
		if cfg.Threads, err = perf.ParseSweep(f.rawThreads); err != nil {
			return fmt.Errorf("--raw-threads: %w", err)
		}
	}
	rt, err := ort.New(ort.RuntimeOptions{LibraryPath: f.library, Getenv: lookup(env)}, log.With("component", "engine"))
	if err != nil {
		return err
	}
	defer rt.Close()
	rep, runErr := perf.RunRaw(ctx, rt, cfg)
	if rep == nil || len(rep.Results) == 0 {
		return runErr
	}
	return errors.Join(runErr, f.output(out, rep, rep.WriteTable))
}

// output writes the table to out and, with --json, the report to that file.
func (f *perfFlags) output(out io.Writer, rep any, table func(io.Writer) error) error {
	if err := table(out); err != nil {
		return err
	}
	if f.jsonPath == "" {
		return nil
	}
	file, err := os.Create(f.jsonPath)
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := perf.WriteJSON(file, rep); err != nil {
		file.Close()
		return err
	}
	if err := file.Close(); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}

// grpcAddr is where --protocol grpc sends requests ("" for http): --grpc, or --url's host at
// Triton's gRPC port.
func (f *perfFlags) grpcAddr() (string, error) {
	switch f.protocol {
	case "http":
		if f.grpc != "" {
			return "", fmt.Errorf("--grpc %s needs --protocol grpc", f.grpc)
		}
		return "", nil
	case "grpc":
		if f.grpc != "" {
			return f.grpc, nil
		}
		u, err := url.Parse(f.url)
		if err != nil || u.Hostname() == "" {
			return "", fmt.Errorf("--url %q: no host to find the gRPC listener at; give --grpc", f.url)
		}
		return net.JoinHostPort(u.Hostname(), "8001"), nil
	}
	return "", fmt.Errorf("--protocol %q: want http or grpc", f.protocol)
}
