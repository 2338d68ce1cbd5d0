package models_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

const gib = 1 << 30

// fakeDevices is a node's GPUs for the repository: fixed totals and NVML free memory, and a
// per-GPU count of this process's usage that the cudaRuntime below raises by perSession with
// each CUDA session it opens (as a real arena would once warmed up).
type fakeDevices struct {
	mu         sync.Mutex
	gpus       []models.GPU
	why        string
	used       map[int]uint64
	perSession uint64
	noProcess  bool                   // NVML cannot tell per-process usage (e.g. another PID namespace)
	byPID      map[int]map[int]uint64 // other processes' usage (model workers), by pid and GPU
}

func (d *fakeDevices) GPUs(context.Context) ([]models.GPU, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.gpus), d.why
}

func (d *fakeDevices) ProcessMemory(_ context.Context, index, pid int) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.noProcess {
		return 0, false
	}
	if pid != 0 {
		return d.byPID[pid][index], true
	}
	u, ok := d.used[index]
	return u, ok
}

func (d *fakeDevices) setProblem(index int, p string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.gpus {
		if d.gpus[i].Index == index {
			d.gpus[i].Problem = p
		}
	}
}

// cudaRuntime is the fake engine with CUDA behaviour: CUDA opens fail with
// engine.ErrProviderUnavailable while broken is set (a library without the CUDA provider), and
// otherwise count their memory on the GPU whose CUDA ordinal they name.
type cudaRuntime struct {
	*enginetest.Runtime
	dev    *fakeDevices
	broken bool
}

func (r *cudaRuntime) Open(ctx context.Context, path string, opts engine.Options) (engine.Session, error) {
	if opts.Provider == engine.ProviderCUDA {
		if r.broken {
			return nil, fmt.Errorf("%w: CUDA device %d: libcublasLt.so.13: cannot open shared object file", engine.ErrProviderUnavailable, opts.DeviceID)
		}
		r.dev.mu.Lock()
		for _, g := range r.dev.gpus {
			if g.CUDAOrdinal == opts.DeviceID {
				r.dev.used[g.Index] += r.dev.perSession
			}
		}
		r.dev.mu.Unlock()
	}
	return r.Runtime.Open(ctx, path, opts)
}

type gpuFixture struct {
	*fixtureRepo
	dev  *fakeDevices
	cuda *cudaRuntime
}

// newGPUFixture is a repository on a node with GPUs: GPU 0 (16 GiB, 10 free) and GPU 1
// (80 GiB, 70 free), whose CUDA ordinals are swapped (CUDA_VISIBLE_DEVICES=1,0) so that a test
// can tell the two numberings apart.
func newGPUFixture(t *testing.T, gpus ...models.GPU) *gpuFixture {
	t.Helper()
	if gpus == nil {
		gpus = []models.GPU{
			{Index: 0, CUDAOrdinal: 1, Total: 16 * gib, Free: 10 * gib},
			{Index: 1, CUDAOrdinal: 0, Total: 80 * gib, Free: 70 * gib},
		}
	}
	dev := &fakeDevices{gpus: gpus, used: map[int]uint64{}, perSession: gib}
	f := &fixtureRepo{dir: t.TempDir(), rt: enginetest.New(), drain: &recorder{}, runs: map[string]int{}}
	cuda := &cudaRuntime{Runtime: f.rt, dev: dev}
	f.open(cuda, models.Settings{Defaults: models.Defaults{Cores: 2}, GPUMemoryFraction: 1})
	f.repo.SetDevices(dev)
	t.Cleanup(func() { f.repo.Close(context.Background()) })
	return &gpuFixture{fixtureRepo: f, dev: dev, cuda: cuda}
}

func (f *gpuFixture) model(t *testing.T, name, toml string) {
	t.Helper()
	f.add(t, name, "1")
	testutil.WriteFile(t, f.dir, filepath.Join(name, "model.toml"), []byte(toml))
}

