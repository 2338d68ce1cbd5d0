package gpu

import (
	"context"
	"fmt"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Snapshot reads every GPU's telemetry now. The read runs in its own goroutine so that ctx
// bounds the wait even when NVML hangs (a GPU falling off the bus can stall it for seconds);
// while such a read is still inside NVML, further calls fail at once with ErrBusy instead of
// piling up goroutines. A GPU whose read says NVML lost it gets a Problem for good, and is not
// read again. On a CPU-only node it returns ErrUnavailable.
func (n *NVML) Snapshot(ctx context.Context) (Snapshot, error) {
	type result struct {
		snap Snapshot
		err  error
	}
	var out result
	err := n.inNVML(ctx, func() {
		out.snap, out.err = n.read()
	})
	if err != nil {
		return Snapshot{}, err
	}
	return out.snap, out.err
}

// ProcessMemory returns the GPU memory that process pid uses on the GPU with NVML index index,
// in bytes, as NVML's list of compute processes says. It wraps ErrNotFound when the process is
// not listed (no CUDA context there yet, or a PID namespace NVML does not see into).
func (n *NVML) ProcessMemory(ctx context.Context, index, pid int) (uint64, error) {
	var used uint64
	var rerr error
	err := n.inNVML(ctx, func() {
		h, err := n.handle(index)
		if err != nil {
			rerr = err
			return
		}
		procs, ret := h.GetComputeRunningProcesses()
		if ret != nvml.SUCCESS {
			n.noteLost(index, ret)
			rerr = fmt.Errorf("GPU %d: listing processes: %s", index, errorString(ret))
			return
		}
		for _, p := range procs {
			if int(p.Pid) == pid {
				used = p.UsedGpuMemory
				return
			}
		}
		rerr = fmt.Errorf("GPU %d, pid %d: %w", index, pid, ErrNotFound)
	})
	if err != nil {
		return 0, err
	}
	return used, rerr
}

// inNVML runs f, which calls NVML, in a goroutine of its own, one at a time, and waits for it
// or for ctx. A panic in f (a binding bug) becomes nothing worse than a logged error.
func (n *NVML) inNVML(ctx context.Context, f func()) error {
	if !n.available() {
		return ErrUnavailable
	}
	select {
	case n.reading <- struct{}{}:
	default:
		return ErrBusy
	}
	done := make(chan error, 1)
	go func() {
		err := n.guard(f)
		<-n.reading // before answering, so that the caller's next read finds NVML free
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("NVML did not answer in time: %w", context.Cause(ctx))
	}
}

// guard runs f and turns a panic into an error.
func (n *NVML) guard(f func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			n.log.Error("NVML call panicked", "panic", p)
			err = fmt.Errorf("NVML call panicked: %v", p)
		}
	}()
	f()
	return nil
}

// available reports whether there are GPUs to read.
func (n *NVML) available() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.loaded && n.status.Available
}

// handle returns the NVML handle of a GPU that is not lost.
func (n *NVML) handle(index int) (nvml.Device, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if index < 0 || index >= len(n.handles) || n.handles[index] == nil {
		return nil, fmt.Errorf("GPU %d: %w", index, ErrNoDevice)
	}
	if p := n.status.Devices[index].Problem; p != "" {
		return nil, fmt.Errorf("GPU %d: %s", index, p)
	}
	return n.handles[index], nil
}

// noteLost records for good that NVML lost a GPU, if ret says so, and logs it once.
func (n *NVML) noteLost(index int, ret nvml.Return) {
	if !lost(ret) {
		return
	}
	n.mu.Lock()
	d := &n.status.Devices[index]
	first := d.Problem == ""
	if first {
		d.Problem = lostProblem(ret)
	}
	problem, uuid := d.Problem, d.UUID
	n.mu.Unlock()
	if first {
		n.log.Error("GPU lost; models on it are unavailable until the driver reloads or the node reboots",
			"gpu", index, "uuid", uuid, "problem", problem)
	}
}

// read takes one snapshot; it runs inside inNVML.
func (n *NVML) read() (Snapshot, error) {
	st := n.Status()
	snap := st.Snapshot
	for i := range snap.Devices {
		d := &snap.Devices[i]
		if d.Problem != "" {
			continue
		}
		h, err := n.handle(d.Index)
		if err != nil {
			d.Problem = err.Error()
			continue
		}
		n.readDevice(h, d)
	}
	return snap, nil
}

// readDevice fills d's telemetry from h. NOT_SUPPORTED leaves a value unknown (NaN) quietly;
// another failure also lists the read in ReadErrors; a lost GPU gets its Problem.
func (n *NVML) readDevice(h nvml.Device, d *Device) {
	*d = d.withoutTelemetry()
	check := func(what string, ret nvml.Return) bool {
		switch {
		case ret == nvml.SUCCESS:
			return true
		case lost(ret):
			n.noteLost(d.Index, ret)
			d.Problem = lostProblem(ret)
		case ret != nvml.ERROR_NOT_SUPPORTED:
			d.ReadErrors = append(d.ReadErrors, what+": "+errorString(ret))
		}
		return false
	}
	if mem, ret := readMemory(h); check("memory", ret) {
		d.MemoryTotal, d.MemoryUsed, d.MemoryFree, d.MemoryReserved = mem.Total, mem.Used, mem.Free, mem.Reserved
	}
	if d.Problem != "" {
		return // a lost GPU may hang every further call
	}
	if u, ret := h.GetUtilizationRates(); check("utilization", ret) {
		d.Utilization, d.MemoryUtilization = float64(u.Gpu)/100, float64(u.Memory)/100
	}
	if c, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); check("temperature", ret) {
		d.Temperature = float64(c)
	}
	if mw, ret := h.GetPowerUsage(); check("power", ret) {
		d.Power = float64(mw) / 1000
	}
	if mw, ret := h.GetEnforcedPowerLimit(); check("power limit", ret) {
		d.PowerLimit = float64(mw) / 1000
	}
}

// Watch reads the GPUs every interval, each read bounded by timeout, until ctx ends, and calls
// lost once for each GPU that NVML loses (by then its Problem is set in Status and Snapshot).
// lost runs on Watch's goroutine and must not block for long. A read that times out is logged,
// not fatal.
func (n *NVML) Watch(ctx context.Context, interval, timeout time.Duration, lost func(Device)) {
	if !n.available() {
		return
	}
	reported := map[int]bool{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := n.Snapshot(rctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			n.log.Warn("GPU health check failed", "err", err)
		}
		for _, d := range n.Status().Devices {
			if d.Problem != "" && !reported[d.Index] {
				reported[d.Index] = true
				lost(d)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readMemory reads a GPU's memory with NVML's second memory call, which reports what the driver
// reserves apart from what allocations use (its first call counts both as used), and falls back
// to the first call where the driver lacks the second.
func readMemory(h nvml.Device) (nvml.Memory_v2, nvml.Return) {
	mem, ret := h.GetMemoryInfo_v2()
	if ret != nvml.ERROR_FUNCTION_NOT_FOUND && ret != nvml.ERROR_NOT_SUPPORTED && ret != nvml.ERROR_ARGUMENT_VERSION_MISMATCH {
		return mem, ret
	}
	v1, ret := h.GetMemoryInfo()
	return nvml.Memory_v2{Total: v1.Total, Used: v1.Used, Free: v1.Free}, ret
}
