package models_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newRuntime(t *testing.T) engine.Runtime {
	t.Helper()
	rt, err := ort.New(ort.RuntimeOptions{}, quiet)
	if err != nil {
		t.Fatalf("ONNX Runtime: %v (run make deps, or set INFERD_ONNXRUNTIME_LIBRARY)", err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

// fixture builds a repository with models that load and models that fail in each way.
func fixture(t *testing.T) *models.Repository {
	t.Helper()
	dir := t.TempDir()
	mlp := testmodels.MLP()
	testutil.WriteFile(t, dir, "mlp/1/model.onnx", mlp)
	testutil.WriteFile(t, dir, "mlp/model.toml", []byte("max_batch_size = 4\n[instance]\ncount = 2\n"))
	testutil.WriteFile(t, dir, "multi/1/model.onnx", testmodels.MultiIO())
	testutil.WriteFile(t, dir, "strings/1/model.onnx", testmodels.Strings())
	for _, v := range []string{"1", "2", "3"} {
		testutil.WriteFile(t, dir, "versioned/"+v+"/model.onnx", mlp)
	}
	testutil.WriteFile(t, dir, "versioned/notaversion/README", []byte("ignored"))
	testutil.WriteFile(t, dir, "versioned/model.toml", []byte("[version_policy]\nlatest = 2\n"))
	testutil.WriteFile(t, dir, "corrupt/1/model.onnx", []byte("this is not an onnx model"))
	testutil.WriteFile(t, dir, "badtoml/1/model.onnx", mlp)
	testutil.WriteFile(t, dir, "badtoml/model.toml", []byte("max_batch = 4\n"))
	testutil.WriteFile(t, dir, "empty/README", []byte("no versions"))
	testutil.WriteFile(t, dir, "nofile/1/other.onnx", mlp)
	testutil.WriteFile(t, dir, "scalarbatch/1/model.onnx", testmodels.Scalar())
	testutil.WriteFile(t, dir, "scalarbatch/model.toml", []byte("max_batch_size = 4\n"))
	testutil.WriteFile(t, dir, "gpu/1/model.onnx", mlp)
	testutil.WriteFile(t, dir, "gpu/model.toml", []byte("[instance]\ndevice = \"gpu\"\n"))
	testutil.WriteFile(t, dir, "override/1/model.onnx", mlp)
	testutil.WriteFile(t, dir, "override/model.toml", []byte("[[inputs]]\nname = \"input\"\nshape = [2, 4]\n"))

	r := models.New(dir, newRuntime(t), models.Defaults{Instances: 1, Cores: 2}, quiet)
	if err := r.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func TestRepositoryIndex(t *testing.T) {
	r := fixture(t)
	got := map[string]models.IndexEntry{}
	for _, e := range r.Index() {
		got[e.Name+"/"+e.Version] = e
	}
	cases := []struct {
		key    string
		state  models.State
		reason string
	}{
		{"mlp/1", models.StateReady, ""},
		{"multi/1", models.StateReady, ""},
		{"strings/1", models.StateReady, ""},
		{"versioned/2", models.StateReady, ""},
		{"versioned/3", models.StateReady, ""},
		{"override/1", models.StateReady, ""},
		{"corrupt/1", models.StateUnavailable, "invalid model"},
		{"badtoml/", models.StateUnavailable, `model.toml:1: unknown key "max_batch"`},
		{"empty/", models.StateUnavailable, "no numeric version directory"},
		{"nofile/1", models.StateUnavailable, "model.onnx"},
		{"scalarbatch/1", models.StateUnavailable, `needs a variable first (batch) dimension, but input "scale"`},
		{"gpu/1", models.StateUnavailable, `device "gpu"`},
	}
	for _, c := range cases {
		e, ok := got[c.key]
		if !ok {
			t.Errorf("%s missing from index %+v", c.key, r.Index())
			continue
		}
		if e.State != c.state || !strings.Contains(e.Reason, c.reason) {
			t.Errorf("%s: %s %q, want %s containing %q", c.key, e.State, e.Reason, c.state, c.reason)
		}
	}
	if _, ok := got["versioned/1"]; ok {
		t.Error("versioned/1 loaded despite latest = 2")
	}
	if len(got) != len(cases) {
		t.Errorf("index has %d entries, want %d: %+v", len(got), len(cases), got)
	}
	if !r.Ready() {
		t.Error("repository not ready after Load")
	}
}

func TestRepositoryResolve(t *testing.T) {
	r := fixture(t)
	cases := []struct {
		model, version string
		want           int64
		err            error
	}{
		{"mlp", "", 1, nil},
		{"mlp", "1", 1, nil},
		{"versioned", "", 3, nil},
		{"versioned", "2", 2, nil},
		{"versioned", "1", 0, models.ErrVersionNotFound},
		{"versioned", "x", 0, models.ErrVersionNotFound},
		{"nosuch", "", 0, models.ErrModelNotFound},
		{"corrupt", "", 0, models.ErrUnavailable},
		{"corrupt", "1", 0, models.ErrUnavailable},
		{"badtoml", "", 0, models.ErrUnavailable},
	}
	for _, c := range cases {
		v, err := r.Resolve(c.model, c.version)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("Resolve(%q, %q) err = %v, want %v", c.model, c.version, err, c.err)
			}
			continue
		}
		if err != nil || v.Number != c.want {
			t.Errorf("Resolve(%q, %q) = %v, %v; want version %d", c.model, c.version, v, err, c.want)
		}
	}
	v, _ := r.Resolve("mlp", "")
	if len(v.Instances()) != 2 || v.Provider != engine.ProviderCPU {
		t.Errorf("mlp: %d instances on %s, want 2 on CPU", len(v.Instances()), v.Provider)
	}
	ov, _ := r.Resolve("override", "")
	if got := tensor.FormatShape(ov.Signature.Inputs[0].Shape); got != "[2,4]" {
		t.Errorf("override shape %s, want [2,4]", got)
	}
}

func f32(name string, shape []int64, n int) tensor.Tensor {
	return tensor.FromFloat32s(name, shape, make([]float32, n))
}

func i64(name string, shape []int64, n int) tensor.Tensor {
	return tensor.Tensor{Name: name, DataType: tensor.Int64, Shape: shape, Data: make([]byte, 8*n)}
}

func TestCheckRequest(t *testing.T) {
	r := fixture(t)
	mlp, _ := r.Resolve("mlp", "")
	multi, _ := r.Resolve("multi", "")
	str, _ := r.Resolve("strings", "")
	cases := []struct {
		name    string
		v       *models.Version
		inputs  []tensor.Tensor
		outputs []string
		err     string // "" = valid
	}{
		{"valid", mlp, []tensor.Tensor{f32("input", []int64{2, 4}, 8)}, nil, ""},
		{"valid outputs subset", multi, []tensor.Tensor{f32("x", []int64{1, 3}, 3), i64("y", []int64{1, 3}, 3)}, []string{"wide", "sum"}, ""},
		{"no inputs", mlp, nil, nil, "no inputs"},
		{"missing input", multi, []tensor.Tensor{f32("x", []int64{1, 3}, 3)}, nil, `missing input "y"`},
		{"extra input", mlp, []tensor.Tensor{f32("input", []int64{1, 4}, 4), f32("extra", []int64{1}, 1)}, nil, `unexpected input "extra"`},
		{"duplicate input", mlp, []tensor.Tensor{f32("input", []int64{1, 4}, 4), f32("input", []int64{1, 4}, 4)}, nil, "more than once"},
		{"wrong datatype", multi, []tensor.Tensor{f32("x", []int64{1, 3}, 3), f32("y", []int64{1, 3}, 3)}, nil, "datatype FP32, model expects INT64"},
		{"wrong rank", mlp, []tensor.Tensor{f32("input", []int64{4}, 4)}, nil, "rank 1"},
		{"wrong fixed dim", mlp, []tensor.Tensor{f32("input", []int64{1, 5}, 5)}, nil, "dimension 1 must be 4"},
		{"data size", mlp, []tensor.Tensor{f32("input", []int64{2, 4}, 7)}, nil, "needs 32 bytes, got 28"},
		{"over max batch", mlp, []tensor.Tensor{f32("input", []int64{5, 4}, 20)}, nil, "over the model's max_batch_size 4"},
		{"zero elements", mlp, []tensor.Tensor{f32("input", []int64{0, 4}, 0)}, nil, "no elements"},
		{"unknown output", mlp, []tensor.Tensor{f32("input", []int64{1, 4}, 4)}, []string{"nope"}, `unknown output "nope"`},
		{"duplicate output", mlp, []tensor.Tensor{f32("input", []int64{1, 4}, 4)}, []string{"output", "output"}, "requested more than once"},
		{"NUL in string", str, []tensor.Tensor{{Name: "text", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("a\x00b")}}}, nil, "NUL byte"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.v.CheckRequest(c.inputs, c.outputs)
			if c.err == "" {
				if err != nil {
					t.Fatalf("valid request refused: %v", err)
				}
				return
			}
			if !errors.Is(err, models.ErrInvalidInput) || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("err = %v, want ErrInvalidInput containing %q", err, c.err)
			}
		})
	}
}