func (f *gpuFixture) version(t *testing.T, name string) *models.Version {
	t.Helper()
	v, err := f.repo.Resolve(name, "1")
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// opened is the options of the successful opens of path's sessions since the mark.
func (f *gpuFixture) opened(from int) []engine.Options { return f.rt.OpenedWith()[from:] }

func TestGPUPlacement(t *testing.T) {
	f := newGPUFixture(t)
	f.model(t, "big", "max_batch_size = 8\n[instance]\ndevice = \"gpu\"\ncount = 2\ngpu_memory_bytes = 4294967296\n")
	f.sync(t)
	v := f.version(t, "big")
	if v.Provider != engine.ProviderCUDA || !slices.Equal(v.GPUs, []int{1, 1}) || v.Fallback != "" {
		t.Fatalf("placed on %v with %s (fallback %q), want both instances on GPU 1 (most headroom) with CUDA", v.GPUs, v.Provider, v.Fallback)
	}
	for _, o := range f.opened(0) {
		// NVML's GPU 1 is CUDA's device 0 here, and the arena is capped at the estimate.
		if o.Provider != engine.ProviderCUDA || o.DeviceID != 0 || o.GPUMemLimit != 4*gib || o.IntraOpThreads != 1 {
			t.Errorf("opened with %+v, want CUDA device 0 capped at 4 GiB, with one intra-op thread", o)
		}
	}
	// Each instance grew the process's usage on GPU 1 by 1 GiB: the measurement replaces the
	// 4 GiB estimate.
	if !slices.Equal(v.GPUMemory, []uint64{gib, gib}) {
		t.Errorf("GPUMemory = %v, want the measured 1 GiB each", v.GPUMemory)
	}
}

// workerHosts starts hosts that stand for model workers: each reports a pid of its own, whose
// GPU memory the test sets in the fake devices.
type workerHosts struct{ engine.Isolator }

func (w workerHosts) Start(ctx context.Context, opts engine.HostOptions) (engine.Host, error) {
	h, err := w.Isolator.Start(ctx, opts)
	return pidHost{h}, err
}

type pidHost struct{ engine.Host }

const workerPID = 4242

func (pidHost) Status() engine.HostStatus { return engine.HostStatus{PID: workerPID} }

// TestGPUMemoryOfAWorker: a version in a worker of its own is measured by what the worker
// holds on the GPU (its CUDA context included), not by the daemon's usage, which does not move.
func TestGPUMemoryOfAWorker(t *testing.T) {
	dev := &fakeDevices{gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib}}, used: map[int]uint64{},
		byPID: map[int]map[int]uint64{workerPID: {0: 3 * gib}}}
	f := &fixtureRepo{dir: t.TempDir(), rt: enginetest.New(), drain: &recorder{}, runs: map[string]int{}}
	f.set(models.Settings{Defaults: models.Defaults{Cores: 2}, GPUMemoryFraction: 1})
	f.repo = models.NewWith(workerHosts{engine.InProcess(f.rt)}, func() models.Settings { return *f.settings.Load() }, quiet)
	f.repo.SetDrainer(f.drain)
	f.repo.SetDevices(dev)
	t.Cleanup(func() { f.repo.Close(context.Background()) })
	g := &gpuFixture{fixtureRepo: f, dev: dev}
	g.model(t, "m", "[instance]\ndevice = \"gpu\"\ncount = 2\ngpu_memory_bytes = 4294967296\n")
	g.sync(t)
	v := g.version(t, "m")
	if !slices.Equal(v.GPUMemory, []uint64{1536 << 20, 1536 << 20}) {
		t.Errorf("GPUMemory = %v, want the worker's 3 GiB shared by its 2 instances", v.GPUMemory)
	}
}

// TestGPUArenaLimit: gpu_memory_bytes is a budget that caps each CUDA arena; without it the
// estimate is only a guess, and each instance may grow into its share of what the GPU offered.
func TestGPUArenaLimit(t *testing.T) {
	f := newGPUFixture(t)
	f.model(t, "guessed", "max_batch_size = 8\n[instance]\ndevice = \"gpu\"\ncount = 2\n")
	f.sync(t)
	if v := f.version(t, "guessed"); !slices.Equal(v.GPUs, []int{1, 1}) {
		t.Fatalf("placed on %v, want both instances on GPU 1", v.GPUs)
	}
	// GPU 1 offers its 70 GiB of NVML free memory (the fixture's memory fraction is 1); the
	// two instances share it.
	want := int64(70*gib) / 2
	for _, o := range f.opened(0) {
		if o.GPUMemLimit != want {
			t.Errorf("arena limit %d, want %d (half of GPU 1's offer)", o.GPUMemLimit, want)
		}
	}
	mark := len(f.opened(0))
	f.model(t, "budgeted", "max_batch_size = 8\n[instance]\ndevice = \"gpu\"\ngpu_memory_bytes = 3221225472\n")
	f.sync(t)
	for _, o := range f.opened(mark) {
		if o.GPUMemLimit != 3*gib {
			t.Errorf("arena limit %d, want the model's budget of 3 GiB", o.GPUMemLimit)
		}
	}
}

func TestGPUAllowedListAndSpread(t *testing.T) {
	f := newGPUFixture(t,
		models.GPU{Index: 0, CUDAOrdinal: 0, Total: 16 * gib, Free: 16 * gib},
		models.GPU{Index: 1, CUDAOrdinal: 1, Total: 16 * gib, Free: 16 * gib},
		models.GPU{Index: 2, CUDAOrdinal: 2, Total: 80 * gib, Free: 80 * gib})
	f.model(t, "pinned", "[instance]\ndevice = \"gpu\"\ngpus = [0, 1]\ncount = 2\nspread = true\n")
	f.sync(t)
	if v := f.version(t, "pinned"); !slices.Equal(v.GPUs, []int{0, 1}) {
		t.Errorf("placed on %v, want one instance on each of the allowed GPUs 0 and 1", v.GPUs)
	}
}

