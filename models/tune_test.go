package models_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
	"github.com/inferd/inferd/tuning"
)

// Calibration with real ONNX Runtime: a model with nothing but max_batch_size is measured over
// 1 × 2 and 2 × 1 at batch 1 to 16, served in the configuration chosen, and a second load of
// the same file reuses the profile kept in the state directory instead of calibrating again.
func TestCalibrationAtLoad(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	testutil.WriteFile(t, dir, "wide/1/model.onnx", testmodels.Wide(64, 256, 16))
	testutil.WriteFile(t, dir, "wide/model.toml", []byte("max_batch_size = 16\n"))
	rt := newRuntime(t)
	d := models.Defaults{Instances: 1, Cores: 2, MaxBatchSize: 64, CalibrationTime: time.Second}
	load := func() *models.Version {
		t.Helper()
		r := models.New(dir, rt, d, quiet)
		r.SetTuning(models.TuningEnv{Store: tuning.NewStore(state), Hardware: "test", Runtime: "test"})
		if err := r.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(context.Background()) })
		v, err := r.Resolve("wide", "")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v := load()
	tu := v.Tuning
	t.Logf("first load: %s; calibration %.1f ms, %d points", tu.Reason, tu.CalibrationMillis, len(tu.Profile))
	if tu.Source != "auto" || tu.Cached || tu.CalibrationMillis <= 0 || tu.Batching != "model.toml" {
		t.Fatalf("tuning = %+v, want auto, calibrated now, batching from model.toml", tu)
	}
	if len(v.Sessions) != tu.Instances || tu.Instances*tu.IntraOpThreads > 2 || tu.BatchTarget < 1 || tu.BatchTarget > 16 {
		t.Errorf("%d sessions for %+v", len(v.Sessions), tu)
	}
	measured := map[[3]int]bool{}
	for _, p := range tu.Profile {
		if p.Error != "" || p.ServiceMicros <= 0 || p.RowsPerSecond <= 0 {
			t.Errorf("profile point %+v", p)
		}
		measured[[3]int{p.Instances, p.IntraOpThreads, p.Batch}] = true
	}
	for _, c := range [][2]int{{1, 2}, {2, 1}} {
		for _, b := range []int{1, 2, 4, 8, 16} {
			if !measured[[3]int{c[0], c[1], b}] {
				t.Errorf("%d×%d at batch %d not measured", c[0], c[1], b)
			}
		}
	}
	if st := v.Policy().ServiceTimes; len(st) != 16 || st[0] <= 0 {
		t.Errorf("the scheduler is handed %d service times", len(st))
	}
	in := tensor.Tensor{Name: "input", DataType: tensor.FP32, Shape: []int64{1, 64}, Data: make([]byte, 256)}
	if _, err := v.Sessions[len(v.Sessions)-1].Run(context.Background(), []tensor.Tensor{in}, nil); err != nil {
		t.Errorf("a chosen session does not run: %v", err)
	}

	again := load()
	t.Logf("second load: %s; cached %v", again.Tuning.Reason, again.Tuning.Cached)
	if !again.Tuning.Cached || again.Tuning.CalibrationMillis != 0 {
		t.Errorf("second load of the same file: %+v, want the kept profile", again.Tuning)
	}
	if again.Tuning.Instances != tu.Instances || again.Tuning.IntraOpThreads != tu.IntraOpThreads || again.Tuning.BatchTarget != tu.BatchTarget {
		t.Errorf("the kept profile chose %+v, the calibration %+v", again.Tuning, tu)
	}

	// another file under the same name is calibrated afresh
	testutil.WriteFile(t, dir, "wide/1/model.onnx", testmodels.Wide(64, 128, 16))
	if fresh := load(); fresh.Tuning.Cached {
		t.Error("a changed model file reused the old file's profile")
	}
}

