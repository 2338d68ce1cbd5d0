package scheduler_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// These tests stop runs of testmodels.Steered, whose run lasts as long as its input n asks,
// on real ONNX Runtime: stopping a run in progress is ORT's part of the behaviour.

// prompt bounds how long a stopped run, or a run after it, may take to answer.
const prompt = 10 * time.Second

// steeredTarget opens one Steered instance under p.
func steeredTarget(t *testing.T, p scheduler.Policy) (*target, *scheduler.Scheduler) {
	t.Helper()
	rt, err := ort.New(ort.RuntimeOptions{}, quiet)
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	path := filepath.Join(t.TempDir(), "steered.onnx")
	if err := os.WriteFile(path, testmodels.Steered(), 0o644); err != nil {
		t.Fatal(err)
	}
	sess, err := rt.Open(context.Background(), path, engine.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	s := scheduler.New(quiet)
	t.Cleanup(func() { s.Close(context.Background()) })
	return &target{sessions: []engine.Session{sess}, policy: p}, s
}

// steered is a one-row request for Steered: input x, n loop iterations.
func steered(x []float32, n int64) *scheduler.Request {
	return &scheduler.Request{Inputs: []tensor.Tensor{
		tensor.FromFloat32s("input", []int64{1, 4}, x),
		{Name: "n", DataType: tensor.Int64, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint64(nil, uint64(n))},
	}}
}

// checkQuickRun runs a short request and checks its answer and that it came within prompt.
func checkQuickRun(t *testing.T, s *scheduler.Scheduler, tg *target) {
	t.Helper()
	x := []float32{1, 2, 3, 4}
	start := time.Now()
	out, err := s.Infer(context.Background(), tg, steered(x, 3))
	if err != nil {
		t.Fatalf("a short run after a stopped one: %v", err)
	}
	if got, want := out[0].Float32s(), testmodels.SteeredForward(x, []int64{3}); !slices.Equal(got, want) {
		t.Errorf("short run = %v, want %v", got, want)
	}
	if took := time.Since(start); took > prompt {
		t.Errorf("short run took %s: the instance was not free", took)
	}
}

// waitRunning polls until s runs n requests of tg and none waits.
func waitRunning(t *testing.T, s *scheduler.Scheduler, tg *target, n int) {
	t.Helper()
	testutil.Eventually(t, prompt, func() string {
		if st := s.Stats(tg); st.Pending != 0 || st.InFlight != n {
			return fmt.Sprintf("%d requests waiting, %d in flight; want %d running", st.Pending, st.InFlight, n)
		}
		return ""
	})
}

func TestMaxRunTimeStopsTheRun(t *testing.T) {
	const bound = 200 * time.Millisecond
	tg, s := steeredTarget(t, scheduler.Policy{MaxRunTime: bound})
	start := time.Now()
	_, err := s.Infer(context.Background(), tg, steered([]float32{1, 2, 3, 4}, testmodels.EndlessTrips))
	took := time.Since(start)
	if !errors.Is(err, scheduler.ErrRunTimeout) {
		t.Fatalf("Infer = %v, want ErrRunTimeout", err)
	}
	if want := "run exceeded max_run_time 200ms"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if took < bound || took > bound+prompt {
		t.Errorf("Infer returned after %s, want between %s and %s", took, bound, bound+prompt)
	}
	checkQuickRun(t, s, tg)
	if o := s.Stats(tg).Outcomes; o[scheduler.OutcomeServerError] != 1 || o[scheduler.OutcomeSuccess] != 1 {
		t.Errorf("outcomes %v, want one server_error and one success", o)
	}
}

func TestClientLeavingStopsItsRun(t *testing.T) {
	tg, s := steeredTarget(t, scheduler.Policy{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Infer(ctx, tg, steered([]float32{1, 2, 3, 4}, testmodels.EndlessTrips))
		done <- err
	}()
	waitRunning(t, s, tg, 1)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Infer of a client that left = %v, want context.Canceled", err)
		}
	case <-time.After(prompt):
		t.Fatalf("the run of a client that left was not stopped within %s", prompt)
	}
	checkQuickRun(t, s, tg)
	if o := s.Stats(tg).Outcomes; o[scheduler.OutcomeCanceled] != 1 {
		t.Errorf("outcomes %v, want one canceled", o)
	}
}

// TestBatchRunsOnForItsLiveRequest batches two requests; one client leaves during the run,
// which still finishes for the other.
func TestBatchRunsOnForItsLiveRequest(t *testing.T) {
	// Long enough that the run is still going when the client leaves, short enough for a test
	// (ORT takes some microseconds per Loop iteration), and exact in FP32.
	const trips = 1_000_000
	tg, s := steeredTarget(t, scheduler.Policy{MaxBatchSize: 2, MaxQueueDelay: time.Minute})
	leaving, cancel := context.WithCancel(context.Background())
	defer cancel()
	type answer struct {
		out []tensor.Tensor
		err error
	}
	left, live := make(chan answer, 1), make(chan answer, 1)
	x := []float32{1, 2, 3, 4}
	go func() {
		out, err := s.Infer(leaving, tg, steered([]float32{5, 6, 7, 8}, trips))
		left <- answer{out, err}
	}()
	go func() {
		out, err := s.Infer(context.Background(), tg, steered(x, trips))
		live <- answer{out, err}
	}()
	waitRunning(t, s, tg, 2)
	start := time.Now()
	cancel()
	a := <-live
	t.Logf("the batch ran on for %s after one client left", time.Since(start))
	if a.err != nil {
		t.Fatalf("live request of a batch another client left: %v", a.err)
	}
	if got, want := a.out[0].Float32s(), testmodels.SteeredForward(x, []int64{trips}); !slices.Equal(got, want) {
		t.Errorf("live request = %v, want %v", got, want)
	}
	if a := <-left; !errors.Is(a.err, context.Canceled) {
		t.Errorf("request whose client left = %v, %v; want context.Canceled", a.out, a.err)
	}
	if st := s.Stats(tg); st.ExecutionCount != 1 || st.Outcomes[scheduler.OutcomeSuccess] != 2 {
		t.Errorf("%d executions, outcomes %v; want the two requests in one successful batch", st.ExecutionCount, st.Outcomes)
	}
}

// TestDrainOutOfTimeStopsTheRun: when a drain runs out of time, the run in flight is stopped
// and its caller hears back at once.
func TestDrainOutOfTimeStopsTheRun(t *testing.T) {
	tg, s := steeredTarget(t, scheduler.Policy{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Infer(context.Background(), tg, steered([]float32{1, 2, 3, 4}, testmodels.EndlessTrips))
		done <- err
	}()
	waitRunning(t, s, tg, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with an endless run = %v, want context.DeadlineExceeded", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || errors.Is(err, scheduler.ErrStopped) {
			t.Errorf("Infer of a run the drain stopped = %v, want context.Canceled (and not ErrStopped: it was admitted)", err)
		}
	case <-time.After(prompt):
		t.Fatalf("the run was not stopped within %s of the drain's end", prompt)
	}
}
