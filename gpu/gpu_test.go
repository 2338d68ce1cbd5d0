package gpu

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// withTelemetry gives every device of s what go-nvml's mock server leaves out: a PCI bus id
// string, memory in use, and the telemetry reads, with values that differ per device (index i:
// utilization 10·i %, (30+i) °C, (100+i) W of a 700 W limit, i GiB used and 512 MiB reserved).
func withTelemetry(s *server.Server) *server.Server {
	const reserved = 512 * mib
	for _, d := range s.Devices {
		dev := d.(*server.Device)
		i := dev.Index
		used := uint64(i) * gib
		// NVML's first memory call counts what the driver reserves as used; the second does not.
		dev.MemoryInfo = nvml.Memory{Total: dev.MemoryInfo.Total, Used: used + reserved, Free: dev.MemoryInfo.Total - used - reserved}
		dev.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
			m, ret := dev.GetMemoryInfo()
			if ret != nvml.SUCCESS {
				return nvml.Memory_v2{}, ret
			}
			return nvml.Memory_v2{Total: m.Total, Reserved: reserved, Used: m.Used - reserved, Free: m.Free}, nvml.SUCCESS
		}
		dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			var p nvml.PciInfo
			for j, c := range "0000000" + dev.PciBusID {
				p.BusId[j] = int8(c)
			}
			return p, nvml.SUCCESS
		}
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i), Memory: uint32(5 * i)}, nvml.SUCCESS
		}
		dev.GetTemperatureFunc = func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return uint32(30 + i), nvml.SUCCESS
		}
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return uint32(100+i) * 1000, nvml.SUCCESS }
		dev.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700_000, nvml.SUCCESS }
	}
	return s
}

func device(s *server.Server, i int) *server.Device { return s.Devices[i].(*server.Device) }

func testLogger(t *testing.T) *slog.Logger { return slog.New(slog.NewTextHandler(t.Output(), nil)) }

func initMock(t *testing.T, lib nvml.Interface, opts Options) *NVML {
	t.Helper()
	n := newNVML(lib, opts, testLogger(t))
	n.Init(t.Context())
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func TestInventory(t *testing.T) {
	tests := []struct {
		name    string
		lib     *server.Server
		count   int
		gpuName string
		total   uint64
		cc      string
	}{
		{"DGX H100", dgxh100.New(), 8, "NVIDIA H100 80GB HBM3", 80 * gib, "9.0"},
		{"DGX A100", dgxa100.New(), 8, "Mock NVIDIA A100-SXM4-40GB", 40 * gib, "8.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := initMock(t, withTelemetry(tc.lib), Options{Getenv: func(string) string { return "" }})
			st := n.Status()
			if !st.Available || st.Reason != "" {
				t.Fatalf("Status = %+v, want available", st)
			}
			if st.DriverVersion != "550.54.15" || st.CUDAVersion != "12.4" {
				t.Errorf("driver %q, CUDA %q; want 550.54.15, 12.4", st.DriverVersion, st.CUDAVersion)
			}
			if len(st.Devices) != tc.count {
				t.Fatalf("%d devices, want %d", len(st.Devices), tc.count)
			}
			for i, d := range st.Devices {
				mock := device(tc.lib, i)
				want := Device{Index: i, CUDAOrdinal: i, UUID: mock.UUID, Name: tc.gpuName, PCIBusID: "0000000" + mock.PciBusID,
					ComputeCapability: tc.cc, MemoryTotal: tc.total}
				got := d
				got.Utilization, got.MemoryUtilization, got.Temperature, got.Power, got.PowerLimit = 0, 0, 0, 0, 0
				if !equalDevice(got, want) {
					t.Errorf("device %d = %+v, want %+v", i, got, want)
				}
				if !math.IsNaN(d.Utilization) || !math.IsNaN(d.Power) {
					t.Errorf("device %d: inventory carries telemetry %v, %v; want NaN until a Snapshot", i, d.Utilization, d.Power)
				}
				if ok, why := d.Usable(); !ok {
					t.Errorf("device %d not usable: %s", i, why)
				}
			}
		})
	}
}