// What model.toml writes is kept: a pinned instance count is the only count measured, and
// auto = false (or calibration off node-wide) serves the configuration as written.
func TestCalibrationKeepsWhatModelTOMLWrites(t *testing.T) {
	sig := engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
		Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
	}
	for _, tc := range []struct {
		name, toml  string
		calibration time.Duration
		source      string
		instances   []int // instance counts in the profile
	}{
		{"pinned count", "max_batch_size = 8\n[instance]\ncount = 1\n", time.Second, "auto", []int{1}},
		{"auto off", "max_batch_size = 8\n[tuning]\nauto = false\n", time.Second, "model.toml", nil},
		{"off node-wide", "max_batch_size = 8\n", 0, "model.toml", nil},
		{"free", "max_batch_size = 8\n", time.Second, "auto", []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, rt := loadFake(t, sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil }, tc.toml,
				models.Defaults{Instances: 1, Cores: 2, CalibrationTime: tc.calibration})
			if v.Tuning.Source != tc.source {
				t.Errorf("source %q, want %q (%s)", v.Tuning.Source, tc.source, v.Tuning.Reason)
			}
			var counts []int
			for _, p := range v.Tuning.Profile {
				if len(counts) == 0 || counts[len(counts)-1] != p.Instances {
					counts = append(counts, p.Instances)
				}
			}
			if !slices.Equal(counts, tc.instances) {
				t.Errorf("profile instance counts %v, want %v", counts, tc.instances)
			}
			if len(v.Sessions) != v.Tuning.Instances {
				t.Errorf("%d sessions, tuning says %d", len(v.Sessions), v.Tuning.Instances)
			}
			// every session calibration opened and did not keep is closed
			if open := rt.Opens() - rt.Closes(); open != len(v.Sessions) {
				t.Errorf("%d sessions open, %d serve", open, len(v.Sessions))
			}
		})
	}
}

// A model whose shapes allow it is batched without being told; one with a fixed first
// dimension is not, and loads unbatched instead of failing; max_batch_size = 0 turns it off.
func TestBatchingByDefault(t *testing.T) {
	variable := engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
		Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
	}
	fixedOut := engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
		Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{1}}},
	}
	for _, tc := range []struct {
		name     string
		sig      engine.Signature
		toml     string
		maxBatch int
		batching string
	}{
		{"variable first dimensions", variable, "", 64, "default"},
		{"a fixed output", fixedOut, "", 0, `off: "y" has shape [1], no variable first dimension`},
		{"turned off", variable, "max_batch_size = 0\n", 0, "model.toml"},
		{"written", variable, "max_batch_size = 4\n", 4, "model.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, _ := loadFake(t, tc.sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
				return []tensor.Tensor{{Name: "y", DataType: tensor.FP32, Shape: []int64{in[0].Shape[0]}, Data: make([]byte, 4*in[0].Shape[0])}}, nil
			}, tc.toml, models.Defaults{Instances: 1, Cores: 2, MaxBatchSize: 64})
			if v.Config.MaxBatchSize != tc.maxBatch || v.Tuning.Batching != tc.batching {
				t.Errorf("max_batch_size %d (%q), want %d (%q)", v.Config.MaxBatchSize, v.Tuning.Batching, tc.maxBatch, tc.batching)
			}
			if got := v.Policy().MaxBatchSize; got != tc.maxBatch {
				t.Errorf("the scheduler batches up to %d", got)
			}
		})
	}
}

// A calibration that cannot run, or whose every configuration fails, serves the configuration
// as written and says why.
func TestCalibrationFallsBack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    engine.Signature
		fn     enginetest.Func
		reason string
	}{
		{"inputs cannot be made up", engine.Signature{
			Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, -1}}},
			Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, -1}}},
		}, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil }, "not calibrated: input \"x\" has variable dimension 1"},
		{"every configuration fails above one row", engine.Signature{
			Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
			Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 2}}},
		}, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
			if in[0].Shape[0] > 1 {
				return nil, errors.New("out of memory")
			}
			return in, nil
		}, "no calibrated configuration fits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, rt := loadFake(t, tc.sig, tc.fn, "max_batch_size = 8\n", models.Defaults{Instances: 1, Cores: 2, CalibrationTime: time.Second})
			if v.Tuning.Source != "model.toml" || !strings.Contains(v.Tuning.Reason, tc.reason) || len(v.Sessions) != 1 {
				t.Errorf("tuning %+v with %d sessions, want as written because %q", v.Tuning, len(v.Sessions), tc.reason)
			}
			if open := rt.Opens() - rt.Closes(); open != 1 {
				t.Errorf("%d sessions open, want the one that serves", open)
			}
		})
	}
}

