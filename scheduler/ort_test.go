package scheduler_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// TestConcurrentClientsOnRealORT runs many concurrent clients with different inputs and batch
// sizes through the batcher onto real ONNX Runtime sessions, and checks every response against
// the same request computed alone by an independent reference.
func TestConcurrentClientsOnRealORT(t *testing.T) {
	rt, err := ort.New(ort.RuntimeOptions{}, quiet)
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	defer rt.Close()
	path := filepath.Join(t.TempDir(), "mlp.onnx")
	if err := os.WriteFile(path, testmodels.MLP(), 0o644); err != nil {
		t.Fatal(err)
	}
	tg := &target{policy: scheduler.Policy{MaxBatchSize: 32, MaxQueueDelay: 2 * time.Millisecond, PreferredBatchSizes: []int{16}}}
	for range 2 {
		s, err := rt.Open(context.Background(), path, engine.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		tg.sessions = append(tg.sessions, s)
	}
	s := scheduler.New(quiet)
	defer s.Close(context.Background())

	const clients, perClient = 24, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for range perClient {
				n := 1 + rng.IntN(5)
				x := make([]float32, 4*n)
				for i := range x {
					x[i] = rng.Float32()*4 - 2
				}
				req := &scheduler.Request{Inputs: []tensor.Tensor{tensor.FromFloat32s("input", []int64{int64(n), 4}, x)}}
				out, err := s.Infer(context.Background(), tg, req)
				if err != nil {
					errs <- err
					return
				}
				want := testmodels.MLPForward(x)
				got := out[0].Float32s()
				if len(got) != len(want) || out[0].Shape[0] != int64(n) {
					t.Errorf("client %d: %d values of shape %v for %d rows", c, len(got), out[0].Shape, n)
					return
				}
				for i := range want {
					if math.Abs(float64(got[i]-want[i])) > 1e-5 {
						t.Errorf("client %d: output[%d] = %v, want %v", c, i, got[i], want[i])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.Stats(tg)
	if st.Success.Count != clients*perClient {
		t.Errorf("success count %d, want %d", st.Success.Count, clients*perClient)
	}
	if st.ExecutionCount >= st.Success.Count {
		t.Errorf("%d executions for %d requests: nothing was batched", st.ExecutionCount, st.Success.Count)
	}
	t.Logf("%d requests (%d rows) in %d executions", st.Success.Count, st.InferenceCount, st.ExecutionCount)
}