// TestGPUHeldMemoryBoundsPlacement: NVML's free memory lags behind arenas that have not grown
// yet, so what inferd's own versions hold bounds what a GPU offers the next one; unloading a
// version gives its share back.
func TestGPUHeldMemoryBoundsPlacement(t *testing.T) {
	f := newGPUFixture(t, models.GPU{Index: 0, Total: 16 * gib, Free: 16 * gib}) // NVML never sees usage grow
	f.dev.noProcess = true                                                       // and cannot measure: estimates stay
	six := "[instance]\ndevice = \"gpu\"\ngpu_memory_bytes = 6442450944\n"
	f.model(t, "a", six)
	f.model(t, "b", six)
	f.model(t, "c", six)
	f.sync(t)
	for name, want := range map[string]models.State{"a": models.StateReady, "b": models.StateReady, "c": models.StateUnavailable} {
		if st, reason := state(f.repo, name, "1"); st != want {
			t.Errorf("%s: %s (%s), want %s", name, st, reason, want)
		}
	}
	_, reason := state(f.repo, "c", "1")
	for _, want := range []string{`device "gpu" requested`, "does not fit in GPU memory", "1 × 6.0 GiB needed",
		"GPU 0 offers 4.0 GiB", "16.0 GiB total less 12.0 GiB held by inferd", "set cpu_fallback = true"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q lacks %q", reason, want)
		}
	}
	if err := os.RemoveAll(filepath.Join(f.dir, "a")); err != nil {
		t.Fatal(err)
	}
	f.add(t, "c", "1") // touch c so that its failed load is retried
	f.sync(t)
	if st, reason := state(f.repo, "c", "1"); st != models.StateReady {
		t.Errorf("c after a unloaded: %s (%s), want READY", st, reason)
	}
}

func TestGPUFallback(t *testing.T) {
	tests := []struct {
		name      string
		toml      string
		gpus      []models.GPU // nil: a node without GPUs
		broken    bool         // the engine has no CUDA provider
		wantState models.State
		wantProv  string
		reason    []string // in the index reason (UNAVAILABLE) or Version.Fallback (READY)
	}{
		{name: "gpu on a CPU-only node fails", toml: `device = "gpu"`, wantState: models.StateUnavailable,
			reason: []string{`device "gpu" requested, but this node has no usable GPU (libnvidia-ml.so.1 not found: no NVIDIA driver is installed)`, "cpu_fallback = true"}},
		{name: "gpu with fallback runs on the CPU and says why", toml: "device = \"gpu\"\ncpu_fallback = true", wantState: models.StateReady,
			wantProv: engine.ProviderCPU, reason: []string{"this node has no usable GPU (libnvidia-ml.so.1 not found"}},
		{name: "auto on a CPU-only node", toml: `device = "auto"`, wantState: models.StateReady, wantProv: engine.ProviderCPU,
			reason: []string{"no usable GPU"}},
		{name: "auto on a GPU node", toml: `device = "auto"`, gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib}},
			wantState: models.StateReady, wantProv: engine.ProviderCUDA},
		{name: "gpu without the CUDA provider fails", toml: `device = "gpu"`, gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib}},
			broken: true, wantState: models.StateUnavailable, reason: []string{`device "gpu" requested, but the CUDA execution provider failed: execution provider unavailable`, "libcublasLt.so.13"}},
		{name: "gpu without the CUDA provider, with fallback", toml: "device = \"gpu\"\ncpu_fallback = true",
			gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib}}, broken: true,
			wantState: models.StateReady, wantProv: engine.ProviderCPU, reason: []string{"libcublasLt.so.13"}},
		{name: "gpu that fits nowhere, with fallback", toml: "device = \"gpu\"\ncpu_fallback = true\ngpu_memory_bytes = 107374182400",
			gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib}}, wantState: models.StateReady, wantProv: engine.ProviderCPU,
			reason: []string{"does not fit in GPU memory", "1 × 100.0 GiB needed"}},
		{name: "a lost GPU is not used", toml: `device = "gpu"`, gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib, Problem: "NVML lost the GPU"}},
			wantState: models.StateUnavailable, reason: []string{"GPU 0 cannot be used (NVML lost the GPU)"}},
		{name: "an allowed GPU that does not exist", toml: "device = \"gpu\"\ngpus = [3]", gpus: []models.GPU{{Index: 0, Total: 16 * gib, Free: 16 * gib}},
			wantState: models.StateUnavailable, reason: []string{"GPU 3 does not exist"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gpus := tc.gpus
			if gpus == nil {
				gpus = []models.GPU{}
			}
			f := newGPUFixture(t, gpus...)
			f.dev.why = "libnvidia-ml.so.1 not found: no NVIDIA driver is installed"
			f.cuda.broken = tc.broken
			f.model(t, "m", "[instance]\n"+tc.toml+"\n")
			f.sync(t)
			st, reason := state(f.repo, "m", "1")
			if st != tc.wantState {
				t.Fatalf("state %s (%s), want %s", st, reason, tc.wantState)
			}
			if st == models.StateReady {
				v := f.version(t, "m")
				reason = v.Fallback
				if v.Provider != tc.wantProv {
					t.Errorf("provider %s, want %s", v.Provider, tc.wantProv)
				}
				if (v.Provider == engine.ProviderCPU) != (v.GPUs == nil) {
					t.Errorf("provider %s with GPUs %v", v.Provider, v.GPUs)
				}
				for _, o := range f.opened(0) {
					if o.Provider != tc.wantProv {
						t.Errorf("a session opened with %s, the version reports %s", o.Provider, tc.wantProv)
					}
					// A CUDA session gets one intra-op thread; one that falls back to the
					// CPU gets the CPU's share (the fixture's 2 cores).
					if want := map[string]int{engine.ProviderCPU: 2, engine.ProviderCUDA: 1}[o.Provider]; o.IntraOpThreads != want {
						t.Errorf("a %s session opened with %d intra-op threads, want %d", o.Provider, o.IntraOpThreads, want)
					}
				}
			}
			if len(tc.reason) == 0 && reason != "" {
				t.Errorf("unexpected reason %q", reason)
			}
			for _, want := range tc.reason {
				if !strings.Contains(reason, want) {
					t.Errorf("reason %q lacks %q", reason, want)
				}
			}
		})
	}
}

