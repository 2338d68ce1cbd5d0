package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/gpu"
	"github.com/inferd/inferd/hostinfo"
	"github.com/inferd/inferd/internal/mlpmodel"
	"github.com/inferd/inferd/tensor"
)

// The model of the CUDA check: a small FP32 MLP, run at one batch on a GPU and on the CPU.
const (
	checkIn, checkHidden, checkOut = 64, 256, 64
	checkBatch                     = 8
	// checkTolerance bounds the relative L2 difference between CUDA and CPU outputs (CUDA may
	// use TF32 for FP32 products).
	checkTolerance = 1e-2
)

// devicesReport is what `inferd devices` found; --json prints it as is.
type devicesReport struct {
	Host        *hostinfo.Info `json:"host,omitempty"`
	HostError   string         `json:"host_error,omitempty"`
	GPUs        gpu.Status     `json:"gpus"`
	ONNXRuntime ortReport      `json:"onnxruntime"`
	// CUDAChecks has one entry per usable GPU once the CUDA provider is installed.
	CUDAChecks []cudaCheck `json:"cuda_checks,omitempty"`
	// CUDACheckSkipped says why no GPU was checked.
	CUDACheckSkipped string `json:"cuda_check_skipped,omitempty"`
}

type ortReport struct {
	Library   string   `json:"library,omitempty"`
	Version   string   `json:"version,omitempty"`
	Providers []string `json:"providers,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// cudaCheck is one GPU's CUDA check: a session opened on it, run, and compared with the CPU.
type cudaCheck struct {
	GPU          int     `json:"gpu"`
	CUDAOrdinal  int     `json:"cuda_ordinal"`
	OK           bool    `json:"ok"`
	RelativeDiff float64 `json:"relative_difference"`
	RunSeconds   float64 `json:"run_seconds"` // the second CUDA run, after the first warmed it up
	Error        string  `json:"error,omitempty"`
}

func devicesCommand(env []string) *cobra.Command {
	var library string
	var asJSON, noCheck bool
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "Show the CPUs, the GPUs and ONNX Runtime's providers as the daemon would find them, and check CUDA on each GPU",
		Long: `devices reads what inferd serve would find at start: the CPU (model, usable threads and
cores, instruction set extensions, memory under the cgroup's limit), the NVIDIA GPUs through
NVML (or why the node is CPU-only), and the ONNX Runtime library with its execution providers.

Where the CUDA provider is installed (make deps-cuda, or the inferd-cuda package) it then opens
a small generated model on every usable GPU, runs it, and compares the outputs with the CPU's.
It exits non-zero when a GPU fails that check, with ONNX Runtime's reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			rep := inspectDevices(cmd.Context(), env, library, !noCheck, log)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				writeDevices(out, rep)
			}
			for _, c := range rep.CUDAChecks {
				if !c.OK {
					return fmt.Errorf("the CUDA check failed on GPU %d", c.GPU)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&library, "onnxruntime-library", "", "path to libonnxruntime.so (default: $INFERD_ONNXRUNTIME_LIBRARY, /usr/lib/inferd, next to the binary, build/onnxruntime)")
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fl.BoolVar(&noCheck, "no-cuda-check", false, "only list; open no CUDA session")
	return cmd
}

func inspectDevices(ctx context.Context, env []string, library string, check bool, log *slog.Logger) devicesReport {
	var rep devicesReport
	if info, err := hostinfo.Detect(); err != nil {
		rep.HostError = err.Error()
	} else {
		rep.Host = &info
	}
	cudaInPCIOrder(env)
	nv := gpu.New(gpu.Options{Getenv: lookup(env)}, log)
	defer nv.Close()
	rep.GPUs = nv.Init(ctx)

	rt, err := ort.New(ort.RuntimeOptions{LibraryPath: library, Getenv: lookup(env)}, log)
	if err != nil {
		rep.ONNXRuntime.Error = err.Error()
		rep.CUDACheckSkipped = "no ONNX Runtime library"
		return rep
	}
	defer rt.Close()
	rep.ONNXRuntime = ortReport{Library: rt.LibraryPath(), Version: rt.Version(), Providers: rt.Providers()}

	var usable []gpu.Device
	for _, d := range rep.GPUs.Devices {
		if ok, _ := d.Usable(); ok {
			usable = append(usable, d)
		}
	}
	switch {
	case !check:
		rep.CUDACheckSkipped = "--no-cuda-check"
	case !rep.GPUs.Available:
		rep.CUDACheckSkipped = "no GPU"
	case len(usable) == 0:
		rep.CUDACheckSkipped = "no usable GPU"
	case !slices.Contains(rt.Providers(), engine.ProviderCUDA):
		rep.CUDACheckSkipped = fmt.Sprintf("the CUDA provider is not installed beside %s (make deps-cuda, or the inferd-cuda package)", rt.LibraryPath())
	default:
		rep.CUDAChecks = checkCUDA(ctx, rt, usable)
	}
	return rep
}

// checkCUDA runs the check model on each GPU and on the CPU and compares the outputs.
func checkCUDA(ctx context.Context, rt *ort.Runtime, devices []gpu.Device) []cudaCheck {
	fail := func(err error) []cudaCheck {
		out := make([]cudaCheck, len(devices))
		for i, d := range devices {
			out[i] = cudaCheck{GPU: d.Index, CUDAOrdinal: d.CUDAOrdinal, Error: err.Error()}
		}
		return out
	}
	dir, err := os.MkdirTemp("", "inferd-devices-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "check.onnx")
	if err := os.WriteFile(path, mlpmodel.Build("wide", []int{checkIn, checkHidden, checkHidden, checkOut}), 0o600); err != nil {
		return fail(err)
	}
	x := make([]float32, checkBatch*checkIn)
	for i := range x {
		x[i] = float32(i%17)/8 - 1
	}
	in := []tensor.Tensor{tensor.FromFloat32s("input", []int64{checkBatch, checkIn}, x)}
	want, _, err := runTwice(ctx, rt, path, engine.Options{}, in)
	if err != nil {
		return fail(fmt.Errorf("on the CPU: %w", err))
	}
	out := make([]cudaCheck, 0, len(devices))
	for _, d := range devices {
		c := cudaCheck{GPU: d.Index, CUDAOrdinal: d.CUDAOrdinal}
		got, took, err := runTwice(ctx, rt, path, engine.Options{Provider: engine.ProviderCUDA, DeviceID: d.CUDAOrdinal,
			GPUMemLimit: 256 << 20}, in)
		c.RunSeconds = took.Seconds()
		switch {
		case err != nil:
			c.Error = err.Error()
		default:
			c.RelativeDiff = relativeL2(got, want)
			c.OK = c.RelativeDiff <= checkTolerance
			if !c.OK {
				c.Error = fmt.Sprintf("CUDA output differs from the CPU's: relative L2 difference %.2e > %.0e", c.RelativeDiff, checkTolerance)
			}
		}
		out = append(out, c)
	}
	return out
}

// runTwice opens path with opts and runs in twice (the first run warms up); it returns the
// second run's output and how long that run took.
func runTwice(ctx context.Context, rt *ort.Runtime, path string, opts engine.Options, in []tensor.Tensor) ([]float32, time.Duration, error) {
	s, err := rt.Open(ctx, path, opts)
	if err != nil {
		return nil, 0, err
	}
	defer s.Close()
	if want := cmp.Or(opts.Provider, engine.ProviderCPU); s.Provider() != want {
		return nil, 0, fmt.Errorf("the session runs on %s, not %s", s.Provider(), want)
	}
	if _, err := s.Run(ctx, in, nil); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	outs, err := s.Run(ctx, in, nil)
	if err != nil {
		return nil, 0, err
	}
	return outs[0].Float32s(), time.Since(start), nil
}

func relativeL2(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var diff, norm float64
	for i := range want {
		d := float64(got[i] - want[i])
		diff += d * d
		norm += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(diff / max(norm, 1e-30))
}

func writeDevices(w io.Writer, rep devicesReport) {
	const gib = 1 << 30
	if h := rep.Host; h != nil {
		quota := "none"
		if h.CPU.Quota > 0 {
			quota = fmt.Sprintf("%.2f CPUs", h.CPU.Quota)
		}
		fmt.Fprintf(w, "host: %s\n", h.CPU.Model)
		fmt.Fprintf(w, "  threads usable %d (online %d, affinity %d, cgroup quota %s), cores %d, GOMAXPROCS %d\n",
			h.CPU.Threads, h.CPU.Online, h.CPU.Affinity, quota, h.CPU.Cores, h.CPU.GOMAXPROCS)
		fmt.Fprintf(w, "  features: %s\n", cmp.Or(strings.Join(h.CPU.Features, " "), "none that ONNX Runtime uses"))
		fmt.Fprintf(w, "  memory: %.1f GiB usable, %.1f GiB available\n",
			float64(h.Memory.UsableTotal)/gib, float64(h.Memory.UsableAvailable)/gib)
	} else {
		fmt.Fprintf(w, "host: unreadable: %s\n", rep.HostError)
	}
	if !rep.GPUs.Available {
		fmt.Fprintf(w, "gpus: none: %s\n", rep.GPUs.Reason)
	} else {
		fmt.Fprintf(w, "gpus: driver %s, CUDA %s\n", rep.GPUs.DriverVersion, rep.GPUs.CUDAVersion)
		for _, d := range rep.GPUs.Devices {
			use := "usable"
			if ok, why := d.Usable(); !ok {
				use = "not used: " + why
			}
			fmt.Fprintf(w, "  GPU %d: %s, %s, %s, compute %s, %.1f GiB, CUDA ordinal %d, %s\n",
				d.Index, d.Name, d.UUID, d.PCIBusID, cmp.Or(d.ComputeCapability, "?"), float64(d.MemoryTotal)/gib, d.CUDAOrdinal, use)
		}
	}
	if r := rep.ONNXRuntime; r.Error != "" {
		fmt.Fprintf(w, "onnxruntime: %s\n", r.Error)
	} else {
		fmt.Fprintf(w, "onnxruntime: %s (%s), providers: %s\n", r.Library, r.Version, strings.Join(r.Providers, ", "))
	}
	if rep.CUDACheckSkipped != "" {
		fmt.Fprintf(w, "cuda check: skipped: %s\n", rep.CUDACheckSkipped)
	}
	for _, c := range rep.CUDAChecks {
		if c.OK {
			fmt.Fprintf(w, "cuda check: GPU %d: ok: a %d→%d→%d→%d MLP at batch %d matches the CPU (relative difference %.1e; run %.2f ms)\n",
				c.GPU, checkIn, checkHidden, checkHidden, checkOut, checkBatch, c.RelativeDiff, c.RunSeconds*1000)
		} else {
			fmt.Fprintf(w, "cuda check: GPU %d: FAILED: %s\n", c.GPU, c.Error)
		}
	}
}
