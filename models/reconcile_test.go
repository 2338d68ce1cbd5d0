package models_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

var idSig = engine.Signature{
	Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
	Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
}

// recorder is a Drainer that remembers what it drained.
type recorder struct {
	mu      sync.Mutex
	drained []string
}

func (r *recorder) Drain(_ context.Context, v *models.Version) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drained = append(r.drained, v.Model+"/"+v.Label())
	return nil
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.drained)
}

type fixtureRepo struct {
	dir      string
	rt       *enginetest.Runtime
	repo     *models.Repository
	settings atomic.Pointer[models.Settings] // what repo reads; set swaps it, as a reload does
	drain    *recorder
	runs     map[string]int // warmup runs per model path
	mu       sync.Mutex
}

func newFixture(t *testing.T) *fixtureRepo {
	t.Helper()
	f := &fixtureRepo{dir: t.TempDir(), rt: enginetest.New(), drain: &recorder{}, runs: map[string]int{}}
	f.open(f.rt, models.Settings{Defaults: models.Defaults{Cores: 2}})
	t.Cleanup(func() { f.repo.Close(context.Background()) })
	return f
}

// open makes f.repo over f.dir with rt, reading its settings from f.settings, first s.
func (f *fixtureRepo) open(rt engine.Runtime, s models.Settings) {
	f.set(s)
	f.repo = models.NewWith(engine.InProcess(rt), func() models.Settings { return *f.settings.Load() }, quiet)
	f.repo.SetDrainer(f.drain)
}

// set makes s (over f.dir) the settings in force.
func (f *fixtureRepo) set(s models.Settings) {
	s.Root = f.dir
	f.settings.Store(&s)
}

// add writes a model file (distinct content per call, so the fingerprint changes) and
// registers it with the fake engine.
func (f *fixtureRepo) add(t *testing.T, model string, version string) {
	t.Helper()
	rel := filepath.Join(model, version, "model.onnx")
	testutil.WriteFile(t, f.dir, rel, []byte(time.Now().String()))
	path := filepath.Join(f.dir, rel)
	// A fresh mtime may equal the old one on coarse clocks: move it explicitly.
	later := time.Now().Add(time.Duration(len(f.rt.OpenedWith())+1) * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	f.rt.Register(path, idSig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
		f.mu.Lock()
		f.runs[path]++
		f.mu.Unlock()
		return in, nil
	})
}

func (f *fixtureRepo) sync(t *testing.T, names ...string) {
	t.Helper()
	if len(names) == 0 {
		if err := f.repo.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		return
	}
	f.repo.SyncModels(context.Background(), names)
}

func state(r *models.Repository, name, version string) (models.State, string) {
	for _, e := range r.Index() {
		if e.Name == name && e.Version == version {
			return e.State, e.Reason
		}
	}
	return "", ""
}

func TestNewVersionReplacesOldAfterLoading(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	f.sync(t)
	v1, err := f.repo.Resolve("m", "")
	if err != nil {
		t.Fatal(err)
	}
	f.add(t, "m", "2") // policy latest = 1: version 2 replaces version 1
	f.sync(t, "m")
	v2, err := f.repo.Resolve("m", "")
	if err != nil || v2.Number != 2 {
		t.Fatalf("after adding version 2: %v %v", v2, err)
	}
	if !v1.Retired() || v2.Retired() {
		t.Errorf("retired: v1 %v v2 %v", v1.Retired(), v2.Retired())
	}
	if got := f.drain.list(); !slices.Equal(got, []string{"m/1"}) {
		t.Errorf("drained %v, want [m/1]", got)
	}
	if f.rt.Closes() != 1 {
		t.Errorf("closed %d sessions, want 1 (version 1's)", f.rt.Closes())
	}
	if _, err := f.repo.Resolve("m", "1"); !errors.Is(err, models.ErrVersionNotFound) {
		t.Errorf("version 1 after it left the policy: %v", err)
	}
}

func TestChangedFileLoadsNewGenerationAndUnchangedDoesNothing(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	f.sync(t)
	first, _ := f.repo.Resolve("m", "1")
	opens := f.rt.Opens()
	f.sync(t, "m")
	if f.rt.Opens() != opens {
		t.Fatalf("an unchanged model was loaded again (%d opens, was %d)", f.rt.Opens(), opens)
	}
	f.add(t, "m", "1") // same version, new file
	f.sync(t, "m")
	second, _ := f.repo.Resolve("m", "1")
	if second == first || !first.Retired() || second.Retired() {
		t.Fatalf("a changed file did not make a new generation: first %p second %p", first, second)
	}
	if len(first.Sessions) != 1 || f.rt.Closes() != 1 {
		t.Errorf("old generation's sessions not closed: %d closes", f.rt.Closes())
	}
}