// TestCheckRequestMismatchedBatch: inputs that disagree on the batch are refused, with
// batching and without it (where ONNX Runtime would broadcast one against the other).
func TestCheckRequestMismatchedBatch(t *testing.T) {
	for _, toml := range []string{"max_batch_size = 8\n", "max_batch_size = 0\n"} {
		dir := t.TempDir()
		testutil.WriteFile(t, dir, "multi/1/model.onnx", testmodels.MultiIO())
		testutil.WriteFile(t, dir, "multi/model.toml", []byte(toml))
		r := models.New(dir, newRuntime(t), models.Defaults{}, quiet)
		if err := r.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		v, err := r.Resolve("multi", "")
		if err != nil {
			t.Fatal(err)
		}
		err = v.CheckRequest([]tensor.Tensor{f32("x", []int64{2, 3}, 6), i64("y", []int64{3, 3}, 9)}, nil)
		if !errors.Is(err, models.ErrInvalidInput) || !strings.Contains(err.Error(), "batch size 3, but other inputs have 2") {
			t.Errorf("%s: err = %v", toml, err)
		}
		if err := v.CheckRequest([]tensor.Tensor{f32("x", []int64{2, 3}, 6), i64("y", []int64{2, 3}, 6)}, nil); err != nil {
			t.Errorf("%s: matching batches refused: %v", toml, err)
		}
		r.Close(context.Background())
	}
}

