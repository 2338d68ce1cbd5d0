// Package gpu discovers the node's NVIDIA GPUs and reads their telemetry through NVML. It is
// the only package of inferd that imports github.com/NVIDIA/go-nvml, and no NVML type leaves
// it: callers see Device and Snapshot, plain values.
//
// It owns: loading NVML (libnvidia-ml.so.1, opened at run time, so the binary runs where there
// is no driver), a bounded retry while the driver is still loading at boot, the inventory
// (index, UUID, name, PCI bus id, memory, MIG mode, compute capability, driver and CUDA
// versions, and each GPU's CUDA ordinal under CUDA_DEVICE_ORDER=PCI_BUS_ID and
// CUDA_VISIBLE_DEVICES), telemetry read on demand with a deadline (memory, utilization,
// temperature, power), a process's memory on a GPU, and marking a GPU that NVML loses (fallen
// off the bus, an XID that needs a reset) unhealthy for good.
//
// No driver, no library or no GPU is a normal state: the node is CPU-only, Init says so once in
// the log and Status says so in /health. Nothing here panics or exits on an NVML error.
//
// It must not decide placement, load models, or know about ONNX Runtime; it keeps no
// package-level state (go-nvml keeps its own, behind one handle per NVML).
//
// Lock order: NVML.mu is never held during an NVML call; reads are serialized by NVML.reading.
package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Device is one GPU: its inventory, and its telemetry at the moment of a Snapshot (the zero
// telemetry in Status). Sizes are bytes; NaN means a value the GPU does not report.
type Device struct {
	// Index is NVML's index (nvidia-smi's, PCI bus order); models name GPUs by it.
	Index int `json:"index"`
	// CUDAOrdinal is the device number CUDA (and ORT's device_id) gives this GPU, or -1 when
	// CUDA_VISIBLE_DEVICES hides it from this process.
	CUDAOrdinal       int    `json:"cuda_ordinal"`
	UUID              string `json:"uuid"`
	Name              string `json:"name"`
	PCIBusID          string `json:"pci_bus_id"`
	ComputeCapability string `json:"compute_capability,omitempty"`
	// MIG is true when MIG mode is on: CUDA then sees MIG instances, not the GPU.
	MIG         bool   `json:"mig"`
	MemoryTotal uint64 `json:"memory_total_bytes"`

	// MemoryUsed is what allocations hold and MemoryFree what is left to allocate. The driver
	// and firmware also set MemoryReserved aside, which nothing can allocate; nvidia-smi shows
	// it apart from "used". Where NVML has only its first memory call (drivers before 510),
	// MemoryReserved is 0 and MemoryUsed includes it (total minus free).
	MemoryUsed     uint64 `json:"-"`
	MemoryFree     uint64 `json:"-"`
	MemoryReserved uint64 `json:"-"`
	// Utilization is the share of the last sample period in which a kernel ran, 0 to 1.
	Utilization float64 `json:"-"`
	// MemoryUtilization is the share of it in which device memory was read or written.
	MemoryUtilization float64 `json:"-"`
	Temperature       float64 `json:"-"` // Celsius
	Power             float64 `json:"-"` // watts drawn
	PowerLimit        float64 `json:"-"` // watts, the enforced limit

	// Problem says why the GPU must not be used ("" while it is healthy). NVML losing a GPU
	// sets it for good: only a driver reload or a reboot brings such a GPU back.
	Problem string `json:"problem,omitempty"`
	// ReadErrors lists the telemetry reads of the last Snapshot that failed for another reason
	// than the GPU not supporting them.
	ReadErrors []string `json:"-"`
}

// Usable reports whether models may be placed on the GPU, and if not, why.
func (d Device) Usable() (bool, string) {
	switch {
	case d.Problem != "":
		return false, d.Problem
	case d.MIG:
		return false, "MIG mode is enabled; inferd does not place models on MIG instances"
	case d.CUDAOrdinal < 0:
		return false, "hidden from CUDA by CUDA_VISIBLE_DEVICES"
	}
	return true, ""
}

// Snapshot is the node's GPUs at one moment.
type Snapshot struct {
	DriverVersion string   `json:"driver_version"`
	CUDAVersion   string   `json:"cuda_version"` // the newest CUDA the driver supports, "12.4"
	Devices       []Device `json:"devices"`
}

// Status is what Init settled on.
type Status struct {
	// Available is true when NVML answered and found at least one GPU.
	Available bool `json:"available"`
	// Reason says why the node is CPU-only when it is not Available.
	Reason string `json:"reason,omitempty"`
	Snapshot
}

// Options configure New.
type Options struct {
	// InitRetry is how long Init keeps retrying an NVML that is installed but not ready (the
	// driver still loading at boot) before the node settles on CPU-only; 0 tries once.
	InitRetry time.Duration
	// RetryInterval is the pause between attempts (default 1s).
	RetryInterval time.Duration
	// Library is the path of libnvidia-ml; empty means libnvidia-ml.so.1 from the dynamic
	// loader's search path.
	Library string
	// Getenv reads CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER; nil means os.Getenv.
	Getenv func(string) string
}

// Errors of this package; match them with errors.Is.
var (
	// ErrUnavailable: NVML is not loaded (CPU-only node, or Init not called).
	ErrUnavailable = errors.New("NVML unavailable")
	// ErrBusy: an earlier read is still stuck in NVML; no second one is started beside it.
	ErrBusy = errors.New("an NVML read is still in progress")
	// ErrNoDevice: no GPU has that index.
	ErrNoDevice = errors.New("no such GPU")
	// ErrNotFound: NVML lists no such process on the GPU.
	ErrNotFound = errors.New("process not found on the GPU")
)

// NVML is the node's GPUs as NVML sees them. Create it with New, call Init once, then use it
// from any goroutine; Close it at exit.
type NVML struct {
	log     *slog.Logger
	lib     nvml.Interface
	opts    Options
	reading chan struct{} // holds a token while a goroutine is inside NVML reading telemetry

	initMu      sync.Mutex  // serializes Init; never held by readers of Status
	initialized atomic.Bool // Init finished (whatever it found)

	mu      sync.Mutex
	loaded  bool // NVML's Init succeeded: Shutdown is owed
	status  Status
	handles []nvml.Device // by device index; nil for a device NVML would not hand out
}

// New prepares NVML access from opts without loading anything.
func New(opts Options, log *slog.Logger) *NVML {
	var libOpts []nvml.LibraryOption
	if opts.Library != "" {
		libOpts = append(libOpts, nvml.WithLibraryPath(opts.Library))
	}
	return newNVML(nvml.New(libOpts...), opts, log)
}

// newNVML is New over any nvml.Interface (go-nvml's mocks in tests).
func newNVML(lib nvml.Interface, opts Options, log *slog.Logger) *NVML {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	return &NVML{log: log, lib: lib, opts: opts, reading: make(chan struct{}, 1),
		status: Status{Reason: "GPU discovery has not run yet"}}
}

// transient are NVML's answers to Init that a driver still coming up gives; anything else
// (no library, no permission, a library that does not match the kernel module) will not change
// by waiting.
var transient = []nvml.Return{nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_UNINITIALIZED,
	nvml.ERROR_TIMEOUT, nvml.ERROR_IRQ_ISSUE, nvml.ERROR_UNKNOWN}

// Init loads NVML and takes the inventory, retrying for Options.InitRetry while NVML answers
// as a driver that is still loading does (Status says so meanwhile). It logs once what it
// found: the GPUs, or why the node is CPU-only. It returns the resulting Status; only ctx
// ending stops it early (the node is then CPU-only). A second call returns the first's Status.
func (n *NVML) Init(ctx context.Context) Status {
	n.initMu.Lock()
	defer n.initMu.Unlock()
	if n.initialized.Load() {
		return n.Status()
	}
	defer n.initialized.Store(true)
	deadline := time.Now().Add(n.opts.InitRetry)
	var st Status
	var handles []nvml.Device
	for attempt := 1; ; attempt++ {
		ret := n.initLib()
		if ret == nvml.SUCCESS {
			n.mu.Lock()
			n.loaded = true
			n.mu.Unlock()
			st, handles = n.inventory()
			break
		}
		reason := initFailure(ret, n.opts.Library)
		wait := time.Until(deadline)
		if !slices.Contains(transient, ret) || wait <= 0 || ctx.Err() != nil {
			if attempt > 1 {
				reason = fmt.Sprintf("%s (gave up after %d attempts in %s)", reason, attempt, n.opts.InitRetry)
			}
			st = Status{Reason: reason}
			break
		}
		level := slog.LevelInfo
		if attempt > 1 {
			level = slog.LevelDebug // once at info is enough; the outcome is logged either way
		}
		n.log.Log(ctx, level, "NVML not ready yet; retrying", "reason", reason, "attempt", attempt, "gives_up_in", wait.Round(time.Second))
		n.setStatus(Status{Reason: "waiting for NVML: " + reason}, nil)
		t := time.NewTimer(min(n.opts.RetryInterval, wait))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			st = Status{Reason: fmt.Sprintf("%s (stopped waiting: %v)", reason, context.Cause(ctx))}
		}
		if ctx.Err() != nil {
			break
		}
	}
	n.setStatus(st, handles)
	if st.Available {
		for _, d := range st.Devices {
			n.log.Info("GPU found", "gpu", d.Index, "name", d.Name, "uuid", d.UUID, "pci_bus_id", d.PCIBusID,
				"memory_total", d.MemoryTotal, "mig", d.MIG, "cuda_ordinal", d.CUDAOrdinal, "problem", d.Problem)
		}
		n.log.Info("GPUs ready", "count", len(st.Devices), "driver_version", st.DriverVersion, "cuda_version", st.CUDAVersion)
	} else {
		n.log.Info("no usable NVIDIA GPU; this node runs models on the CPU", "reason", st.Reason)
	}
	return st
}