func TestFailedUpdateKeepsServingAndIsNotRetried(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	f.sync(t)
	good, _ := f.repo.Resolve("m", "")
	f.add(t, "m", "1")
	path := filepath.Join(f.dir, "m", "1", "model.onnx")
	f.rt.FailOpen(path, engine.ErrInvalidModel)
	f.sync(t, "m")
	v, err := f.repo.Resolve("m", "")
	if err != nil || v != good {
		t.Fatalf("after a failed update: %v %v; want the previous generation", v, err)
	}
	st, reason := state(f.repo, "m", "1")
	if st != models.StateReady || !strings.Contains(reason, "update failed") || !strings.Contains(reason, "invalid model") {
		t.Errorf("index: %s %q", st, reason)
	}
	opens := f.rt.Opens()
	f.sync(t, "m")
	if f.rt.Opens() != opens {
		t.Error("a failed update was retried although its files did not change")
	}
	// Fixing the file loads it.
	f.rt.FailOpen(path, nil)
	f.add(t, "m", "1")
	f.sync(t, "m")
	if v, _ := f.repo.Resolve("m", ""); v == good {
		t.Error("the fixed file did not load")
	}
	if _, reason := state(f.repo, "m", "1"); reason != "" {
		t.Errorf("reason after the fix: %q", reason)
	}
}

func TestRemovedModelAndVersion(t *testing.T) {
	f := newFixture(t)
	f.add(t, "a", "1")
	f.add(t, "a", "2")
	testutil.WriteFile(t, f.dir, "a/model.toml", []byte("[version_policy]\nall = true\n"))
	f.add(t, "b", "1")
	f.sync(t)
	if err := os.RemoveAll(filepath.Join(f.dir, "a", "1")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, "b")); err != nil {
		t.Fatal(err)
	}
	f.sync(t, "a", "b")
	if _, err := f.repo.Resolve("a", "1"); !errors.Is(err, models.ErrVersionNotFound) {
		t.Errorf("deleted version: %v", err)
	}
	if _, err := f.repo.Resolve("a", "2"); err != nil {
		t.Errorf("remaining version: %v", err)
	}
	if _, err := f.repo.Resolve("b", ""); !errors.Is(err, models.ErrModelNotFound) {
		t.Errorf("deleted model: %v", err)
	}
	got := f.drain.list()
	slices.Sort(got)
	if !slices.Equal(got, []string{"a/1", "b/1"}) {
		t.Errorf("drained %v", got)
	}
}

func TestModelTOMLChanges(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	f.sync(t)
	first, _ := f.repo.Resolve("m", "")
	testutil.WriteFile(t, f.dir, "m/model.toml", []byte("max_batch_size = 8\n[instance]\ncount = 2\n"))
	f.sync(t, "m")
	v, _ := f.repo.Resolve("m", "")
	if v == first || len(v.Sessions) != 2 || v.Config.MaxBatchSize != 8 {
		t.Fatalf("after a model.toml change: %d sessions, max batch %d", len(v.Sessions), v.Config.MaxBatchSize)
	}
	testutil.WriteFile(t, f.dir, "m/model.toml", []byte("max_batch_size = \"eight\"\n"))
	f.sync(t, "m")
	if now, _ := f.repo.Resolve("m", ""); now != v {
		t.Fatal("an invalid model.toml replaced the serving generation")
	}
	if _, reason := state(f.repo, "m", "1"); !strings.Contains(reason, "model.toml:1") {
		t.Errorf("reason %q does not point at the bad line", reason)
	}
}

func TestWarmup(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	testutil.WriteFile(t, f.dir, "m/model.toml", []byte("max_batch_size = 8\n[instance]\ncount = 2\n[warmup]\nbatch_sizes = [1, 4]\nruns = 2\n"))
	f.sync(t)
	path := filepath.Join(f.dir, "m", "1", "model.onnx")
	f.mu.Lock()
	runs := f.runs[path]
	f.mu.Unlock()
	if runs != 2*2*2 {
		t.Errorf("%d warmup runs, want 8 (2 sizes × 2 runs × 2 instances)", runs)
	}
	// A warmup that cannot run (a variable dimension it cannot guess) fails the load.
	f.add(t, "v", "1")
	f.rt.Register(filepath.Join(f.dir, "v", "1", "model.onnx"), engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, -1}}},
		Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, -1}}},
	}, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil })
	testutil.WriteFile(t, f.dir, "v/model.toml", []byte("max_batch_size = 8\n[warmup]\nbatch_sizes = [2]\n"))
	f.sync(t, "v")
	if st, reason := state(f.repo, "v", "1"); st != models.StateUnavailable || !strings.Contains(reason, "variable dimension 1") {
		t.Errorf("warmup with a variable dimension: %s %q", st, reason)
	}
}