func equalDevice(a, b Device) bool {
	return a.Index == b.Index && a.CUDAOrdinal == b.CUDAOrdinal && a.UUID == b.UUID && a.Name == b.Name &&
		a.PCIBusID == b.PCIBusID && a.ComputeCapability == b.ComputeCapability && a.MIG == b.MIG &&
		a.MemoryTotal == b.MemoryTotal && a.Problem == b.Problem
}

func TestMIGModeMakesAGPUUnusable(t *testing.T) {
	lib := withTelemetry(dgxa100.New())
	device(lib, 2).SetMigMode(nvml.DEVICE_MIG_ENABLE)
	n := initMock(t, lib, Options{})
	for _, d := range n.Status().Devices {
		ok, why := d.Usable()
		if d.Index == 2 {
			if !d.MIG || ok || !strings.Contains(why, "MIG mode is enabled") {
				t.Errorf("GPU 2: MIG %v, usable %v (%s); want MIG, unusable", d.MIG, ok, why)
			}
		} else if d.MIG || !ok {
			t.Errorf("GPU %d: MIG %v, usable %v", d.Index, d.MIG, ok)
		}
	}
}

func TestSnapshotTelemetry(t *testing.T) {
	lib := withTelemetry(dgxh100.New())
	device(lib, 1).GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) { return nvml.Memory_v2{}, nvml.ERROR_FUNCTION_NOT_FOUND }
	n := initMock(t, lib, Options{})
	snap, err := n.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range snap.Devices {
		want := struct{ util, memUtil, temp, power, limit float64 }{float64(i) / 10, float64(i) / 20, float64(30 + i), float64(100 + i), 700}
		got := struct{ util, memUtil, temp, power, limit float64 }{d.Utilization, d.MemoryUtilization, d.Temperature, d.Power, d.PowerLimit}
		if got != want {
			t.Errorf("GPU %d telemetry = %+v, want %+v", i, got, want)
		}
		used, reserved := uint64(i)*gib, uint64(512*mib)
		if i == 1 { // a driver with only the first memory call: used includes what it reserves
			used, reserved = used+reserved, 0
		}
		if d.MemoryTotal != 80*gib || d.MemoryUsed != used || d.MemoryFree != 80*gib-uint64(i)*gib-512*mib || d.MemoryReserved != reserved {
			t.Errorf("GPU %d memory total/used/free/reserved = %d/%d/%d/%d", i, d.MemoryTotal, d.MemoryUsed, d.MemoryFree, d.MemoryReserved)
		}
		if d.Problem != "" || d.ReadErrors != nil {
			t.Errorf("GPU %d: problem %q, read errors %v", i, d.Problem, d.ReadErrors)
		}
	}
}

// TestUnsupportedAndFailedReads: a read the GPU does not support is unknown (NaN) and quiet;
// one that fails otherwise is unknown too and listed; neither makes the GPU unhealthy.
func TestUnsupportedAndFailedReads(t *testing.T) {
	lib := withTelemetry(dgxh100.New())
	device(lib, 0).GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	device(lib, 1).GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	n := initMock(t, lib, Options{})
	snap, err := n.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	d0, d1 := snap.Devices[0], snap.Devices[1]
	if !math.IsNaN(d0.Power) || d0.ReadErrors != nil || d0.Problem != "" || d0.Temperature != 30 {
		t.Errorf("GPU 0: power %v, read errors %v, problem %q, temperature %v", d0.Power, d0.ReadErrors, d0.Problem, d0.Temperature)
	}
	if !math.IsNaN(d1.Temperature) || !slices.Equal(d1.ReadErrors, []string{"temperature: ERROR_UNKNOWN"}) || d1.Problem != "" || d1.Power != 101 {
		t.Errorf("GPU 1: temperature %v, read errors %v, problem %q, power %v", d1.Temperature, d1.ReadErrors, d1.Problem, d1.Power)
	}
}