func (n *NVML) setStatus(st Status, handles []nvml.Device) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.status, n.handles = st, handles
}

// initLib calls NVML's Init, turning a panic in the binding into an error code.
func (n *NVML) initLib() (ret nvml.Return) {
	defer func() {
		if p := recover(); p != nil {
			n.log.Error("NVML Init panicked", "panic", p)
			ret = nvml.ERROR_UNKNOWN
		}
	}()
	return n.lib.Init()
}

func initFailure(ret nvml.Return, library string) string {
	lib := library
	if lib == "" {
		lib = "libnvidia-ml.so.1"
	}
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return lib + " not found: no NVIDIA driver is installed"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return "the NVIDIA kernel driver is not loaded"
	case nvml.ERROR_NO_PERMISSION:
		return "no permission to use NVML (device nodes /dev/nvidia*)"
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "the NVML library does not match the loaded kernel driver (reboot after a driver update)"
	}
	return "NVML init failed: " + errorString(ret)
}

// inventory reads the system and every device after a successful Init.
func (n *NVML) inventory() (Status, []nvml.Device) {
	st := Status{}
	if v, ret := n.lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		st.DriverVersion = v
	}
	if v, ret := n.lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		st.CUDAVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return Status{Reason: "NVML could not count the GPUs: " + errorString(ret), Snapshot: st.Snapshot}, nil
	}
	if count == 0 {
		return Status{Reason: "NVML found no GPU", Snapshot: st.Snapshot}, nil
	}
	handles := make([]nvml.Device, count)
	for i := range count {
		d := Device{Index: i, CUDAOrdinal: -1}
		h, ret := n.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			d.Problem = "NVML could not open it: " + errorString(ret)
			st.Devices = append(st.Devices, d.withoutTelemetry())
			continue
		}
		handles[i] = h
		if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
			d.Problem = "NVML could not read its UUID: " + errorString(ret)
		}
		d.Name, _ = h.GetName()
		if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
			d.PCIBusID = busID(pci)
		}
		if major, minor, ret := h.GetCudaComputeCapability(); ret == nvml.SUCCESS {
			d.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
		}
		if cur, _, ret := h.GetMigMode(); ret == nvml.SUCCESS {
			d.MIG = cur == nvml.DEVICE_MIG_ENABLE
		}
		mem, ret := h.GetMemoryInfo()
		switch {
		case ret == nvml.SUCCESS:
			d.MemoryTotal = mem.Total
		case lost(ret):
			d.Problem = lostProblem(ret)
		}
		st.Devices = append(st.Devices, d.withoutTelemetry())
	}
	assignOrdinals(st.Devices, n.opts.Getenv("CUDA_VISIBLE_DEVICES"))
	st.Available = true
	return st, handles
}

