package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// BenchmarkLoneRequest is a lone client (concurrency 1) through the scheduler with the
// daemon's default batching policy, on a session that only copies its input: what the
// scheduler itself adds to a request that has nothing to wait for.
func BenchmarkLoneRequest(b *testing.B) {
	rt := enginetest.New()
	rt.Register("m", sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
		return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, in[0].Float32s())}, nil
	})
	sess, err := rt.Open(context.Background(), "m", engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	tg := &target{sessions: []engine.Session{sess},
		policy: scheduler.Policy{MaxBatchSize: 64, MaxQueueDelay: 2 * time.Millisecond, AdaptiveDelay: true}}
	s := scheduler.New(quiet)
	defer s.Close(context.Background())
	req := rows(1, 2, 3, 4)
	for b.Loop() {
		if _, err := s.Infer(context.Background(), tg, req); err != nil {
			b.Fatal(err)
		}
	}
}