// TestGPULostAtRunTime: NVML losing a GPU marks it, and only it, unhealthy for good; it is not
// read again (calls into a lost GPU can hang), Watch reports it once, and nothing panics.
func TestGPULostAtRunTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lib := withTelemetry(dgxh100.New())
		n := initMock(t, lib, Options{})
		var reads atomic.Int32
		var isLost atomic.Bool
		device(lib, 3).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			reads.Add(1)
			if isLost.Load() {
				return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST
			}
			return nvml.Memory{Total: 80 * gib, Free: 80 * gib}, nvml.SUCCESS
		}
		var reported []Device
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			defer close(done)
			n.Watch(ctx, 5*time.Second, time.Second, func(d Device) { reported = append(reported, d) })
		}()
		synctest.Wait()
		if len(reported) != 0 {
			t.Fatalf("healthy GPUs reported lost: %+v", reported)
		}
		isLost.Store(true)
		time.Sleep(5 * time.Second) // fake time: one Watch period
		synctest.Wait()
		if len(reported) != 1 || reported[0].Index != 3 || !strings.Contains(reported[0].Problem, "NVML lost the GPU") {
			t.Fatalf("reported %+v, want GPU 3 lost", reported)
		}
		readsWhenLost := reads.Load()
		time.Sleep(30 * time.Second) // six more periods
		synctest.Wait()
		cancel()
		<-done
		if len(reported) != 1 {
			t.Errorf("GPU 3 reported %d times, want once", len(reported))
		}
		if reads.Load() != readsWhenLost {
			t.Errorf("a lost GPU was read %d more times", reads.Load()-readsWhenLost)
		}
		snap, err := n.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range snap.Devices {
			if lost := d.Index == 3; lost != (d.Problem != "") {
				t.Errorf("GPU %d problem %q", d.Index, d.Problem)
			}
		}
		if p := n.Status().Devices[3].Problem; p == "" {
			t.Error("Status does not show GPU 3 lost")
		}
		if _, err := n.ProcessMemory(t.Context(), 3, 1); err == nil || !strings.Contains(err.Error(), "NVML lost the GPU") {
			t.Errorf("ProcessMemory on a lost GPU = %v", err)
		}
	})
}

// TestLostAtInventory: a GPU already lost when NVML starts is listed with its problem.
func TestLostAtInventory(t *testing.T) {
	lib := withTelemetry(dgxh100.New())
	device(lib, 5).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_RESET_REQUIRED }
	lib.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if i == 6 {
			return nil, nvml.ERROR_UNKNOWN
		}
		return lib.Devices[i], nvml.SUCCESS
	}
	n := initMock(t, lib, Options{})
	st := n.Status()
	if !st.Available || len(st.Devices) != 8 {
		t.Fatalf("Status = %+v", st)
	}
	if p := st.Devices[5].Problem; !strings.Contains(p, "needs a reset") {
		t.Errorf("GPU 5 problem %q", p)
	}
	if p := st.Devices[6].Problem; !strings.Contains(p, "could not open it") {
		t.Errorf("GPU 6 problem %q", p)
	}
	snap, err := n.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Devices[7].Temperature != 37 || snap.Devices[5].Problem == "" {
		t.Errorf("snapshot: GPU 7 temperature %v, GPU 5 problem %q", snap.Devices[7].Temperature, snap.Devices[5].Problem)
	}
}