func TestUnreadableRepository(t *testing.T) {
	r := models.New(filepath.Join(t.TempDir(), "missing"), newRuntime(t), models.Defaults{}, quiet)
	if err := r.Sync(context.Background()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing directory: %v", err)
	}
}

// TestThreadsShareTheCores checks that by default instances × intra-op threads stays within the
// cores the process may use, and that model.toml and the daemon's setting override it.
func TestThreadsShareTheCores(t *testing.T) {
	sig := engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1}}},
		Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1}}},
	}
	cases := []struct {
		name      string
		cores     int
		daemon    int // [engine] intra_op_threads
		modelTOML string
		want      []int // threads of each instance
	}{
		{"one instance takes every core", 8, 0, "", []int{8}},
		{"instances share the cores", 8, 0, "[instance]\ncount = 4\n", []int{2, 2, 2, 2}},
		{"more instances than cores", 2, 0, "[instance]\ncount = 3\n", []int{1, 1, 1}},
		{"uneven share rounds down", 8, 0, "[instance]\ncount = 3\n", []int{2, 2, 2}},
		{"daemon setting", 8, 3, "[instance]\ncount = 2\n", []int{3, 3}},
		{"model setting wins", 8, 3, "[instance]\ncount = 2\nintra_op_threads = 1\n", []int{1, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			testutil.WriteFile(t, dir, "m/1/model.onnx", []byte("fake"))
			if c.modelTOML != "" {
				testutil.WriteFile(t, dir, "m/model.toml", []byte(c.modelTOML))
			}
			rt := enginetest.New()
			rt.Register(filepath.Join(dir, "m", "1", "model.onnx"), sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil })
			r := models.New(dir, rt, models.Defaults{Cores: c.cores, IntraOpThreads: c.daemon}, quiet)
			if err := r.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got []int
			for _, o := range rt.OpenedWith() {
				got = append(got, o.IntraOpThreads)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("threads per instance %v, want %v", got, c.want)
			}
		})
	}
}