// withoutTelemetry marks every telemetry value unknown.
func (d Device) withoutTelemetry() Device {
	d.MemoryUsed, d.MemoryFree, d.MemoryReserved = 0, 0, 0
	d.Utilization, d.MemoryUtilization = math.NaN(), math.NaN()
	d.Temperature, d.Power, d.PowerLimit = math.NaN(), math.NaN(), math.NaN()
	d.ReadErrors = nil
	return d
}

// busID is the PCI bus id NVML reports ("00000000:17:00.0"), or one built from its parts when
// the string is empty.
func busID(p nvml.PciInfo) string {
	b := make([]byte, 0, len(p.BusId))
	for _, c := range p.BusId {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	if len(b) > 0 {
		return string(b)
	}
	return fmt.Sprintf("%08x:%02x:%02x.0", p.Domain, p.Bus, p.Device)
}

// Status is what Init found, with each GPU's health as of the last read. It does not call
// NVML.
func (n *NVML) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.status
	st.Devices = slices.Clone(st.Devices)
	return st
}

// Close shuts NVML down. It is safe to call more than once, and on a CPU-only node.
func (n *NVML) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.loaded {
		return nil
	}
	n.loaded = false
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("NVML shutdown: %s", errorString(ret))
	}
	return nil
}

// lost reports whether ret says the GPU is gone until a reset or reboot.
func lost(ret nvml.Return) bool {
	return ret == nvml.ERROR_GPU_IS_LOST || ret == nvml.ERROR_RESET_REQUIRED
}

func lostProblem(ret nvml.Return) string {
	if ret == nvml.ERROR_RESET_REQUIRED {
		return "NVML says the GPU needs a reset (an XID error): " + errorString(ret)
	}
	return "NVML lost the GPU (fallen off the bus or an XID error): " + errorString(ret)
}

// errorString names an NVML return code without asking a library that may not be loaded.
func errorString(ret nvml.Return) string { return ret.Error() }