// TestGPULost: a GPU that fails makes its versions, and only those, unavailable with the
// reason; a load that races the failure does not publish a version on the lost GPU.
func TestGPULost(t *testing.T) {
	f := newGPUFixture(t,
		models.GPU{Index: 0, Total: 16 * gib, Free: 16 * gib},
		models.GPU{Index: 1, CUDAOrdinal: 1, Total: 16 * gib, Free: 8 * gib})
	f.model(t, "on0", "[instance]\ndevice = \"gpu\"\ngpus = [0]\n")
	f.model(t, "on1", "[instance]\ndevice = \"gpu\"\ngpus = [1]\n")
	f.model(t, "cpu", "[instance]\ndevice = \"cpu\"\n")
	f.sync(t)
	f.repo.DeviceLost(0, "NVML lost the GPU (fallen off the bus or an XID error)")
	want := map[string]models.State{"on0": models.StateUnavailable, "on1": models.StateReady, "cpu": models.StateReady}
	for name, ws := range want {
		st, reason := state(f.repo, name, "1")
		if st != ws {
			t.Errorf("%s: %s (%s), want %s", name, st, reason, ws)
		}
		if name == "on0" && !strings.Contains(reason, "GPU 0 failed: NVML lost the GPU") {
			t.Errorf("on0 reason %q", reason)
		}
	}
	if _, err := f.repo.Resolve("on0", ""); err == nil {
		t.Error("a version on a lost GPU still resolves")
	}

	// GPU 1 fails while a version loads onto it: NVML notices between placement and warmup.
	f.model(t, "late", "max_batch_size = 4\n[instance]\ndevice = \"gpu\"\ngpus = [1]\n")
	f.rt.Register(filepath.Join(f.dir, "late", "1", "model.onnx"), idSig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
		f.dev.setProblem(1, "NVML lost the GPU")
		return in, nil
	})
	f.sync(t, "late")
	if st, reason := state(f.repo, "late", "1"); st != models.StateUnavailable || !strings.Contains(reason, "GPU 1 failed while the version loaded") {
		t.Errorf("late: %s (%s), want UNAVAILABLE because GPU 1 failed", st, reason)
	}
}

// TestGPUMemoryFractionFollowsSettings: gpu.memory_fraction is read from the settings in force
// when a load begins, so a reload that lowers it shrinks what the next version is offered.
func TestGPUMemoryFractionFollowsSettings(t *testing.T) {
	f := newGPUFixture(t, models.GPU{Index: 0, Total: 80 * gib, Free: 70 * gib})
	f.set(models.Settings{Defaults: models.Defaults{Cores: 2}, GPUMemoryFraction: 0.5})
	f.model(t, "m", "max_batch_size = 8\n[instance]\ndevice = \"gpu\"\n")
	f.sync(t)
	opened := f.opened(0)
	if len(opened) != 1 || opened[0].GPUMemLimit <= 0 || opened[0].GPUMemLimit > int64(35*gib) {
		t.Errorf("opened with %+v, want an arena limit of at most half of the 70 GiB free", opened)
	}
}
