package ort_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	onnx "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/onnxgen"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/tensor"
)

func TestInspect(t *testing.T) {
	rt := newRuntime(t)
	fp16, err := testmodels.Identity(tensor.FP16)
	if err != nil {
		t.Fatal(err)
	}
	spec := func(name string, dt tensor.DataType, shape ...int64) tensor.Spec {
		if shape == nil {
			shape = []int64{}
		}
		return tensor.Spec{Name: name, DataType: dt, Shape: shape}
	}
	tests := []struct {
		name  string
		model []byte
		want  engine.Signature
	}{
		{"mlp", testmodels.MLP(), engine.Signature{
			Inputs:  []tensor.Spec{spec("input", tensor.FP32, -1, 4)},
			Outputs: []tensor.Spec{spec("output", tensor.FP32, -1, 3)},
		}},
		{"multi_io", testmodels.MultiIO(), engine.Signature{
			Inputs: []tensor.Spec{spec("x", tensor.FP32, -1, 3), spec("y", tensor.Int64, -1, 3)},
			Outputs: []tensor.Spec{
				spec("sum", tensor.FP32, -1, 3), spec("twice", tensor.Int64, -1, 3),
				spec("greater", tensor.Bool, -1, 3), spec("wide", tensor.FP64, -1, 3),
			},
		}},
		{"strings", testmodels.Strings(), engine.Signature{
			Inputs:  []tensor.Spec{spec("text", tensor.Bytes, -1)},
			Outputs: []tensor.Spec{spec("upper", tensor.Bytes, -1), spec("same", tensor.Bytes, -1)},
		}},
		{"scalar", testmodels.Scalar(), engine.Signature{
			Inputs:  []tensor.Spec{spec("scale", tensor.FP32), spec("v", tensor.FP32, -1)},
			Outputs: []tensor.Spec{spec("scaled", tensor.FP32, -1), spec("next", tensor.FP32)},
		}},
		{"identity_fp16", fp16, engine.Signature{
			Inputs:  []tensor.Spec{spec("in", tensor.FP16, -1, -1)},
			Outputs: []tensor.Spec{spec("out", tensor.FP16, -1, -1)},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rt.Inspect(t.Context(), writeModel(t, tc.name, tc.model))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Inspect =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

func TestInvalidModels(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	garbage := make([]byte, 4096)
	rand.NewChaCha8([32]byte{1}).Read(garbage)
	corrupt := filepath.Join(dir, "corrupt.onnx")
	truncated := filepath.Join(dir, "truncated.onnx")
	empty := filepath.Join(dir, "empty.onnx")
	mlp := testmodels.MLP()
	for path, data := range map[string][]byte{corrupt: garbage, truncated: mlp[:len(mlp)/2], empty: nil} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		path     string
		notExist bool
	}{
		{"random bytes", corrupt, false},
		{"truncated", truncated, false},
		{"empty file", empty, false},
		{"directory", dir, false},
		{"missing", filepath.Join(dir, "missing.onnx"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rt.Inspect(t.Context(), tc.path)
			if !errors.Is(err, engine.ErrInvalidModel) {
				t.Errorf("Inspect = %v, want ErrInvalidModel", err)
			}
			if tc.notExist != errors.Is(err, os.ErrNotExist) {
				t.Errorf("Inspect = %v, ErrNotExist %v, want %v", err, errors.Is(err, os.ErrNotExist), tc.notExist)
			}
			s, err := rt.Open(context.Background(), tc.path, engine.Options{})
			if !errors.Is(err, engine.ErrInvalidModel) {
				if s != nil {
					s.Close()
				}
				t.Errorf("Open = %v, want ErrInvalidModel", err)
			}
		})
	}
}

// ramp returns n distinct values in [-1, 1).
func ramp(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(i%17)/8.5 - 1
	}
	return x
}

func TestRunMLP(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "mlp", testmodels.MLP())
	for _, batch := range []int{1, 7} {
		for _, misaligned := range []bool{false, true} {
			t.Run(fmt.Sprintf("batch%d/misaligned=%v", batch, misaligned), func(t *testing.T) {
				x := ramp(batch * 4)
				in := tensor.FromFloat32s("input", []int64{int64(batch), 4}, x)
				if misaligned {
					// A tensor sliced out of a request body at an odd offset.
					buf := append([]byte{0}, in.Data...)
					in.Data = buf[1:]
				}
				out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(out) != 1 || out[0].Name != "output" || out[0].DataType != tensor.FP32 {
					t.Fatalf("outputs = %+v", out)
				}
				if want := []int64{int64(batch), 3}; !reflect.DeepEqual(out[0].Shape, want) {
					t.Errorf("shape = %v, want %v", out[0].Shape, want)
				}
				compareFloats(t, "output", out[0].Float32s(), testmodels.MLPForward(x))
			})
		}
	}
}

func compareFloats[T float32 | float64](t *testing.T, name string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-5 {
			t.Errorf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

// le encodes fixed-size values as little-endian bytes.
func le[T any](v []T) []byte {
	b, err := binary.Append(nil, binary.LittleEndian, v)
	if err != nil {
		panic(err)
	}
	return b
}

func decode[T any](t *testing.T, b []byte) []T {
	t.Helper()
	var zero T
	out := make([]T, len(b)/binary.Size(zero))
	if _, err := binary.Decode(b, binary.LittleEndian, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRunMultiIO(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "multi_io", testmodels.MultiIO())
	x := []float32{0.5, 2, -3, 4, 5.5, -6}
	y := []int64{1, 2, -4, 3, 9, -6}
	inputs := []tensor.Tensor{
		{Name: "y", DataType: tensor.Int64, Shape: []int64{2, 3}, Data: le(y)},
		tensor.FromFloat32s("x", []int64{2, 3}, x),
	}
	sum, twice, greater, wide := testmodels.MultiIOForward(x, y)
	check := func(t *testing.T, o tensor.Tensor) {
		t.Helper()
		if !reflect.DeepEqual(o.Shape, []int64{2, 3}) {
			t.Errorf("%s shape = %v", o.Name, o.Shape)
		}
		switch o.Name {
		case "sum":
			compareFloats(t, "sum", o.Float32s(), sum)
		case "twice":
			if got := decode[int64](t, o.Data); !reflect.DeepEqual(got, twice) {
				t.Errorf("twice = %v, want %v", got, twice)
			}
		case "greater":
			if got := decode[bool](t, o.Data); !reflect.DeepEqual(got, greater) {
				t.Errorf("greater = %v, want %v", got, greater)
			}
		case "wide":
			compareFloats(t, "wide", decode[float64](t, o.Data), wide)
		default:
			t.Errorf("unexpected output %q", o.Name)
		}
	}
	tests := []struct {
		names []string
		want  []string
	}{
		{nil, []string{"sum", "twice", "greater", "wide"}},
		{[]string{"wide", "greater", "sum"}, []string{"wide", "greater", "sum"}},
		{[]string{"twice"}, []string{"twice"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.names), func(t *testing.T) {
			out, err := s.Run(context.Background(), inputs, tc.names)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range out {
				got = append(got, o.Name)
				if want := map[string]tensor.DataType{"sum": tensor.FP32, "twice": tensor.Int64,
					"greater": tensor.Bool, "wide": tensor.FP64}[o.Name]; o.DataType != want {
					t.Errorf("%s datatype = %s, want %s", o.Name, o.DataType, want)
				}
				check(t, o)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("outputs %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRunStrings(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "strings", testmodels.Strings())
	text := []string{"hello", "", "MiXeD 123", "héllo wörld", "x"}
	in := tensor.Tensor{Name: "text", DataType: tensor.Bytes, Shape: []int64{int64(len(text))}}
	for _, s := range text {
		in.Strings = append(in.Strings, []byte(s))
	}
	out, err := s.Run(context.Background(), []tensor.Tensor{in}, []string{"same", "upper"})
	if err != nil {
		t.Fatal(err)
	}
	upper, same := testmodels.StringsForward(text)
	for i, want := range [][]string{same, upper} {
		o := out[i]
		if o.DataType != tensor.Bytes || !reflect.DeepEqual(o.Shape, []int64{int64(len(text))}) {
			t.Errorf("%s: %s %v", o.Name, o.DataType, o.Shape)
		}
		var got []string
		for _, b := range o.Strings {
			got = append(got, string(b))
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %q, want %q", o.Name, got, want)
		}
	}
}

// TestIdentityRoundTrip feeds every datatype through an Identity model and expects the same
// bytes back. FP16 and BF16 outputs take the path that pre-allocates them from the input's
// symbolic dimensions.
func TestIdentityRoundTrip(t *testing.T) {
	rt := newRuntime(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dt := range testmodels.IdentityDataTypes() {
		t.Run(string(dt), func(t *testing.T) {
			model, err := testmodels.Identity(dt)
			if err != nil {
				t.Fatal(err)
			}
			s := openModel(t, rt, "identity", model)
			for _, shape := range [][]int64{{1, 1}, {2, 3}, {5, 2}} {
				n := int(shape[0] * shape[1])
				in := tensor.Tensor{Name: "in", DataType: dt, Shape: shape}
				switch dt {
				case tensor.Bytes:
					for i := range n {
						in.Strings = append(in.Strings, []byte(fmt.Sprintf("s%d-\xff\x01%d", i, rng.IntN(1000))))
					}
				case tensor.Bool:
					for range n {
						in.Data = append(in.Data, byte(rng.IntN(2)))
					}
				default:
					in.Data = make([]byte, n*dt.Size())
					for i := range in.Data {
						in.Data[i] = byte(rng.IntN(256))
					}
				}
				out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
				if err != nil {
					t.Fatalf("shape %v: %v", shape, err)
				}
				o := out[0]
				if o.Name != "out" || o.DataType != dt || !reflect.DeepEqual(o.Shape, shape) {
					t.Fatalf("output %s %s %v, want out %s %v", o.Name, o.DataType, o.Shape, dt, shape)
				}
				if !bytes.Equal(o.Data, in.Data) || !reflect.DeepEqual(o.Strings, in.Strings) {
					t.Errorf("shape %v: round trip changed the data:\n got %v %q\nwant %v %q",
						shape, o.Data, o.Strings, in.Data, in.Strings)
				}
			}
		})
	}
}

func TestBoolInputsNormalized(t *testing.T) {
	rt := newRuntime(t)
	model, err := testmodels.Identity(tensor.Bool)
	if err != nil {
		t.Fatal(err)
	}
	s := openModel(t, rt, "identity_bool", model)
	in := tensor.Tensor{Name: "in", DataType: tensor.Bool, Shape: []int64{1, 4}, Data: []byte{0, 1, 2, 255}}
	out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0, 1, 1, 1}; !bytes.Equal(out[0].Data, want) {
		t.Errorf("out = %v, want %v", out[0].Data, want)
	}
	if want := []byte{0, 1, 2, 255}; !bytes.Equal(in.Data, want) {
		t.Errorf("the caller's input was modified: %v", in.Data)
	}
}

func TestRunScalar(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "scalar", testmodels.Scalar())
	v := []float32{1, -2, 3.5}
	scale := float32(2.5)
	out, err := s.Run(context.Background(), []tensor.Tensor{
		tensor.FromFloat32s("v", []int64{3}, v),
		tensor.FromFloat32s("scale", []int64{}, []float32{scale}),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	scaled, next := testmodels.ScalarForward(scale, v)
	if out[0].Name != "scaled" || !reflect.DeepEqual(out[0].Shape, []int64{3}) {
		t.Errorf("scaled: %s %v", out[0].Name, out[0].Shape)
	}
	compareFloats(t, "scaled", out[0].Float32s(), scaled)
	if out[1].Name != "next" || len(out[1].Shape) != 0 {
		t.Errorf("next: %s %v, want rank 0", out[1].Name, out[1].Shape)
	}
	compareFloats(t, "next", out[1].Float32s(), []float32{next})
}

func TestRunRefusesBadRequests(t *testing.T) {
	rt := newRuntime(t)
	multi := openModel(t, rt, "multi_io", testmodels.MultiIO())
	strs := openModel(t, rt, "strings", testmodels.Strings())
	x := tensor.FromFloat32s("x", []int64{1, 3}, []float32{1, 2, 3})
	y := tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{1, 3}, Data: le([]int64{1, 2, 3})}
	tests := []struct {
		name   string
		s      engine.Session
		inputs []tensor.Tensor
		names  []string
	}{
		{"zero batch", multi, []tensor.Tensor{
			{Name: "x", DataType: tensor.FP32, Shape: []int64{0, 3}, Data: []byte{}},
			{Name: "y", DataType: tensor.Int64, Shape: []int64{0, 3}, Data: []byte{}},
		}, nil},
		{"zero elements in one input", multi, []tensor.Tensor{
			x, {Name: "y", DataType: tensor.Int64, Shape: []int64{1, 0}, Data: []byte{}},
		}, nil},
		{"missing input", multi, []tensor.Tensor{x}, nil},
		{"wrong datatype", multi, []tensor.Tensor{x, {Name: "y", DataType: tensor.Int32, Shape: []int64{1, 3}, Data: make([]byte, 12)}}, nil},
		{"wrong rank", multi, []tensor.Tensor{x, {Name: "y", DataType: tensor.Int64, Shape: []int64{3}, Data: make([]byte, 24)}}, nil},
		{"short data", multi, []tensor.Tensor{x, {Name: "y", DataType: tensor.Int64, Shape: []int64{1, 3}, Data: make([]byte, 16)}}, nil},
		{"unknown output", multi, []tensor.Tensor{x, y}, []string{"sum", "nope"}},
		{"empty BYTES", strs, []tensor.Tensor{{Name: "text", DataType: tensor.Bytes, Shape: []int64{0}}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.s.Run(context.Background(), tc.inputs, tc.names)
			if !errors.Is(err, engine.ErrRun) || !errors.Is(err, ort.ErrUnsupportedInput) {
				t.Errorf("Run = %v, %v; want ErrRun and ErrUnsupportedInput", out, err)
			}
		})
	}
	// The session still works after all that.
	if _, err := multi.Run(context.Background(), []tensor.Tensor{x, y}, nil); err != nil {
		t.Errorf("Run after refusals: %v", err)
	}
}

func TestRunCancelledContext(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "mlp", testmodels.MLP())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	in := tensor.FromFloat32s("input", []int64{1, 4}, ramp(4))
	if _, err := s.Run(ctx, []tensor.Tensor{in}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if _, err := s.Run(context.Background(), []tensor.Tensor{in}, nil); err != nil {
		t.Errorf("Run after a cancelled one: %v", err)
	}
	if _, err := rt.Open(ctx, writeModel(t, "mlp", testmodels.MLP()), engine.Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open = %v, want context.Canceled", err)
	}
}

func TestClose(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "mlp", testmodels.MLP())
	in := tensor.FromFloat32s("input", []int64{1, 4}, ramp(4))
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := s.Run(context.Background(), []tensor.Tensor{in}, nil); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if s.Signature().Inputs[0].Name != "input" {
		t.Errorf("Signature after Close = %+v", s.Signature())
	}
}

func TestConcurrentRunsOnOneSession(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "mlp", testmodels.MLP())
	const goroutines, runs = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for r := range runs {
				batch := 1 + (g+r)%5
				x := ramp(batch * 4)
				for i := range x {
					x[i] += float32(g)
				}
				out, err := s.Run(context.Background(),
					[]tensor.Tensor{tensor.FromFloat32s("input", []int64{int64(batch), 4}, x)}, nil)
				if err != nil {
					errs <- err
					return
				}
				got, want := out[0].Float32s(), testmodels.MLPForward(x)
				for i := range want {
					if math.Abs(float64(got[i]-want[i])) > 1e-5 {
						errs <- fmt.Errorf("goroutine %d run %d: output[%d] = %v, want %v", g, r, i, got[i], want[i])
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCloseDuringRuns(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "mlp", testmodels.MLP())
	in := []tensor.Tensor{tensor.FromFloat32s("input", []int64{3, 4}, ramp(12))}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if _, err := s.Run(context.Background(), in, nil); err != nil && !errors.Is(err, engine.ErrClosed) {
					t.Errorf("Run: %v", err)
					return
				}
			}
		})
	}
	// Close while Runs are in flight waits for the one in progress; later ones get ErrClosed.
	s.Close()
	wg.Wait()
}

func TestRuntimesShareTheEnvironment(t *testing.T) {
	a := newRuntime(t)
	b, err := ort.New(ort.RuntimeOptions{LibraryPath: libPath}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Version() != b.Version() || a.Version()[:len(ort.SupportedVersion)+1] != ort.SupportedVersion+"." {
		t.Errorf("versions %q and %q, want %s.x", a.Version(), b.Version(), ort.SupportedVersion)
	}
	s := openModel(t, b, "mlp", testmodels.MLP())
	// Closing b leaves its session and a working.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Inspect(t.Context(), writeModel(t, "mlp", testmodels.MLP())); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Inspect on a closed runtime = %v, want ErrClosed", err)
	}
	in := []tensor.Tensor{tensor.FromFloat32s("input", []int64{1, 4}, ramp(4))}
	if _, err := s.Run(context.Background(), in, nil); err != nil {
		t.Errorf("Run on a session of a closed runtime: %v", err)
	}
	if _, err := a.Inspect(t.Context(), writeModel(t, "mlp", testmodels.MLP())); err != nil {
		t.Errorf("Inspect on the other runtime: %v", err)
	}

	// The same library by another name (a symlink) joins; another file is refused while the
	// environment exists.
	dir := t.TempDir()
	link := filepath.Join(dir, "libonnxruntime.so")
	if err := os.Symlink(libPath, link); err != nil {
		t.Fatal(err)
	}
	c, err := ort.New(ort.RuntimeOptions{LibraryPath: link}, nil)
	if err != nil {
		t.Errorf("New through a symlink: %v", err)
	} else {
		c.Close()
	}
	other := filepath.Join(dir, "other.so")
	if err := os.WriteFile(other, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ort.New(ort.RuntimeOptions{LibraryPath: other}, nil); !errors.Is(err, ort.ErrLibrary) {
		t.Errorf("New with another library = %v, want ErrLibrary", err)
	}
}

// TestEnvironmentRecreated closes every runtime and session, so that the environment is
// destroyed and the library unloaded, then starts again.
func TestEnvironmentRecreated(t *testing.T) {
	for i := range 3 {
		rt, err := ort.New(ort.RuntimeOptions{LibraryPath: libPath}, nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		s, err := rt.Open(context.Background(), writeModel(t, "mlp", testmodels.MLP()), engine.Options{})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		x := ramp(4)
		out, err := s.Run(context.Background(), []tensor.Tensor{tensor.FromFloat32s("input", []int64{1, 4}, x)}, nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		compareFloats(t, "output", out[0].Float32s(), testmodels.MLPForward(x))
		rt.Close()
		s.Close()
	}
}

func TestBadLibrary(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "libonnxruntime.so.1")
	if err := os.WriteFile(fake, []byte("not a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fake, filepath.Join(dir, "missing.so")} {
		if _, err := ort.New(ort.RuntimeOptions{LibraryPath: path}, nil); !errors.Is(err, ort.ErrLibrary) {
			t.Errorf("New(%s) = %v, want ErrLibrary", path, err)
		}
	}
}

func TestProviders(t *testing.T) {
	rt := newRuntime(t)
	path := writeModel(t, "mlp", testmodels.MLP())
	tests := []struct {
		opts    engine.Options
		want    string
		wantErr error
	}{
		{engine.Options{}, engine.ProviderCPU, nil},
		{engine.Options{Provider: engine.ProviderCPU, IntraOpThreads: 2, InterOpThreads: 2}, engine.ProviderCPU, nil},
		{engine.Options{Provider: "TPUExecutionProvider"}, "", ort.ErrProviderUnavailable},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%+v", tc.opts), func(t *testing.T) {
			s, err := rt.Open(context.Background(), path, tc.opts)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Open = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			defer s.Close()
			if s.Provider() != tc.want {
				t.Errorf("Provider() = %q, want %q", s.Provider(), tc.want)
			}
			x := ramp(8)
			out, err := s.Run(context.Background(), []tensor.Tensor{tensor.FromFloat32s("input", []int64{2, 4}, x)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			compareFloats(t, "output", out[0].Float32s(), testmodels.MLPForward(x))
		})
	}
}

// TestCUDAIsNeverSilent asks for CUDA: with the CPU-only library the open must fail with
// ErrProviderUnavailable, and where CUDA works the session must say it runs on CUDA.
func TestCUDAIsNeverSilent(t *testing.T) {
	rt := newRuntime(t)
	s, err := rt.Open(context.Background(), writeModel(t, "mlp", testmodels.MLP()),
		engine.Options{Provider: engine.ProviderCUDA})
	if err != nil {
		if !errors.Is(err, ort.ErrProviderUnavailable) || !errors.Is(err, engine.ErrProviderUnavailable) {
			t.Fatalf("Open(CUDA) = %v, want ErrProviderUnavailable", err)
		}
		t.Logf("CUDA unavailable, as expected without a GPU library: %v", err)
		if slices.Contains(rt.Providers(), engine.ProviderCUDA) {
			t.Logf("(the CUDA provider libraries are installed next to %s, but CUDA itself does not work here)", rt.LibraryPath())
		}
		return
	}
	if !slices.Contains(rt.Providers(), engine.ProviderCUDA) {
		t.Errorf("a CUDA session opened, but Providers() = %v", rt.Providers())
	}
	defer s.Close()
	if s.Provider() != engine.ProviderCUDA {
		t.Errorf("Provider() = %q, want %q", s.Provider(), engine.ProviderCUDA)
	}
}

// halfIdentity is an FP16 Identity whose output dimensions are declared with the given names,
// for the cases the shared test models do not cover.
func halfIdentity(in, out []onnxgen.Dim) []byte {
	return onnxgen.Marshal(onnxgen.Graph{
		Name:    "half",
		Nodes:   []onnxgen.Node{{OpType: "Identity", Name: "id", Inputs: []string{"in"}, Outputs: []string{"out"}}},
		Inputs:  []onnxgen.ValueInfo{{Name: "in", ElemType: onnxgen.Float16, Shape: in}},
		Outputs: []onnxgen.ValueInfo{{Name: "out", ElemType: onnxgen.Float16, Shape: out}},
	})
}

func TestHalfOutputs(t *testing.T) {
	rt := newRuntime(t)
	a, b := onnxgen.P("a"), onnxgen.P("b")
	in := tensor.Tensor{Name: "in", DataType: tensor.FP16, Shape: []int64{2, 3}, Data: le([]uint16{1, 2, 3, 4, 5, 6})}

	// Static output shape: pre-allocated as declared.
	s := openModel(t, rt, "static", halfIdentity(onnxgen.D(2, 3), onnxgen.D(2, 3)))
	if out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil); err != nil || !bytes.Equal(out[0].Data, in.Data) {
		t.Errorf("static: %v, %v", out, err)
	}

	// A dimension no input names cannot be pre-allocated: refused up front.
	path := writeModel(t, "unnamed", halfIdentity([]onnxgen.Dim{a, b}, []onnxgen.Dim{a, onnxgen.P("c")}))
	if _, err := rt.Inspect(t.Context(), path); !errors.Is(err, engine.ErrInvalidModel) {
		t.Errorf("Inspect(output dim not named after an input) = %v, want ErrInvalidModel", err)
	}

	// Names that lie about the shape (declared [b,a], produced [a,b]) make ORT refuse the run
	// instead of writing past the buffer.
	s = openModel(t, rt, "swapped", halfIdentity([]onnxgen.Dim{a, b}, []onnxgen.Dim{b, a}))
	if _, err := s.Run(context.Background(), []tensor.Tensor{in}, nil); !errors.Is(err, engine.ErrRun) {
		t.Errorf("swapped: Run = %v, want ErrRun", err)
	}
	square := tensor.Tensor{Name: "in", DataType: tensor.FP16, Shape: []int64{2, 2}, Data: le([]uint16{1, 2, 3, 4})}
	if out, err := s.Run(context.Background(), []tensor.Tensor{square}, nil); err != nil || !bytes.Equal(out[0].Data, square.Data) {
		t.Errorf("swapped, square: %v, %v", out, err)
	}
}

func BenchmarkRunMLP(b *testing.B) {
	rt := newRuntime(b)
	s := openModel(b, rt, "mlp", testmodels.MLP())
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			in := []tensor.Tensor{tensor.FromFloat32s("input", []int64{int64(batch), 4}, ramp(batch*4))}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Run(context.Background(), in, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkRawMLP is BenchmarkRunMLP's baseline: the same model through onnxruntime_go
// directly, creating the input tensor and letting ORT allocate the output on every run, as
// any caller of the binding must when batch sizes vary.
func BenchmarkRawMLP(b *testing.B) {
	newRuntime(b) // initializes the environment
	so, err := onnx.NewSessionOptions()
	if err != nil {
		b.Fatal(err)
	}
	defer so.Destroy()
	if err := so.SetIntraOpNumThreads(1); err != nil {
		b.Fatal(err)
	}
	s, err := onnx.NewDynamicAdvancedSession(writeModel(b, "mlp", testmodels.MLP()),
		[]string{"input"}, []string{"output"}, so)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Destroy()
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			x := ramp(batch * 4)
			b.ReportAllocs()
			for b.Loop() {
				in, err := onnx.NewTensor(onnx.NewShape(int64(batch), 4), x)
				if err != nil {
					b.Fatal(err)
				}
				outs := []onnx.Value{nil}
				if err := s.Run([]onnx.Value{in}, outs); err != nil {
					b.Fatal(err)
				}
				in.Destroy()
				outs[0].Destroy()
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// TestInputCopies checks the counter the zero-copy test in api relies on: aligned inputs are
// handed to ORT where they lie, a misaligned one is copied and counted, and so are BOOL bytes
// other than 0 and 1.
func TestInputCopies(t *testing.T) {
	rt := newRuntime(t)
	multi := openModel(t, rt, "multi_io", testmodels.MultiIO())
	idBool, err := testmodels.Identity(tensor.Bool)
	if err != nil {
		t.Fatal(err)
	}
	bools := openModel(t, rt, "id_bool", idBool)
	buf := make([]uint64, 8) // 8-byte aligned
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), 64)
	x := tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{1, 3}, Data: mem[0:12:12]}
	y := tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{1, 3}, Data: mem[16:40:40]}
	run := func(s engine.Session, in ...tensor.Tensor) uint64 {
		t.Helper()
		before := rt.InputCopies()
		if _, err := s.Run(context.Background(), in, nil); err != nil {
			t.Fatal(err)
		}
		return rt.InputCopies() - before
	}
	if n := run(multi, x, y); n != 0 {
		t.Errorf("aligned inputs: %d copies, want 0", n)
	}
	y.Data = mem[12:36:36] // 4-byte aligned only
	if n := run(multi, x, y); n != 1 {
		t.Errorf("a misaligned INT64 input: %d copies, want 1", n)
	}
	b := tensor.Tensor{Name: "in", DataType: tensor.Bool, Shape: []int64{1, 2}, Data: []byte{0, 2}}
	if n := run(bools, b); n != 1 {
		t.Errorf("BOOL bytes other than 0 and 1: %d copies, want 1", n)
	}
}

// TestRunStoppedByContext runs loops that would not end by themselves and ends their context
// after 100ms: Run returns soon after, with an error matching ctx's error and cause (not
// engine.ErrRun), and the session then serves a normal run.
func TestRunStoppedByContext(t *testing.T) {
	rt := newRuntime(t)
	steered := openModel(t, rt, "steered", testmodels.Steered())
	endless := openModel(t, rt, "endless", testmodels.Endless())
	x := ramp(4)
	in := tensor.FromFloat32s("input", []int64{1, 4}, x)
	n := func(v int64) tensor.Tensor {
		return tensor.Tensor{Name: "n", DataType: tensor.Int64, Shape: []int64{1}, Data: le([]int64{v})}
	}
	errCause := errors.New("the client left")
	const after, bound = 100 * time.Millisecond, 5 * time.Second

	tests := []struct {
		name   string
		s      engine.Session
		inputs []tensor.Tensor
		ctx    func() (context.Context, func())
		want   []error
	}{
		{"cancelled", steered, []tensor.Tensor{in, n(testmodels.EndlessTrips)},
			func() (context.Context, func()) {
				ctx, cancel := context.WithCancelCause(context.Background())
				timer := time.AfterFunc(after, func() { cancel(errCause) })
				return ctx, func() { timer.Stop(); cancel(nil) }
			},
			[]error{context.Canceled, errCause}},
		{"deadline", endless, []tensor.Tensor{in},
			func() (context.Context, func()) {
				return context.WithTimeoutCause(context.Background(), after, errCause)
			},
			[]error{context.DeadlineExceeded, errCause}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			_, err := tc.s.Run(ctx, tc.inputs, nil)
			took := time.Since(start)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("Run = %v, want it to match %v", err, want)
				}
			}
			if errors.Is(err, engine.ErrRun) {
				t.Errorf("Run = %v, a stopped run should not match engine.ErrRun", err)
			}
			if took < after || took > after+bound {
				t.Errorf("Run returned after %s, want between %s and %s", took, after, after+bound)
			}
		})
	}
	out, err := steered.Run(context.Background(), []tensor.Tensor{in, n(3)}, nil)
	if err != nil {
		t.Fatalf("Run after stopped runs: %v", err)
	}
	if got, want := out[0].Float32s(), testmodels.SteeredForward(x, []int64{3}); !slices.Equal(got, want) {
		t.Errorf("Run after stopped runs = %v, want %v", got, want)
	}
}

// RunInto: ORT writes each planned output that was asked for into the memory place gives; one
// not asked for, and one place declines, are ORT's; a model whose dimension names lie is run
// again without placing, correctly, and is not placed again.
func TestRunIntoPlacesOutputs(t *testing.T) {
	rt := newRuntime(t)
	s := openModel(t, rt, "multi", testmodels.MultiIO()).(*ort.Session)
	x := tensor.FromFloat32s("x", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	ys := []int64{1, 1, 1, 9, 9, 9}
	y := tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{2, 3}, Data: le(ys)}
	var asked []string
	bufs := map[string][]byte{}
	place := func(name string, n int) []byte {
		asked = append(asked, name)
		if name == "wide" {
			return nil // declined: ORT allocates it
		}
		bufs[name] = make([]byte, n)
		return bufs[name]
	}
	out, err := s.RunInto(t.Context(), []tensor.Tensor{x, y}, []string{"twice", "sum", "wide"}, place)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(asked, []string{"sum", "twice", "wide"}) {
		t.Errorf("placed %v, want the outputs asked for (not greater), in signature order", asked)
	}
	sum, twice, _, wide := testmodels.MultiIOForward([]float32{1, 2, 3, 4, 5, 6}, ys)
	if !bytes.Equal(out[0].Data, le(twice)) || !bytes.Equal(out[1].Data, le(sum)) || !bytes.Equal(out[2].Data, le(wide)) {
		t.Errorf("outputs %v", out)
	}
	if unsafe.SliceData(out[0].Data) != unsafe.SliceData(bufs["twice"]) || unsafe.SliceData(out[1].Data) != unsafe.SliceData(bufs["sum"]) {
		t.Error("a placed output is not in the memory place gave")
	}

	a, b := onnxgen.P("a"), onnxgen.P("b")
	liar := openModel(t, rt, "swapped32", onnxgen.Marshal(onnxgen.Graph{
		Name:    "swapped",
		Nodes:   []onnxgen.Node{{OpType: "Identity", Name: "id", Inputs: []string{"in"}, Outputs: []string{"out"}}},
		Inputs:  []onnxgen.ValueInfo{{Name: "in", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{a, b}}},
		Outputs: []onnxgen.ValueInfo{{Name: "out", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{b, a}}},
	})).(*ort.Session)
	in := tensor.FromFloat32s("in", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	for i := range 2 {
		asked = asked[:0]
		out, err := liar.RunInto(t.Context(), []tensor.Tensor{in}, nil, place)
		if err != nil || !slices.Equal(out[0].Shape, in.Shape) || !bytes.Equal(out[0].Data, in.Data) {
			t.Errorf("run %d of a lying model: %v, %v", i, out, err)
		}
		if want := max(1-i, 0); len(asked) != want {
			t.Errorf("run %d of a lying model placed %d outputs, want %d", i, len(asked), want)
		}
	}
}