func TestInitFailures(t *testing.T) {
	tests := []struct {
		name     string
		ret      []nvml.Return // what successive Init calls return; the last repeats
		retry    time.Duration
		count    int
		avail    bool
		reason   string
		attempts int
		elapsed  time.Duration
	}{
		{name: "no library settles at once", ret: []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND}, retry: time.Minute,
			reason: "libnvidia-ml.so.1 not found: no NVIDIA driver is installed", attempts: 1},
		{name: "no permission settles at once", ret: []nvml.Return{nvml.ERROR_NO_PERMISSION}, retry: time.Minute,
			reason: "no permission", attempts: 1},
		{name: "driver loading at boot is waited for", ret: []nvml.Return{nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_DRIVER_NOT_LOADED, nvml.SUCCESS},
			retry: 10 * time.Second, count: 8, avail: true, attempts: 4, elapsed: 3 * time.Second},
		{name: "a driver that never loads is given up on", ret: []nvml.Return{nvml.ERROR_DRIVER_NOT_LOADED}, retry: 10 * time.Second,
			reason: "the NVIDIA kernel driver is not loaded (gave up after 11 attempts in 10s)", attempts: 11, elapsed: 10 * time.Second},
		{name: "no retry window tries once", ret: []nvml.Return{nvml.ERROR_DRIVER_NOT_LOADED}, reason: "the NVIDIA kernel driver is not loaded", attempts: 1},
		{name: "no GPU", ret: []nvml.Return{nvml.SUCCESS}, retry: time.Minute, count: 0, reason: "NVML found no GPU", attempts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lib := withTelemetry(dgxh100.New())
				lib.Devices = lib.Devices[:tc.count]
				attempts := 0
				lib.InitFunc = func() nvml.Return {
					attempts++
					return tc.ret[min(attempts, len(tc.ret))-1]
				}
				n := newNVML(lib, Options{InitRetry: tc.retry}, testLogger(t))
				defer n.Close()
				start := time.Now()
				st := n.Init(t.Context())
				if st.Available != tc.avail || !strings.Contains(st.Reason, tc.reason) || (tc.reason == "") != (st.Reason == "") {
					t.Errorf("Init = available %v, reason %q; want %v, %q", st.Available, st.Reason, tc.avail, tc.reason)
				}
				if attempts != tc.attempts || time.Since(start) != tc.elapsed {
					t.Errorf("%d attempts in %s, want %d in %s", attempts, time.Since(start), tc.attempts, tc.elapsed)
				}
				if st.Available && len(st.Devices) != tc.count {
					t.Errorf("%d devices, want %d", len(st.Devices), tc.count)
				}
				if _, err := n.Snapshot(t.Context()); tc.avail != (err == nil) {
					t.Errorf("Snapshot error %v with available %v", err, tc.avail)
				}
			})
		})
	}
}

// TestStatusWhileWaiting: /health reads Status while Init waits for the driver, and gets an
// answer at once, saying what it waits for; cancelling the wait settles on CPU-only.
func TestStatusWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lib := dgxh100.New()
		lib.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
		n := newNVML(lib, Options{InitRetry: time.Hour}, testLogger(t))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan Status)
		go func() { done <- n.Init(ctx) }()
		synctest.Wait()
		if st := n.Status(); st.Available || !strings.HasPrefix(st.Reason, "waiting for NVML: the NVIDIA kernel driver is not loaded") {
			t.Errorf("Status during the wait = %+v", st)
		}
		cancel()
		st := <-done
		if st.Available || !strings.Contains(st.Reason, "stopped waiting") {
			t.Errorf("Init after cancel = %+v", st)
		}
		if again := n.Init(t.Context()); again.Reason != st.Reason {
			t.Errorf("second Init = %+v, want the first's result", again)
		}
	})
}

// TestCPUOnlyNode loads the real libnvidia-ml the way the daemon does. This machine (and CI)
// has no NVIDIA driver: that must be a quiet CPU-only node, not an error.
func TestCPUOnlyNode(t *testing.T) {
	for _, lib := range []string{"/nonexistent/libnvidia-ml.so.1", ""} {
		var logs bytes.Buffer
		n := New(Options{Library: lib, InitRetry: time.Minute}, slog.New(slog.NewTextHandler(&logs, nil)))
		start := time.Now()
		st := n.Init(t.Context())
		if lib == "" && st.Available {
			t.Logf("this machine has an NVIDIA GPU (%d); skipping the CPU-only check of the default library", len(st.Devices))
			n.Close()
			continue
		}
		if st.Available || !strings.Contains(st.Reason, "not found: no NVIDIA driver is installed") {
			t.Errorf("Init(%q) = %+v, want CPU-only for want of a library", lib, st)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("a missing library was retried for %s", time.Since(start))
		}
		if _, err := n.Snapshot(t.Context()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Snapshot = %v, want ErrUnavailable", err)
		}
		if _, err := n.ProcessMemory(t.Context(), 0, 1); !errors.Is(err, ErrUnavailable) {
			t.Errorf("ProcessMemory = %v, want ErrUnavailable", err)
		}
		n.Watch(t.Context(), time.Second, time.Second, func(Device) { t.Error("a CPU-only node reported a lost GPU") }) // returns at once
		if err := n.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		if !strings.Contains(logs.String(), "this node runs models on the CPU") {
			t.Errorf("log does not say the node is CPU-only:\n%s", logs.String())
		}
	}
}