// loadFake loads model "m" of the fake runtime (sig, fn) with model.toml modelTOML ("" for none)
// and defaults d, and returns its version and the runtime.
func loadFake(t *testing.T, sig engine.Signature, fn enginetest.Func, modelTOML string, d models.Defaults) (*models.Version, *enginetest.Runtime) {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "m/1/model.onnx", []byte("fake"))
	if modelTOML != "" {
		testutil.WriteFile(t, dir, "m/model.toml", []byte(modelTOML))
	}
	rt := enginetest.New()
	rt.Register(filepath.Join(dir, "m", "1", "model.onnx"), sig, fn)
	r := models.New(dir, rt, d, quiet)
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	v, err := r.Resolve("m", "")
	if err != nil {
		t.Fatalf("the version does not serve: %v", err)
	}
	return v, rt
}

// A calibrated version's instance count follows the load: Grow opens a session that runs in the
// chosen configuration, Shrink closes one (the loaded ones too), and once the version is closed
// nothing more opens. A version served as written is fixed.
func TestCalibratedVersionScales(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	testutil.WriteFile(t, dir, "wide/1/model.onnx", testmodels.Wide(64, 256, 16))
	testutil.WriteFile(t, dir, "wide/model.toml", []byte("max_batch_size = 16\n[tuning]\nscale_down_after = \"10s\"\nmin_instances = 1\n"))
	testutil.WriteFile(t, dir, "fixed/1/model.onnx", testmodels.Wide(64, 256, 16))
	testutil.WriteFile(t, dir, "fixed/model.toml", []byte("max_batch_size = 16\n[tuning]\nauto = false\n"))
	r := models.New(dir, newRuntime(t), models.Defaults{Instances: 1, Cores: 2, MaxBatchSize: 64, CalibrationTime: time.Second}, quiet)
	r.SetTuning(models.TuningEnv{Store: tuning.NewStore(state), Hardware: "test", Runtime: "test"})
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	v, err := r.Resolve("wide", "")
	if err != nil {
		t.Fatal(err)
	}
	if p := v.Policy(); p.ScaleDownAfter != 10*time.Second || p.MinInstances != 1 {
		t.Errorf("policy scale_down_after %s, min_instances %d; want 10s, 1", p.ScaleDownAfter, p.MinInstances)
	}
	s, err := v.Grow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in := tensor.Tensor{Name: "input", DataType: tensor.FP32, Shape: []int64{2, 64}, Data: make([]byte, 512)}
	if _, err := s.Run(context.Background(), []tensor.Tensor{in}, nil); err != nil {
		t.Errorf("a grown instance does not run: %v", err)
	}
	v.Shrink(s)
	if _, err := s.Run(context.Background(), []tensor.Tensor{in}, nil); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("a shrunk instance runs: %v", err)
	}
	first := v.Sessions[0]
	v.Shrink(first)
	if _, err := first.Run(context.Background(), []tensor.Tensor{in}, nil); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("a loaded instance that was shrunk runs: %v", err)
	}

	fixed, err := r.Resolve("fixed", "")
	if err != nil {
		t.Fatal(err)
	}
	if p := fixed.Policy(); p.ScaleDownAfter != 0 {
		t.Errorf("a version served as written scales: %+v", p)
	}
	if _, err := fixed.Grow(context.Background()); err == nil {
		t.Error("a version served as written grew")
	}

	// unloading closes what is open, and no Grow opens anything afterwards
	if err := os.RemoveAll(filepath.Join(dir, "wide")); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Grow(context.Background()); err == nil {
		t.Error("an unloaded version grew")
	}
}
