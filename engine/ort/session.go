package ort

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	onnx "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Session is one ORT session of a model: an engine.Session.
//
// It is created with every output of the model, because onnxruntime_go fixes a session's
// output names when it is created: each Run computes all outputs and returns those asked for.
// (One session per output set would load the weights once per set; models whose extra outputs
// cost much are better served by a model that only has the outputs wanted.)
//
// Run is meant for one goroutine at a time, as engine.Session says; a mutex serializes callers
// that break that rule so they cannot corrupt the session, and Close waits for a Run in
// progress.
type Session struct {
	sig      engine.Signature
	io       modelIO
	provider string
	copies   *atomic.Uint64 // the runtime's InputCopies

	mu      sync.Mutex
	sess    *onnx.DynamicAdvancedSession // nil once closed
	runOpts *onnx.RunOptions
	// unplaceable is set once a run failed into planned output memory and succeeded without:
	// the model's declared output dimensions do not hold.
	unplaceable bool
}

var _ engine.Session = (*Session)(nil)

// Open loads the model at path into a new session with graph optimizations on, the thread
// counts of opts when they are above zero (inter-op threads above one also switch ORT to
// parallel execution of independent nodes, without which they are unused), and the execution
// provider of opts. A CUDA provider that cannot be had is an error wrapping
// ErrProviderUnavailable; a model that does not load wraps engine.ErrInvalidModel.
func (r *Runtime) Open(ctx context.Context, path string, opts engine.Options) (engine.Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := r.hold(); err != nil {
		return nil, err
	}
	s, err := r.open(path, opts)
	if err != nil {
		releaseEnv()
		return nil, err
	}
	s.copies = &r.inputCopies
	r.logger.Debug("onnxruntime session opened", "path", path, "provider", s.provider,
		"intra_op_threads", opts.IntraOpThreads, "inter_op_threads", opts.InterOpThreads)
	return s, nil
}

func (r *Runtime) open(path string, opts engine.Options) (*Session, error) {
	provider := opts.Provider
	if provider == "" {
		provider = engine.ProviderCPU
	}
	if provider != engine.ProviderCPU && provider != engine.ProviderCUDA {
		return nil, fmt.Errorf("%w: unknown provider %q", ErrProviderUnavailable, provider)
	}
	// The signature comes from a separate CPU session: the binding reads names and types only
	// from a file, and a model that does not load on the CPU is the model's fault, not the GPU's.
	sig, io, err := r.inspected.get(path)
	if err != nil {
		return nil, err
	}
	so, err := sessionOptions(opts, provider)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	sess, err := onnx.NewDynamicAdvancedSession(path, io.inputNames, io.outputNames, so)
	if err != nil {
		if provider == engine.ProviderCUDA {
			return nil, fmt.Errorf("%w: %s on CUDA device %d: %w (%s)", ErrProviderUnavailable, path, opts.DeviceID, err, cudaHint)
		}
		return nil, fmt.Errorf("%w: %s: %w", engine.ErrInvalidModel, path, err)
	}
	runOpts, err := onnx.NewRunOptions()
	if err != nil {
		sess.Destroy()
		return nil, fmt.Errorf("ort: run options: %w", err)
	}
	return &Session{sig: sig, io: io, provider: provider, sess: sess, runOpts: runOpts}, nil
}

func sessionOptions(opts engine.Options, provider string) (*onnx.SessionOptions, error) {
	so, err := onnx.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	fail := func(err error) (*onnx.SessionOptions, error) {
		so.Destroy()
		return nil, fmt.Errorf("ort: session options: %w", err)
	}
	if err := so.SetGraphOptimizationLevel(onnx.GraphOptimizationLevelEnableAll); err != nil {
		return fail(err)
	}
	if opts.IntraOpThreads > 0 {
		if err := so.SetIntraOpNumThreads(opts.IntraOpThreads); err != nil {
			return fail(err)
		}
	}
	if opts.InterOpThreads > 0 {
		if err := so.SetInterOpNumThreads(opts.InterOpThreads); err != nil {
			return fail(err)
		}
		if opts.InterOpThreads > 1 {
			if err := so.SetExecutionMode(onnx.ExecutionModeParallel); err != nil {
				return fail(err)
			}
		}
	}
	if provider == engine.ProviderCUDA {
		if err := appendCUDA(so, opts); err != nil {
			so.Destroy()
			return nil, err
		}
	}
	return so, nil
}

func appendCUDA(so *onnx.SessionOptions, opts engine.Options) error {
	if opts.DeviceID < 0 || opts.GPUMemLimit < 0 {
		return fmt.Errorf("%w: CUDA device %d with memory limit %d: both must be >= 0",
			ErrProviderUnavailable, opts.DeviceID, opts.GPUMemLimit)
	}
	fail := func(err error) error {
		return fmt.Errorf("%w: CUDA device %d: %w (%s)", ErrProviderUnavailable, opts.DeviceID, err, cudaHint)
	}
	cuda, err := onnx.NewCUDAProviderOptions()
	if err != nil {
		return fail(err)
	}
	defer cuda.Destroy()
	// ORT loads the provider library here already, to parse the options.
	if err := cuda.Update(cudaProviderOptions(opts)); err != nil {
		return fail(err)
	}
	if err := so.AppendExecutionProviderCUDA(cuda); err != nil {
		return fail(err)
	}
	return nil
}

