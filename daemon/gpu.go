package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/gpu"
	"github.com/inferd/inferd/hostinfo"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/models"
)

// gpuHealthInterval is how often the GPUs are checked for one that the driver lost.
const gpuHealthInterval = 10 * time.Second

// hardware is what the daemon knows of the machine beside the GPUs.
type hardware struct {
	host    hostinfo.Info // read once at start: CPUs do not change under a running process
	hostErr error
}

// setupHardware reads the host, connects the GPUs (when the daemon has them) to model
// placement and /metrics, and reports where each model version runs as a metric. Called once
// from New.
func (d *Daemon) setupHardware(cfg *config.Config) {
	d.hw.host, d.hw.hostErr = hostinfo.Detect()
	d.metrics.Registry.MustRegister(metrics.NewPlacements(d.placements))
	if d.opts.GPU == nil {
		return
	}
	d.repo.SetDevices(gpuDevices{nv: d.opts.GPU, timeout: cfg.GPU.TelemetryTimeout, pid: os.Getpid()})
	d.metrics.Registry.MustRegister(metrics.NewHardware(gpuSamples{d.opts.GPU}, cfg.GPU.TelemetryTimeout,
		d.log.With("component", "metrics")))
}

// startHardware logs the host once, finds the GPUs (waiting for a driver that is still
// loading, up to gpu.init_retry) and watches them for one that the driver loses, which makes
// the model versions on it unavailable. The returned function stops the watch.
func (d *Daemon) startHardware(ctx context.Context) (stop func()) {
	if info, err := d.hw.host, d.hw.hostErr; err != nil {
		d.log.Warn("reading the host's CPUs and memory failed", "err", err)
	} else {
		d.log.Info("host", "cpu", info.CPU.Model, "threads", info.CPU.Threads, "cores", info.CPU.Cores,
			"cpu_quota", info.CPU.Quota, "gomaxprocs", info.CPU.GOMAXPROCS, "cpu_features", strings.Join(info.CPU.Features, ","),
			"memory_total", info.Memory.UsableTotal, "memory_available", info.Memory.UsableAvailable)
	}
	if d.opts.GPU == nil {
		d.log.Info("GPU discovery is off; models run on the CPU")
		return func() {}
	}
	if st := d.opts.GPU.Init(ctx); !st.Available {
		return func() {}
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		d.opts.GPU.Watch(wctx, gpuHealthInterval, d.config().GPU.TelemetryTimeout, func(dev gpu.Device) {
			d.repo.DeviceLost(dev.Index, dev.Problem)
		})
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// hardwareComponents adds "gpus" and "host" to /health. It does not call NVML.
func (d *Daemon) hardwareComponents(out map[string]api.Component) {
	switch {
	case d.opts.GPU == nil:
		out["gpus"] = api.Component{State: "none", Detail: "GPU discovery is off; models run on the CPU"}
	default:
		st := d.opts.GPU.Status()
		c := api.Component{State: "ok", Detail: st}
		if !st.Available {
			c.State = "none"
		}
		for _, dev := range st.Devices {
			if dev.Problem != "" {
				c.State = "degraded"
			}
		}
		out["gpus"] = c
	}
	if d.hw.hostErr != nil {
		out["host"] = api.Component{State: "unknown", Detail: d.hw.hostErr.Error()}
		return
	}
	info := d.hw.host
	if mem, err := hostinfo.DetectMemory(); err == nil {
		info.Memory = mem
	}
	out["host"] = api.Component{State: "ok", Detail: info}
}

// placements lists where each ready model version runs, for inferd_model_execution_provider_info.
func (d *Daemon) placements() []metrics.ModelPlacement {
	var out []metrics.ModelPlacement
	for _, e := range d.repo.Index() {
		if e.State != models.StateReady {
			continue
		}
		v, err := d.repo.Resolve(e.Name, e.Version)
		if err != nil {
			continue // it changed since the index was read
		}
		out = append(out, metrics.ModelPlacement{Model: v.Model, Version: v.Label(), Provider: v.Provider,
			GPUs: v.GPUs, Fallback: v.Fallback != ""})
	}
	return out
}

// gpuDevices is models.Devices over package gpu.
type gpuDevices struct {
	nv      *gpu.NVML
	timeout time.Duration
	pid     int
}

func (g gpuDevices) GPUs(ctx context.Context) ([]models.GPU, string) {
	if st := g.nv.Status(); !st.Available {
		return nil, st.Reason
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	snap, err := g.nv.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Sprintf("reading the GPUs' free memory failed: %v", err)
	}
	out := make([]models.GPU, len(snap.Devices))
	for i, dev := range snap.Devices {
		_, why := dev.Usable()
		out[i] = models.GPU{Index: dev.Index, CUDAOrdinal: dev.CUDAOrdinal, Total: dev.MemoryTotal, Free: dev.MemoryFree, Problem: why}
	}
	return out, ""
}

func (g gpuDevices) ProcessMemory(ctx context.Context, index, pid int) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if pid == 0 {
		pid = g.pid
	}
	used, err := g.nv.ProcessMemory(ctx, index, pid)
	if errors.Is(err, gpu.ErrNotFound) {
		return 0, true // no CUDA context on that GPU (yet): nothing held there
	}
	return used, err == nil
}

// gpuSamples is metrics.GPUSource over package gpu.
type gpuSamples struct{ nv *gpu.NVML }

func (g gpuSamples) GPUSamples(ctx context.Context) ([]metrics.GPUSample, error) {
	snap, err := g.nv.Snapshot(ctx)
	if errors.Is(err, gpu.ErrUnavailable) {
		return nil, metrics.ErrNoGPU
	}
	if err != nil {
		return nil, err
	}
	out := make([]metrics.GPUSample, len(snap.Devices))
	for i, dev := range snap.Devices {
		out[i] = metrics.GPUSample{Index: dev.Index, UUID: dev.UUID, Name: dev.Name, PCIBusID: dev.PCIBusID,
			DriverVersion: snap.DriverVersion, CUDAVersion: snap.CUDAVersion, ComputeCapability: dev.ComputeCapability,
			MIG: dev.MIG, Healthy: dev.Problem == "",
			MemoryTotal: dev.MemoryTotal, MemoryUsed: dev.MemoryUsed, MemoryFree: dev.MemoryFree, MemoryReserved: dev.MemoryReserved,
			Utilization: dev.Utilization, MemoryUtilization: dev.MemoryUtilization,
			Temperature: dev.Temperature, Power: dev.Power, PowerLimit: dev.PowerLimit}
	}
	return out, nil
}
