package models

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/placement"
)

// Devices is the repository's view of the node's GPUs; the daemon adapts package gpu to it.
// Its methods are called from the loader's goroutine, must be safe for concurrent use, and
// must return once ctx ends.
type Devices interface {
	// GPUs reports every GPU now; on a node without any, an empty list and why ("no NVIDIA
	// driver is installed").
	GPUs(ctx context.Context) ([]GPU, string)
	// ProcessMemory is the GPU memory process pid (0: this process) holds on the GPU with NVML
	// index index now; ok is false when that cannot be told.
	ProcessMemory(ctx context.Context, index, pid int) (used uint64, ok bool)
}

// GPU is one GPU as the repository places models on it. Sizes are bytes.
type GPU struct {
	// Index is NVML's (and nvidia-smi's) number, which model.toml's gpus list uses.
	Index int
	// CUDAOrdinal is the device number the engine opens it by.
	CUDAOrdinal int
	Total, Free uint64
	// Problem is why the GPU must not take work ("" when it may): lost, MIG mode, hidden
	// from CUDA.
	Problem string
}

// DefaultGPUMemoryFraction is gpu.memory_fraction's default.
const DefaultGPUMemoryFraction = 0.9

// SetDevices gives the repository the node's GPUs (Settings.GPUMemoryFraction says how much of
// one a version may take). Without it every GPU request meets a node without GPUs.
func (r *Repository) SetDevices(d Devices) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.devices = d
}

// DeviceLost makes every version with an instance on GPU index unavailable, with reason: the
// driver lost the GPU and its sessions would fail or hang. The sessions stay open (calling
// into a lost GPU can hang) until the version is replaced or unloaded. Safe to call from any
// goroutine; it does not wait for a load in progress.
func (r *Repository) DeviceLost(index int, reason string) {
	r.mu.Lock()
	var hit []*Version
	for _, m := range r.models {
		for _, v := range m.Versions {
			if v.state == StateReady && slices.Contains(v.GPUs, index) {
				v.state, v.reason = StateUnavailable, fmt.Sprintf("GPU %d failed: %s", index, reason)
				hit = append(hit, v)
			}
		}
	}
	r.mu.Unlock()
	for _, v := range hit {
		r.log.Error("model version unavailable: its GPU failed", "model", v.Model, "version", v.Number, "gpu", index, "reason", reason)
	}
}

// notOnGPU is why a version could not have a GPU: nothing about the model is wrong, so a model
// that allows the CPU runs there instead.
type notOnGPU struct{ error }

func (e notOnGPU) Unwrap() error { return e.error }

// openInstancesLocked opens v's instances where its device setting and the GPUs allow: the
// CPU for "cpu"; for "gpu" and "auto", the GPUs placement picks, and otherwise the CPU where
// the model allows it, saying why in v.Fallback and the log. Caller holds loadMu.
func (r *Repository) openInstancesLocked(ctx context.Context, v *Version, path string, log *slog.Logger) error {
	ic := v.Config.Instance
	cpu := engine.Options{
		Provider:       engine.ProviderCPU,
		IntraOpThreads: cmp.Or(ic.IntraOpThreads, r.cur.Defaults.IntraOpThreads, max(1, r.cur.Defaults.Cores/ic.Count)),
		InterOpThreads: r.cur.Defaults.InterOpThreads,
	}
	if ic.Device == DeviceCPU {
		if r.calibrates(v) {
			return r.openTunedLocked(ctx, v, path, cpu, log)
		}
		return r.openWrittenLocked(ctx, v, path, cpu, "calibration is off ([tuning] auto = false, or [scheduler] calibration_time = 0)")
	}
	err := r.openOnGPUsLocked(ctx, v, path, cpu, log)
	switch {
	case err == nil:
		v.Tuning.Source, v.Tuning.Instances = "model.toml", len(v.Sessions)
		v.Tuning.Reason = "on a GPU: not calibrated (docs/tuning.md)"
		return nil
	case ctx.Err() != nil || !errors.As(err, new(notOnGPU)):
		return err
	case ic.Device == DeviceGPU && !ic.CPUFallback:
		return fmt.Errorf("device \"gpu\" requested, but %w; set cpu_fallback = true or device = \"auto\" to run on the CPU instead", err)
	}
	v.Fallback = err.Error()
	level := slog.LevelInfo // "auto" promised nothing
	if ic.Device == DeviceGPU {
		level = slog.LevelWarn
	}
	log.Log(ctx, level, "running on the CPU instead of a GPU", "device", ic.Device, "reason", err)
	return r.openWrittenLocked(ctx, v, path, cpu, "on the CPU instead of a GPU: calibration runs for device = \"cpu\" only")
}