// cudaHint says where a CUDA failure usually comes from.
const cudaHint = "ORT loads " + CUDAProviderLibrary + " and " + sharedProviderLibrary +
	" from the directory of libonnxruntime.so (make deps-cuda), and they need CUDA 13, cuDNN 9 and an NVIDIA GPU; see docs/gpu.md"

// cudaProviderOptions are the CUDA execution provider's settings for opts (the keys of ORT's
// OrtCUDAProviderOptionsV2). The arena grows by what is requested rather than ORT's default of
// the next power of two, so that a session stays near what it uses and its gpu_mem_limit (what
// placement admitted it for) is not overshot by one doubling.
func cudaProviderOptions(opts engine.Options) map[string]string {
	m := map[string]string{
		"device_id":             strconv.Itoa(opts.DeviceID),
		"arena_extend_strategy": "kSameAsRequested",
	}
	if opts.GPUMemLimit > 0 {
		m["gpu_mem_limit"] = strconv.FormatInt(opts.GPUMemLimit, 10)
	}
	return m
}

// Signature is the model's declared inputs and outputs.
func (s *Session) Signature() engine.Signature { return s.sig }

// Provider is the execution provider the session was opened with (engine.ProviderCPU or
// engine.ProviderCUDA); it is never a silent substitute for the one asked for.
func (s *Session) Provider() string { return s.provider }

// Close releases the session and its hold on the ORT environment, waiting for a Run in
// progress. It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.sess == nil {
		s.mu.Unlock()
		return nil
	}
	s.sess.Destroy()
	s.runOpts.Destroy()
	s.sess, s.runOpts = nil, nil
	s.mu.Unlock()
	trimNativeHeap()
	return releaseEnv()
}

// Run feeds inputs to the model and returns the outputs named (all, in signature order, when
// names is empty). The caller validates inputs against the signature (models does); Run checks
// again only what would otherwise crash the process or make ORT read past a buffer (see the
// package comment), with errors that wrap both engine.ErrRun and ErrUnsupportedInput. An input
// the model does not have is ignored, and of a name given twice the first is used. Fixed-size
// input data is handed to ORT without copying (unless misaligned, or BOOL bytes other than 0
// and 1: Runtime.InputCopies counts those); outputs are in Go memory owned by the caller.
// When ctx ends, a run in progress is stopped (ORT's terminate flag, which ORT reads between
// two nodes and between the iterations of a Loop) and Run returns an error that wraps both
// ctx.Err() and context.Cause(ctx), not engine.ErrRun: the run was stopped, it did not fail. The
// session serves the next Run as usual.
func (s *Session) Run(ctx context.Context, inputs []tensor.Tensor, names []string) ([]tensor.Tensor, error) {
	return s.RunInto(ctx, inputs, names, nil)
}

// RunInto is Run with the outputs written where place says: for each output named whose size
// is known before the run (see outputPlans), place(name, n) gives n bytes, aligned for the
// element type, that ORT writes the output into and that the output tensor's Data then is;
// place may give nil to leave that output to ORT. An output ORT allocates is copied into Go
// memory as with Run. A model whose declared dimensions lie about what it produces fails a
// run into planned memory: the run is made again with ORT allocating, and this session places
// nothing from then on.
func (s *Session) RunInto(ctx context.Context, inputs []tensor.Tensor, names []string, place func(output string, n int) []byte) (out []tensor.Tensor, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return nil, engine.ErrClosed
	}
	if ctx.Err() != nil {
		return nil, stopped(ctx)
	}
	picked, err := s.pickOutputs(names)
	if err != nil {
		return nil, err
	}
	ordered, err := s.orderInputs(inputs)
	if err != nil {
		return nil, err
	}

	// Every ORT value made below is destroyed on the way out, whatever happens; Run fills the
	// nil entries of outs with values it allocated, even when it fails part way. A panic in the
	// binding becomes an error rather than taking the daemon down.
	in := make([]onnx.Value, len(ordered))
	outs := make([]onnx.Value, len(s.sig.Outputs))
	defer func() {
		for _, v := range append(in, outs...) {
			destroy(v)
		}
		if p := recover(); p != nil {
			out, err = nil, fmt.Errorf("%w: onnxruntime_go panicked: %v", engine.ErrRun, p)
		}
	}()
	for i, t := range ordered {
		if in[i], err = inputValue(t, s.copies); err != nil {
			return nil, fmt.Errorf("%w: %w", engine.ErrRun, err)
		}
	}
	if s.unplaceable {
		place = nil
	}
	placedAny := false
	for i, spec := range s.sig.Outputs {
		p := place
		if p != nil && !slices.Contains(picked, i) {
			p = nil // ORT allocates what nobody asked for
		}
		var placed bool
		if outs[i], placed, err = preallocate(spec, s.io.outputShapes[i], ordered, p); err != nil {
			return nil, fmt.Errorf("%w: output %q: %w", engine.ErrRun, spec.Name, err)
		}
		placedAny = placedAny || placed
	}
	runErr := s.runLocked(ctx, in, outs)
	if runErr != nil && placedAny && ctx.Err() == nil {
		// Perhaps the plan was wrong; try once more as Run would have.
		for i, spec := range s.sig.Outputs {
			destroy(outs[i])
			if outs[i], _, err = preallocate(spec, s.io.outputShapes[i], ordered, nil); err != nil {
				return nil, fmt.Errorf("%w: output %q: %w", engine.ErrRun, spec.Name, err)
			}
		}
		if runErr = s.runLocked(ctx, in, outs); runErr == nil {
			s.unplaceable = true
		}
	}
	// The inputs' Go memory is read by ORT during the run; keep it reachable until here.
	runtime.KeepAlive(ordered)
	if runErr != nil {
		if ctx.Err() != nil {
			return nil, stopped(ctx)
		}
		return nil, fmt.Errorf("%w: %w", engine.ErrRun, runErr)
	}
	out = make([]tensor.Tensor, len(picked))
	for i, idx := range picked {
		t, err := outputTensor(s.sig.Outputs[idx], outs[idx])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", engine.ErrRun, err)
		}
		out[i] = t
	}
	return out, nil
}

