// Package scheduler sits between the HTTP API and the engine: it decides when and on which
// instance (session) of a model version a request runs. It owns the per-version instance pools
// and, in later work, the queues, the dynamic batcher, priorities and timeouts. It does not
// decode wire formats, read the model repository or import ONNX Runtime.
//
// Today every request runs on its own on the first idle instance of its model version; callers
// block (honouring their context) while every instance is busy.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Target is a loaded model version: the sessions the scheduler may run its requests on.
// Implementations return the same sessions for as long as the target lives, and must be
// comparable (a pointer), since the scheduler keys its pools by target.
type Target interface {
	Instances() []engine.Session
}

// ErrStopped is returned for requests that arrive after Close.
var ErrStopped = errors.New("scheduler stopped")

// Scheduler runs requests on model instances.
type Scheduler struct {
	log *slog.Logger

	mu      sync.Mutex
	pools   map[Target]*pool
	stopped bool
	active  sync.WaitGroup
}

// New returns a scheduler.
func New(log *slog.Logger) *Scheduler {
	return &Scheduler{log: log, pools: map[Target]*pool{}}
}

// pool hands out a target's idle sessions.
type pool struct {
	idle chan engine.Session
}

func (s *Scheduler) poolFor(t Target) (*pool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, ErrStopped
	}
	p, ok := s.pools[t]
	if !ok {
		sessions := t.Instances()
		p = &pool{idle: make(chan engine.Session, len(sessions))}
		for _, sess := range sessions {
			p.idle <- sess
		}
		s.pools[t] = p
	}
	s.active.Add(1)
	return p, nil
}

// Infer runs one request on an idle instance of t and returns the outputs named (all, in
// signature order, when names is empty). The inputs must already be validated against the
// target's signature.
func (s *Scheduler) Infer(ctx context.Context, t Target, inputs []tensor.Tensor, names []string) ([]tensor.Tensor, error) {
	p, err := s.poolFor(t)
	if err != nil {
		return nil, err
	}
	defer s.active.Done()
	if cap(p.idle) == 0 {
		return nil, fmt.Errorf("%w: model version has no instances", ErrStopped)
	}
	var sess engine.Session
	select {
	case sess = <-p.idle:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { p.idle <- sess }()
	return sess.Run(ctx, inputs, names)
}

// Forget drops the pool of a target that is being unloaded, once its in-flight requests have
// finished. New requests for it get a fresh pool, so callers stop routing to it first.
func (s *Scheduler) Forget(t Target) {
	s.mu.Lock()
	delete(s.pools, t)
	s.mu.Unlock()
}

// Close refuses new requests and waits until the running ones have finished or ctx ends.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("scheduler drain: %w", ctx.Err())
	}
}