// openOnGPUsLocked places v's instances on GPUs and opens them there. An error is a notOnGPU
// when the GPUs, not the model, are the reason.
func (r *Repository) openOnGPUsLocked(ctx context.Context, v *Version, path string, cpu engine.Options, log *slog.Logger) error {
	ic := v.Config.Instance
	var gpus []GPU
	why := "GPU discovery is not enabled in this daemon"
	if r.devices != nil {
		gpus, why = r.devices.GPUs(ctx)
	}
	if len(gpus) == 0 {
		return notOnGPU{fmt.Errorf("this node has no usable GPU (%s)", why)}
	}
	per := uint64(ic.GPUMemoryBytes)
	if per == 0 {
		per = placement.Estimate(dirBytes(v.Dir), ioBytesPerRow(v.Signature, v.Config.MaxBatchSize), v.Config.MaxBatchSize)
	}
	held := r.gpuHeldLocked()
	byIndex := map[int]GPU{}
	pg := make([]placement.GPU, len(gpus))
	for i, g := range gpus {
		byIndex[g.Index] = g
		pg[i] = placement.GPU{Index: g.Index, Total: g.Total, Free: g.Free, Held: held[g.Index], Problem: g.Problem}
	}
	fraction := r.cur.GPUMemoryFraction
	plan, err := placement.Place(placement.Request{Instances: ic.Count, PerInstance: per, Fraction: fraction,
		Allowed: ic.GPUs, Spread: ic.Spread}, pg)
	if err != nil {
		return notOnGPU{fmt.Errorf("no GPU can take it: %w", err)}
	}
	baseline := map[int]uint64{}
	for _, idx := range plan {
		if used, ok := r.devices.ProcessMemory(ctx, idx, 0); ok {
			baseline[idx] = used
		}
	}
	limits := arenaLimits(plan, pg, per, fraction, ic.GPUMemoryBytes > 0)
	opts := make([]engine.Options, len(plan))
	for k, idx := range plan {
		o := cpu
		o.Provider, o.DeviceID, o.GPUMemLimit = engine.ProviderCUDA, byIndex[idx].CUDAOrdinal, int64(min(limits[idx], 1<<62))
		// A CUDA session's operators run on the GPU and need no CPU thread pool of their own
		// (docs/scheduling.md, Threads).
		o.IntraOpThreads = cmp.Or(v.Config.Instance.IntraOpThreads, r.cur.Defaults.IntraOpThreads, 1)
		opts[k] = o
	}
	log.Info("placing on GPUs", "gpus", plan, "estimate_per_instance", placement.Bytes(per), "memory_fraction", fraction)
	if err := r.openAll(ctx, v, path, opts); err != nil {
		if errors.Is(err, engine.ErrProviderUnavailable) {
			return notOnGPU{fmt.Errorf("the CUDA execution provider failed: %w", err)}
		}
		return err
	}
	v.GPUs, v.GPUMemory, v.baseline = plan, slices.Repeat([]uint64{per}, len(plan)), baseline
	return nil
}

// arenaLimits is the cap of each placed GPU's CUDA arenas, per instance (ORT's gpu_mem_limit).
// A gpu_memory_bytes the model sets is a budget, and caps each instance at it. The estimate
// is only a guess (activations of a convolution stack on a large image outgrow it many times
// over), so without it each instance may grow into an even share of what its GPU offered the
// version at placement, and never less than the estimate. Arenas that grow at run time show in
// NVML's free memory, which bounds what later placements are offered.
func arenaLimits(plan []int, gpus []placement.GPU, per uint64, fraction float64, budget bool) map[int]uint64 {
	limits := map[int]uint64{}
	if budget {
		for _, idx := range plan {
			limits[idx] = per
		}
		return limits
	}
	count := map[int]uint64{}
	for _, idx := range plan {
		count[idx]++
	}
	for _, g := range gpus {
		if n := count[g.Index]; n > 0 {
			limits[g.Index] = max(placement.Offer(g, fraction)/n, per)
		}
	}
	return limits
}

// openAll opens one session per options; on error it closes those it opened.
func (r *Repository) openAll(ctx context.Context, v *Version, path string, opts []engine.Options) error {
	for _, o := range opts {
		s, err := v.host.Open(ctx, path, o)
		if err != nil {
			closeAll(v.Sessions)
			v.Sessions = nil
			return err
		}
		v.Sessions = append(v.Sessions, s)
		v.Provider = s.Provider()
	}
	return nil
}

