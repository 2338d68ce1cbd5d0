// Package engine is the contract between inferd and an inference runtime: what a loaded model
// looks like (Signature), how it is opened (Options) and how it runs (Session). It holds no
// runtime itself and imports no cgo: the ONNX Runtime implementation lives in engine/ort (the
// only importer of onnxruntime_go), and a fake for tests in engine/enginetest. No ORT type
// crosses this package, so an out-of-process engine (a worker process per model) can replace the
// in-process one without touching the scheduler or the model repository.
package engine

import (
	"context"
	"errors"

	"github.com/inferd/inferd/tensor"
)

// Signature is a model's inputs and outputs as the model file declares them, with -1 for a
// dimension of any size.
type Signature struct {
	Inputs  []tensor.Spec
	Outputs []tensor.Spec
}

// Input returns the input spec called name.
func (s Signature) Input(name string) (tensor.Spec, bool) { return find(s.Inputs, name) }

// Output returns the output spec called name.
func (s Signature) Output(name string) (tensor.Spec, bool) { return find(s.Outputs, name) }

func find(specs []tensor.Spec, name string) (tensor.Spec, bool) {
	for _, s := range specs {
		if s.Name == name {
			return s, true
		}
	}
	return tensor.Spec{}, false
}

// Execution providers a session can report.
const (
	ProviderCPU  = "CPUExecutionProvider"
	ProviderCUDA = "CUDAExecutionProvider"
)

// Options choose how a session is opened.
type Options struct {
	// IntraOpThreads is the number of threads one Run may use; 0 lets the runtime decide.
	IntraOpThreads int
	// InterOpThreads is the number of threads for parallel graph branches; 0 lets the runtime
	// decide.
	InterOpThreads int
	// Provider is ProviderCPU (the default when empty) or ProviderCUDA.
	Provider string
	// DeviceID is the GPU index for ProviderCUDA.
	DeviceID int
	// GPUMemLimit caps, in bytes, the memory arena of a ProviderCUDA session on its GPU (weights
	// and activations); 0 leaves it unbounded. The arena grows only as the session needs, so
	// the cap is what placement admitted, not what the session takes at once.
	GPUMemLimit int64
}

// Session is one loaded instance of a model. Run may be called from one goroutine at a time per
// session; callers that want parallelism open several sessions (instances).
type Session interface {
	// Signature is the model's declared inputs and outputs.
	Signature() Signature
	// Provider is the execution provider the session actually runs on.
	Provider() string
	// Run feeds inputs (already validated against Signature: every input present, datatypes
	// and shapes accepted, data sizes checked) and returns the outputs named, in that order, or
	// every output in signature order when names is empty. Outputs carry the shapes the model
	// produced.
	Run(ctx context.Context, inputs []tensor.Tensor, names []string) ([]tensor.Tensor, error)
	// Close releases the session. It is safe to call more than once.
	Close() error
}

// Runtime opens sessions.
type Runtime interface {
	// Inspect reads a model file's signature without keeping a session. A host in another
	// process gives up when ctx ends; the in-process runtime reads the file to the end.
	Inspect(ctx context.Context, path string) (Signature, error)
	// Open loads a model file into a new session.
	Open(ctx context.Context, path string, opts Options) (Session, error)
}

// Errors an engine may wrap; callers match them with errors.Is.
var (
	// ErrInvalidModel: the file is not a model the runtime can load (corrupt, unsupported
	// operator or datatype).
	ErrInvalidModel = errors.New("invalid model")
	// ErrRun: the runtime failed while running a validated request.
	ErrRun = errors.New("inference failed")
	// ErrClosed: the session was closed.
	ErrClosed = errors.New("session closed")
	// ErrProviderUnavailable: the execution provider asked for (CUDA) cannot be had from the
	// runtime's library or the machine. An engine never falls back by itself: the caller
	// decides whether another provider will do.
	ErrProviderUnavailable = errors.New("execution provider unavailable")
	// ErrOutOfMemory: the runtime could not allocate what a load or a run needed (a worker's
	// memory limit, or the machine's).
	ErrOutOfMemory = errors.New("out of memory")
)
