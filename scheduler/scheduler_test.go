package scheduler_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var sig = engine.Signature{
	Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1}}},
	Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
}

func negate(in []tensor.Tensor) ([]tensor.Tensor, error) {
	v := in[0].Float32s()
	for i := range v {
		v[i] = -v[i]
	}
	return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, v)}, nil
}

type target struct{ sessions []engine.Session }

func (t *target) Instances() []engine.Session { return t.sessions }

func newTarget(t *testing.T, rt *enginetest.Runtime, n int) *target {
	t.Helper()
	rt.Register("m", sig, negate)
	tg := &target{}
	for range n {
		s, err := rt.Open(context.Background(), "m", engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg.sessions = append(tg.sessions, s)
	}
	return tg
}

func input(v ...float32) []tensor.Tensor {
	return []tensor.Tensor{tensor.FromFloat32s("x", []int64{int64(len(v))}, v)}
}

func TestInferRunsOnInstances(t *testing.T) {
	rt := enginetest.New()
	tg := newTarget(t, rt, 2)
	s := scheduler.New(quiet)
	out, err := s.Infer(context.Background(), tg, input(1, -2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := out[0].Float32s(); got[0] != -1 || got[1] != 2 {
		t.Fatalf("output %v", got)
	}

	// With both instances held, a third request waits, and leaves when its context ends.
	gate := rt.Hold()
	results := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := s.Infer(context.Background(), tg, input(1), nil)
			results <- err
		}()
	}
	<-gate.Entered()
	<-gate.Entered()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Infer(ctx, tg, input(1), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third request with every instance busy: %v", err)
	}
	if rt.Runs() != 3 {
		t.Errorf("runs = %d, want 3 (the waiting request must not have run)", rt.Runs())
	}

	// Close waits for the two in flight, and refuses new work at once.
	closed := make(chan error, 1)
	go func() { closed <- s.Close(context.Background()) }()
	gate.Release()
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("held request: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Infer(context.Background(), tg, input(1), nil); !errors.Is(err, scheduler.ErrStopped) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestCloseTimesOut(t *testing.T) {
	rt := enginetest.New()
	tg := newTarget(t, rt, 1)
	s := scheduler.New(quiet)
	gate := rt.Hold()
	defer gate.Release()
	go func() { _, _ = s.Infer(context.Background(), tg, input(1), nil) }()
	<-gate.Entered()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a stuck request: %v", err)
	}
}