// settleGPULocked runs after v's warmup: it makes sure no GPU of v was lost meanwhile,
// replaces each instance's memory estimate by what the process's usage grew by on its GPU
// (when NVML can tell), and books v's GPU memory as held. Caller holds loadMu.
func (r *Repository) settleGPULocked(ctx context.Context, v *Version, log *slog.Logger) error {
	if len(v.GPUs) == 0 {
		return nil
	}
	gpus, _ := r.devices.GPUs(ctx)
	for _, g := range gpus {
		if g.Problem != "" && slices.Contains(v.GPUs, g.Index) {
			return fmt.Errorf("GPU %d failed while the version loaded: %s", g.Index, g.Problem)
		}
	}
	perGPU := map[int]int{}
	for _, idx := range v.GPUs {
		perGPU[idx]++
	}
	// A version in a worker of its own holds everything its worker holds there (its CUDA context
	// included); one in the daemon holds what the daemon's use grew by while it loaded.
	pid := v.host.Status().PID
	for _, idx := range slices.Sorted(maps.Keys(perGPU)) {
		before, ok := v.baseline[idx]
		if pid != 0 {
			before, ok = 0, false
		}
		after, ok2 := r.devices.ProcessMemory(ctx, idx, pid)
		if !ok2 || after <= before {
			if !ok2 {
				log.Debug("GPU memory of this process unknown; keeping the estimate", "gpu", idx)
			}
			continue
		}
		measured := (after - before) / uint64(perGPU[idx])
		if !ok {
			// No baseline: the process had no CUDA context on this GPU, so all it holds there is new.
			measured = after / uint64(perGPU[idx])
		}
		for k, g := range v.GPUs {
			if g == idx {
				log.Info("GPU memory measured", "gpu", idx, "instance", k, "estimate", placement.Bytes(v.GPUMemory[k]), "measured", placement.Bytes(measured))
				v.GPUMemory[k] = measured
			}
		}
	}
	v.baseline = nil
	r.onGPU[v] = true
	return nil
}

// gpuHeldLocked sums, per GPU, the memory of the versions loaded on it.
func (r *Repository) gpuHeldLocked() map[int]uint64 {
	held := map[int]uint64{}
	for v := range r.onGPU {
		for k, idx := range v.GPUs {
			held[idx] += v.GPUMemory[k]
		}
	}
	return held
}

// dirBytes is the size of every file under dir: the model and its external weights.
func dirBytes(dir string) uint64 {
	var n uint64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil && info.Size() > 0 {
				n += uint64(info.Size())
			}
		}
		return nil
	})
	return n
}

// ioBytesPerRow is the bytes of one batch row's inputs and outputs (the whole tensors when the
// model does not batch), with each variable dimension counted as 1.
func ioBytesPerRow(sig engine.Signature, maxBatch int) uint64 {
	var n uint64
	for _, s := range slices.Concat(sig.Inputs, sig.Outputs) {
		elems := uint64(1)
		for i, d := range s.Shape {
			if (i == 0 && maxBatch > 0) || d < 1 {
				continue
			}
			elems *= uint64(d)
		}
		n += elems * uint64(max(s.DataType.Size(), 1))
	}
	return n
}

// validateGPU checks the GPU settings of an instance group.
func (ic InstanceConfig) validateGPU() []error {
	var errs []error
	for i, g := range ic.GPUs {
		if g < 0 {
			errs = append(errs, fmt.Errorf("instance.gpus: %d is not a GPU index (0, 1, ... as nvidia-smi lists them)", g))
		}
		if slices.Contains(ic.GPUs[:i], g) {
			errs = append(errs, fmt.Errorf("instance.gpus: GPU %d listed twice", g))
		}
	}
	if ic.Device == DeviceCPU && (len(ic.GPUs) > 0 || ic.Spread || ic.GPUMemoryBytes != 0) {
		var set []string
		for key, on := range map[string]bool{"gpus": len(ic.GPUs) > 0, "spread": ic.Spread, "gpu_memory_bytes": ic.GPUMemoryBytes != 0} {
			if on {
				set = append(set, "instance."+key)
			}
		}
		slices.Sort(set)
		errs = append(errs, fmt.Errorf("%s set, but instance.device is \"cpu\": set device = \"gpu\" or \"auto\"", strings.Join(set, ", ")))
	}
	if ic.GPUMemoryBytes < 0 {
		errs = append(errs, fmt.Errorf("instance.gpu_memory_bytes %d must be >= 0", ic.GPUMemoryBytes))
	}
	return errs
}
