// Package enginetest is an in-memory engine.Runtime for tests of the packages above the engine
// (models, scheduler, api, daemon), so that they run without ONNX Runtime.
//
// Models are registered by path with a signature and a Go function that computes the outputs.
// Knobs make Inspect or Open fail for a path, count calls, and hold every Run at a gate until a
// test releases it (for drain and cancellation tests). Everything is deterministic and safe for
// concurrent use. It must not import onnxruntime_go or any package that does.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Func computes a model's outputs from its inputs, given in signature order. It returns outputs
// with their names set (any order, any subset the test needs); Run picks the ones asked for.
type Func func(inputs []tensor.Tensor) ([]tensor.Tensor, error)

// ErrConcurrentRun is returned by a session's Run when another Run of the same session is in
// progress: engine.Session allows one goroutine at a time, and the fake reports callers that
// break the rule instead of serializing them.
var ErrConcurrentRun = errors.New("enginetest: concurrent Run on one session")

type model struct {
	sig engine.Signature
	fn  Func
}

// Runtime is the fake engine.Runtime. The zero value is not usable; call New.
type Runtime struct {
	mu         sync.Mutex
	models     map[string]model
	inspectErr map[string]error
	openErr    map[string]error
	gate       *Gate
	opens      int
	closes     int
	runs       int
	opened     []engine.Options
}

var _ engine.Runtime = (*Runtime)(nil)

// New returns a runtime with no models.
func New() *Runtime {
	return &Runtime{
		models:     map[string]model{},
		inspectErr: map[string]error{},
		openErr:    map[string]error{},
	}
}

// Register adds (or replaces) the model at path. Sessions already open keep the old one.
func (r *Runtime) Register(path string, sig engine.Signature, fn Func) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.models[path] = model{sig: sig, fn: fn}
}

// FailInspect makes Inspect of path return err (nil clears it).
func (r *Runtime) FailInspect(path string, err error) { r.setErr(r.inspectErr, path, err) }

// FailOpen makes Open of path return err (nil clears it).
func (r *Runtime) FailOpen(path string, err error) { r.setErr(r.openErr, path, err) }

func (r *Runtime) setErr(m map[string]error, path string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(m, path)
		return
	}
	m[path] = err
}

// Hold makes every Run that starts from now on wait at the returned gate until the gate is
// released or the Run's context ends. A second Hold replaces the first gate for new Runs.
func (r *Runtime) Hold() *Gate {
	g := &Gate{entered: make(chan string), release: make(chan struct{})}
	r.mu.Lock()
	r.gate = g
	r.mu.Unlock()
	return g
}

// Opens is the number of successful Opens.
func (r *Runtime) Opens() int { r.mu.Lock(); defer r.mu.Unlock(); return r.opens }

// Closes is the number of sessions closed (each counted once).
func (r *Runtime) Closes() int { r.mu.Lock(); defer r.mu.Unlock(); return r.closes }

// OpenedWith returns the options of every successful Open, in order.
func (r *Runtime) OpenedWith() []engine.Options {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]engine.Options(nil), r.opened...)
}

// Runs is the number of Runs started on open sessions.
func (r *Runtime) Runs() int { r.mu.Lock(); defer r.mu.Unlock(); return r.runs }

// Inspect returns the registered signature of path. An unknown path is an error wrapping
// engine.ErrInvalidModel and os.ErrNotExist.
func (r *Runtime) Inspect(_ context.Context, path string) (engine.Signature, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.inspectErr[path]; err != nil {
		return engine.Signature{}, err
	}
	m, ok := r.models[path]
	if !ok {
		return engine.Signature{}, notFound(path)
	}
	return m.sig, nil
}

// Open returns a session of the model at path, reporting opts.Provider (engine.ProviderCPU when
// empty) as its provider.
func (r *Runtime) Open(ctx context.Context, path string, opts engine.Options) (engine.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.openErr[path]; err != nil {
		return nil, err
	}
	m, ok := r.models[path]
	if !ok {
		return nil, notFound(path)
	}
	provider := opts.Provider
	if provider == "" {
		provider = engine.ProviderCPU
	}
	r.opens++
	r.opened = append(r.opened, opts)
	return &Session{rt: r, path: path, model: m, provider: provider}, nil
}

func notFound(path string) error {
	return fmt.Errorf("%w: enginetest: no model registered at %s: %w", engine.ErrInvalidModel, path, os.ErrNotExist)
}

// Gate holds Runs; see Runtime.Hold.
type Gate struct {
	entered chan string
	release chan struct{}
	once    sync.Once
}

// Entered delivers the model path of each held Run as it reaches the gate. Reading it is
// optional: a Run that nobody sees enter still waits for Release.
func (g *Gate) Entered() <-chan string { return g.entered }

// Release lets every held Run (and every later one at this gate) continue. It is safe to call
// more than once.
func (g *Gate) Release() { g.once.Do(func() { close(g.release) }) }

func (g *Gate) wait(ctx context.Context, path string) error {
	select {
	case g.entered <- path:
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Session is the fake engine.Session.
type Session struct {
	rt       *Runtime
	path     string
	model    model
	provider string
	busy     atomic.Bool
	closed   atomic.Bool
}

var _ engine.Session = (*Session)(nil)

// Signature is the registered signature.
func (s *Session) Signature() engine.Signature { return s.model.sig }

// Provider is the provider asked for at Open.
func (s *Session) Provider() string { return s.provider }

// Close marks the session closed; later Runs return engine.ErrClosed. Safe to call twice.
func (s *Session) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.rt.mu.Lock()
	s.rt.closes++
	s.rt.mu.Unlock()
	return nil
}

// Run checks that every input of the signature is given once, waits at the runtime's gate if
// one is held, calls the model's Func with the inputs in signature order, and returns the
// outputs named (all of the signature's, in its order, when names is empty).
func (s *Session) Run(ctx context.Context, inputs []tensor.Tensor, names []string) ([]tensor.Tensor, error) {
	if s.closed.Load() {
		return nil, engine.ErrClosed
	}
	if !s.busy.CompareAndSwap(false, true) {
		return nil, ErrConcurrentRun
	}
	defer s.busy.Store(false)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.rt.mu.Lock()
	s.rt.runs++
	gate := s.rt.gate
	s.rt.mu.Unlock()
	if gate != nil {
		if err := gate.wait(ctx, s.path); err != nil {
			return nil, err
		}
	}
	ordered, err := s.order(inputs)
	if err != nil {
		return nil, err
	}
	outs, err := s.model.fn(ordered)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", engine.ErrRun, err)
	}
	if len(names) == 0 {
		for _, spec := range s.model.sig.Outputs {
			names = append(names, spec.Name)
		}
	}
	picked := make([]tensor.Tensor, len(names))
	for i, name := range names {
		found := false
		for _, t := range outs {
			if t.Name == name {
				picked[i], found = t, true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: enginetest: output %q not produced", engine.ErrRun, name)
		}
	}
	return picked, nil
}

func (s *Session) order(inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	ordered := make([]tensor.Tensor, len(s.model.sig.Inputs))
	for i, spec := range s.model.sig.Inputs {
		n := 0
		for _, t := range inputs {
			if t.Name == spec.Name {
				ordered[i] = t
				n++
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("%w: enginetest: input %q given %d times", engine.ErrRun, spec.Name, n)
		}
	}
	if len(inputs) != len(ordered) {
		return nil, fmt.Errorf("%w: enginetest: %d inputs for %d model inputs", engine.ErrRun, len(inputs), len(ordered))
	}
	return ordered, nil
}
