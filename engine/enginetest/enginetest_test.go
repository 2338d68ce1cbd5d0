package enginetest_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/tensor"
)

var sumSig = engine.Signature{
	Inputs: []tensor.Spec{
		{Name: "a", DataType: tensor.FP32, Shape: []int64{-1}},
		{Name: "b", DataType: tensor.FP32, Shape: []int64{-1}},
	},
	Outputs: []tensor.Spec{
		{Name: "sum", DataType: tensor.FP32, Shape: []int64{-1}},
		{Name: "diff", DataType: tensor.FP32, Shape: []int64{-1}},
	},
}

// sum expects its inputs in signature order, which Run guarantees.
func sum(in []tensor.Tensor) ([]tensor.Tensor, error) {
	a, b := in[0].Float32s(), in[1].Float32s()
	s, d := make([]float32, len(a)), make([]float32, len(a))
	for i := range a {
		s[i], d[i] = a[i]+b[i], a[i]-b[i]
	}
	return []tensor.Tensor{
		tensor.FromFloat32s("diff", in[0].Shape, d),
		tensor.FromFloat32s("sum", in[0].Shape, s),
	}, nil
}

func newRuntime(t *testing.T) *enginetest.Runtime {
	t.Helper()
	rt := enginetest.New()
	rt.Register("/m/sum.onnx", sumSig, sum)
	return rt
}

func open(t *testing.T, rt *enginetest.Runtime, path string) engine.Session {
	t.Helper()
	s, err := rt.Open(context.Background(), path, engine.Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRun(t *testing.T) {
	rt := newRuntime(t)
	s := open(t, rt, "/m/sum.onnx")
	a := tensor.FromFloat32s("a", []int64{2}, []float32{1, 2})
	b := tensor.FromFloat32s("b", []int64{2}, []float32{10, 20})
	tests := []struct {
		name    string
		inputs  []tensor.Tensor
		names   []string
		want    map[string][]float32
		order   []string
		wantErr error
	}{
		{name: "all outputs in signature order", inputs: []tensor.Tensor{b, a},
			order: []string{"sum", "diff"}, want: map[string][]float32{"sum": {11, 22}, "diff": {-9, -18}}},
		{name: "subset", inputs: []tensor.Tensor{a, b}, names: []string{"diff"},
			order: []string{"diff"}, want: map[string][]float32{"diff": {-9, -18}}},
		{name: "missing input", inputs: []tensor.Tensor{a}, wantErr: engine.ErrRun},
		{name: "duplicate input", inputs: []tensor.Tensor{a, a, b}, wantErr: engine.ErrRun},
		{name: "unknown output", inputs: []tensor.Tensor{a, b}, names: []string{"nope"}, wantErr: engine.ErrRun},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := s.Run(context.Background(), tc.inputs, tc.names)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(out) != len(tc.order) {
				t.Fatalf("got %d outputs, want %d", len(out), len(tc.order))
			}
			for i, o := range out {
				if o.Name != tc.order[i] {
					t.Errorf("output %d is %q, want %q", i, o.Name, tc.order[i])
				}
				if got, want := o.Float32s(), tc.want[o.Name]; !equal(got, want) {
					t.Errorf("%s = %v, want %v", o.Name, got, want)
				}
			}
		})
	}
	if got := rt.Runs(); got != len(tests) {
		t.Errorf("Runs() = %d, want %d", got, len(tests))
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFailuresAndCounts(t *testing.T) {
	rt := newRuntime(t)
	boom := errors.New("boom")
	if _, err := rt.Inspect(t.Context(), "/m/none.onnx"); !errors.Is(err, engine.ErrInvalidModel) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Inspect(unknown) = %v, want ErrInvalidModel and ErrNotExist", err)
	}
	rt.FailInspect("/m/sum.onnx", boom)
	if _, err := rt.Inspect(t.Context(), "/m/sum.onnx"); !errors.Is(err, boom) {
		t.Errorf("Inspect = %v, want boom", err)
	}
	rt.FailInspect("/m/sum.onnx", nil)
	if sig, err := rt.Inspect(t.Context(), "/m/sum.onnx"); err != nil || len(sig.Inputs) != 2 {
		t.Errorf("Inspect after clearing = %v, %v", sig, err)
	}
	rt.FailOpen("/m/sum.onnx", boom)
	if _, err := rt.Open(context.Background(), "/m/sum.onnx", engine.Options{}); !errors.Is(err, boom) {
		t.Errorf("Open = %v, want boom", err)
	}
	rt.FailOpen("/m/sum.onnx", nil)
	s, err := rt.Open(context.Background(), "/m/sum.onnx", engine.Options{Provider: engine.ProviderCUDA})
	if err != nil {
		t.Fatal(err)
	}
	if s.Provider() != engine.ProviderCUDA {
		t.Errorf("Provider() = %q", s.Provider())
	}
	s.Close()
	s.Close()
	if _, err := s.Run(context.Background(), nil, nil); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	if rt.Opens() != 1 || rt.Closes() != 1 {
		t.Errorf("Opens, Closes = %d, %d, want 1, 1", rt.Opens(), rt.Closes())
	}
}

func TestGate(t *testing.T) {
	rt := newRuntime(t)
	s := open(t, rt, "/m/sum.onnx")
	in := []tensor.Tensor{
		tensor.FromFloat32s("a", []int64{1}, []float32{1}),
		tensor.FromFloat32s("b", []int64{1}, []float32{2}),
	}
	gate := rt.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background(), in, nil)
		done <- err
	}()
	if path := <-gate.Entered(); path != "/m/sum.onnx" {
		t.Errorf("entered %q", path)
	}
	// While one Run is held, a second on the same session breaks the contract.
	if _, err := s.Run(context.Background(), in, nil); !errors.Is(err, enginetest.ErrConcurrentRun) {
		t.Errorf("concurrent Run = %v, want ErrConcurrentRun", err)
	}
	select {
	case err := <-done:
		t.Fatalf("held Run returned early: %v", err)
	default:
	}
	gate.Release()
	gate.Release()
	if err := <-done; err != nil {
		t.Fatalf("released Run: %v", err)
	}

	// A held Run whose context ends returns the context's error.
	gate = rt.Hold()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := s.Run(ctx, in, nil)
		done <- err
	}()
	<-gate.Entered()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Run = %v, want context.Canceled", err)
	}
}

func TestConcurrentSessions(t *testing.T) {
	rt := newRuntime(t)
	in := []tensor.Tensor{
		tensor.FromFloat32s("a", []int64{1}, []float32{1}),
		tensor.FromFloat32s("b", []int64{1}, []float32{2}),
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			s, err := rt.Open(context.Background(), "/m/sum.onnx", engine.Options{})
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			for range 10 {
				if _, err := s.Run(context.Background(), in, []string{"sum"}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if rt.Runs() != 80 || rt.Opens() != 8 || rt.Closes() != 8 {
		t.Errorf("Runs, Opens, Closes = %d, %d, %d", rt.Runs(), rt.Opens(), rt.Closes())
	}
}