// TestSnapshotDeadline: a GPU that hangs NVML costs a Snapshot its deadline, not the caller's
// goroutine; a second read is refused while the first is stuck, and reads work again after.
func TestSnapshotDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lib := withTelemetry(dgxh100.New())
		n := initMock(t, lib, Options{})
		release := make(chan struct{})
		device(lib, 1).GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
			<-release
			return 50, nvml.SUCCESS
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := n.Snapshot(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Snapshot of a hung GPU = %v, want a deadline error", err)
		}
		if time.Since(start) != 2*time.Second {
			t.Errorf("Snapshot returned after %s, want its 2s deadline", time.Since(start))
		}
		if _, err := n.Snapshot(t.Context()); !errors.Is(err, ErrBusy) {
			t.Errorf("second Snapshot = %v, want ErrBusy", err)
		}
		close(release)
		synctest.Wait()
		snap, err := n.Snapshot(t.Context())
		if err != nil || snap.Devices[1].Temperature != 50 {
			t.Errorf("Snapshot after the hang = %v, temperature %v", err, snap.Devices[1].Temperature)
		}
	})
}

// TestPanickingBindingIsAnError: a read the binding panics in (here a mock without that
// method) is an error, not a crash.
func TestPanickingBindingIsAnError(t *testing.T) {
	lib := dgxh100.New() // no telemetry methods set: the mock panics when they are called
	n := initMock(t, lib, Options{})
	if _, err := n.Snapshot(t.Context()); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("Snapshot = %v, want a panic turned into an error", err)
	}
	withTelemetry(lib)
	if _, err := n.Snapshot(t.Context()); err != nil {
		t.Errorf("Snapshot after the panic = %v", err)
	}
}

func TestProcessMemory(t *testing.T) {
	lib := withTelemetry(dgxh100.New())
	device(lib, 2).GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 3 * gib}, {Pid: 4242, UsedGpuMemory: 5 * gib}}, nvml.SUCCESS
	}
	n := initMock(t, lib, Options{})
	if got, err := n.ProcessMemory(t.Context(), 2, 4242); err != nil || got != 5*gib {
		t.Errorf("ProcessMemory(2, 4242) = %d, %v; want 5 GiB", got, err)
	}
	if _, err := n.ProcessMemory(t.Context(), 2, 7); !errors.Is(err, ErrNotFound) {
		t.Errorf("ProcessMemory of an absent pid = %v, want ErrNotFound", err)
	}
	if _, err := n.ProcessMemory(t.Context(), 9, 7); !errors.Is(err, ErrNoDevice) {
		t.Errorf("ProcessMemory of GPU 9 = %v, want ErrNoDevice", err)
	}
}

func TestCUDAVisibleDevices(t *testing.T) {
	lib := withTelemetry(dgxh100.New())
	lib.Devices = lib.Devices[:4]
	uuid := func(i int) string { return device(lib, i).UUID }
	tests := []struct {
		visible string
		want    []int // CUDA ordinal by NVML index
	}{
		{"", []int{0, 1, 2, 3}},
		{"2,0", []int{1, -1, 0, -1}},
		{"3", []int{-1, -1, -1, 0}},
		{uuid(1) + "," + uuid(3)[:12], []int{-1, 0, -1, 1}},
		{"1,7,2", []int{-1, 0, -1, -1}},       // an index that does not exist ends the list
		{"1,1,2", []int{-1, 0, -1, -1}},       // so does a repeat
		{"0,MIG-abc,1", []int{0, -1, -1, -1}}, // and a MIG instance
		{"GPU-", []int{-1, -1, -1, -1}},
		{" 1 , 2 ", []int{-1, 0, 1, -1}},
	}
	for _, tc := range tests {
		n := initMock(t, lib, Options{Getenv: func(k string) string {
			if k == "CUDA_VISIBLE_DEVICES" {
				return tc.visible
			}
			return ""
		}})
		var got []int
		for _, d := range n.Status().Devices {
			got = append(got, d.CUDAOrdinal)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("CUDA_VISIBLE_DEVICES=%q: ordinals %v, want %v", tc.visible, got, tc.want)
		}
	}
}