// stoppedError is the error of a run whose context ended: it reads as the context's cause
// and matches both the cause and ctx.Err() (context.Canceled or context.DeadlineExceeded).
type stoppedError struct{ cause, err error }

func (e *stoppedError) Error() string   { return "ort: run stopped: " + e.cause.Error() }
func (e *stoppedError) Unwrap() []error { return []error{e.cause, e.err} }

// stopped is the error of a run whose ctx has ended.
func stopped(ctx context.Context) error {
	return &stoppedError{cause: context.Cause(ctx), err: ctx.Err()}
}

// destroy releases v, which may be nil or, when the binding failed to convert an output, a
// typed nil pointer.
func destroy(v onnx.Value) {
	if v == nil {
		return
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return
	}
	v.Destroy()
}

// runLocked runs the session with a terminate flag raised when ctx ends.
func (s *Session) runLocked(ctx context.Context, in, outs []onnx.Value) error {
	if ctx.Done() == nil {
		return s.sess.RunWithOptions(in, outs, s.runOpts)
	}
	terminated := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(terminated)
		s.runOpts.Terminate()
	})
	err := s.sess.RunWithOptions(in, outs, s.runOpts)
	if !stop() {
		// The flag was (or is being) raised: lower it for the next run once it is up.
		<-terminated
		s.runOpts.UnsetTerminate()
	}
	return err
}

// pickOutputs maps names to indices of s.sig.Outputs.
func (s *Session) pickOutputs(names []string) ([]int, error) {
	if len(names) == 0 {
		all := make([]int, len(s.sig.Outputs))
		for i := range all {
			all[i] = i
		}
		return all, nil
	}
	picked := make([]int, len(names))
	for i, name := range names {
		idx := -1
		for j, spec := range s.sig.Outputs {
			if spec.Name == name {
				idx = j
				break
			}
		}
		if idx < 0 {
			return nil, fmt.Errorf("%w: %w: model has no output %q", engine.ErrRun, ErrUnsupportedInput, name)
		}
		picked[i] = idx
	}
	return picked, nil
}

// orderInputs returns inputs in the session's input order after the guards Run keeps.
func (s *Session) orderInputs(inputs []tensor.Tensor) ([]*tensor.Tensor, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %w: %s", engine.ErrRun, ErrUnsupportedInput, fmt.Sprintf(format, args...))
	}
	ordered := make([]*tensor.Tensor, len(s.sig.Inputs))
	for i, spec := range s.sig.Inputs {
		j := slices.IndexFunc(inputs, func(t tensor.Tensor) bool { return t.Name == spec.Name })
		if j < 0 {
			return nil, bad("input %q is missing", spec.Name)
		}
		t := &inputs[j]
		// The rank matters to the output shapes planned from input dimensions, the datatype
		// and the data's length to how many bytes ORT reads.
		if t.DataType != spec.DataType || len(t.Shape) != len(spec.Shape) {
			return nil, bad("input %q is %s %s, model expects %s %s", t.Name,
				t.DataType, tensor.FormatShape(t.Shape), spec.DataType, tensor.FormatShape(spec.Shape))
		}
		if err := t.Check(); err != nil {
			return nil, bad("%v", err)
		}
		if t.NumElements() == 0 {
			// Some ORT 1.29 kernels abort the process on an empty batch.
			return nil, bad("input %q has no elements (shape %s)", t.Name, tensor.FormatShape(t.Shape))
		}
		ordered[i] = t
	}
	return ordered, nil
}