func TestExplicitControl(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	f.sync(t)
	ctx := context.Background()
	if err := f.repo.UnloadModel(ctx, "m"); !errors.Is(err, models.ErrControl) {
		t.Fatalf("unload in watch mode: %v", err)
	}
	f.set(models.Settings{Control: models.ControlExplicit, Defaults: models.Defaults{Cores: 2}})
	if err := f.repo.UnloadModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.Resolve("m", ""); !errors.Is(err, models.ErrModelNotFound) {
		t.Errorf("after unload: %v", err)
	}
	f.sync(t) // a full sync keeps an unloaded model unloaded
	if _, err := f.repo.Resolve("m", ""); !errors.Is(err, models.ErrModelNotFound) {
		t.Errorf("after unload and sync: %v", err)
	}
	if err := f.repo.LoadModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.Resolve("m", ""); err != nil {
		t.Errorf("after load: %v", err)
	}
	if err := f.repo.LoadModel(ctx, "nosuch"); !errors.Is(err, models.ErrModelNotFound) {
		t.Errorf("load of a missing model: %v", err)
	}
	if err := f.repo.LoadModel(ctx, "../etc"); !errors.Is(err, models.ErrModelNotFound) {
		t.Errorf("load of a path: %v", err)
	}
	f.add(t, "bad", "1")
	f.rt.FailOpen(filepath.Join(f.dir, "bad", "1", "model.onnx"), engine.ErrInvalidModel)
	if err := f.repo.LoadModel(ctx, "bad"); !errors.Is(err, models.ErrUnavailable) {
		t.Errorf("load of a broken model: %v", err)
	}
}

func TestBrokenNewestVersionKeepsPreviousServing(t *testing.T) {
	f := newFixture(t)
	f.add(t, "m", "1")
	f.sync(t)
	good, _ := f.repo.Resolve("m", "")
	f.add(t, "m", "2") // latest = 1 selects only version 2, which is corrupt
	f.rt.FailOpen(filepath.Join(f.dir, "m", "2", "model.onnx"), engine.ErrInvalidModel)
	f.sync(t, "m")
	v, err := f.repo.Resolve("m", "")
	if err != nil || v != good {
		t.Fatalf("with a corrupt newest version: %v %v; want version 1 still serving", v, err)
	}
	if st, _ := state(f.repo, "m", "2"); st != models.StateUnavailable {
		t.Errorf("version 2 is %s, want UNAVAILABLE", st)
	}
	if good.Retired() || len(f.drain.list()) != 0 {
		t.Error("version 1 was retired although nothing replaced it")
	}
}

// TestOldVersionServesWhileNewLoads checks that while a replacing version loads (and warms
// up), the version it replaces still resolves.
func TestOldVersionServesWhileNewLoads(t *testing.T) {
	f := newFixture(t)
	testutil.WriteFile(t, f.dir, "m/model.toml", []byte("max_batch_size = 4\n[warmup]\nbatch_sizes = [1]\n"))
	f.add(t, "m", "1")
	f.sync(t)
	old, _ := f.repo.Resolve("m", "")
	f.add(t, "m", "2")
	gate := f.rt.Hold() // version 2's warmup run blocks here
	done := make(chan struct{})
	go func() { f.sync(t, "m"); close(done) }()
	<-gate.Entered()
	if v, err := f.repo.Resolve("m", ""); err != nil || v != old {
		t.Errorf("while version 2 loads: %v %v; want version 1", v, err)
	}
	if st, _ := state(f.repo, "m", "2"); st != models.StateLoading {
		t.Errorf("version 2 is %s while loading", st)
	}
	if !f.repo.Ready() {
		t.Error("loading a new version made the repository unready")
	}
	gate.Release()
	<-done
	if v, _ := f.repo.Resolve("m", ""); v.Number != 2 {
		t.Errorf("after loading: version %d", v.Number)
	}
}
