package engine

import (
	"context"
	"errors"
	"time"
)

// Isolation modes: where the sessions of a model version run.
const (
	// IsolationProcess runs each model version's sessions in a worker process of its own, so
	// that a native crash, an unbounded allocation or a run that never ends takes down that
	// worker, never the daemon.
	IsolationProcess = "process"
	// IsolationNone runs every session inside the daemon's own process (the first wave's
	// behaviour, kept for comparison and for platforms without workers).
	IsolationNone = "none"
)

// Isolator starts the hosts that model versions load into.
type Isolator interface {
	// Start starts a host for one model version. It returns once the host can take Inspect
	// and Open calls, or fails (ctx ended, the worker could not start).
	Start(ctx context.Context, opts HostOptions) (Host, error)
}

// HostOptions bound one host.
type HostOptions struct {
	// Name identifies the host in logs and reasons ("model/version").
	Name string
	// MemoryLimit caps, in bytes, the memory the host's process may allocate; 0 leaves it
	// unbounded. A host in the daemon's own process cannot be bounded and ignores it.
	MemoryLimit int64
	// Threads is how many cores the host's sessions are given (their intra-op threads in all);
	// 0 leaves it to the runtime.
	Threads int
	// GPU says the host's sessions run on a GPU (ProviderCUDA). CUDA reserves address space
	// far beyond what it uses, so an address-space or data limit cannot bound such a worker.
	GPU bool
	// OnEvent, if set, is called (from the host's own goroutine; it must not block) for every
	// change of the host's process: a worker that started, exited or was given up.
	OnEvent func(HostEvent)
}

// Host is where the sessions of one model version live: a worker process (IsolationProcess)
// or the daemon's own process (IsolationNone). Inspect and Open run inside it, so a model file
// that crashes ONNX Runtime while it is read crashes the host, not the caller.
//
// A worker that dies is started again, and the sessions opened on it are opened again in the
// new worker (without warmup); a Run in flight when it died fails with an error wrapping
// ErrWorker that says why (signal, out of memory, deadline). A host whose worker fails
// repeatedly gives up: Failed is closed, Err says why, and every call fails from then on.
type Host interface {
	Runtime
	// Status reports the host's process as it is now.
	Status() HostStatus
	// Failed is closed once the host has given up.
	Failed() <-chan struct{}
	// Err is why the host gave up; nil while it has not.
	Err() error
	// Close ends the host: a worker process exits, returning everything ONNX Runtime held,
	// and sessions still open fail with ErrClosed. It is safe to call more than once.
	Close() error
}

// HostStatus is what /health and the repository index show of a host.
type HostStatus struct {
	// PID is the worker's process id; 0 for a host in the daemon's process or a worker that
	// is not running.
	PID int
	// Restarts counts the times the worker was started again after it died.
	Restarts int
	// LastExit is why the worker last ended ("killed by SIGFPE", "out of memory at the
	// 1.0 GiB limit", "run exceeded 30s"); empty if it never did.
	LastExit string
	// RSSBytes is the worker's resident memory; 0 when unknown or in-process.
	RSSBytes uint64
}

// HostEvent reports a change of a host's worker.
type HostEvent struct {
	Kind HostEventKind
	// PID is the worker the event is about.
	PID int
	// Reason says why a worker exited or the host gave up; Class is its class, a bounded set
	// fit for a metric label (see the ExitClass constants).
	Reason string
	Class  string
	// Uptime is how long the worker that exited ran.
	Uptime time.Duration
}

// HostEventKind is what happened to a host's worker.
type HostEventKind int

// Kinds of HostEvent.
const (
	// WorkerStarted: a worker process is up and serving.
	WorkerStarted HostEventKind = iota
	// WorkerExited: a worker process ended without being asked to (Reason says how).
	WorkerExited
	// HostFailed: the host gave up after repeated worker failures.
	HostFailed
)

// Classes of worker exits: the values of the reason label of inferd_worker_restarts_total.
const (
	ExitSignal   = "signal"   // killed by a signal the worker did not ask for (SIGSEGV, SIGFPE, SIGABRT)
	ExitOOM      = "oom"      // ran out of the memory it may use
	ExitDeadline = "deadline" // killed because a load, warmup or run passed its deadline
	ExitError    = "exit"     // exited on its own with a non-zero status
)

// ExitClasses lists every exit class, for metrics that want each label present from start.
func ExitClasses() []string { return []string{ExitSignal, ExitOOM, ExitDeadline, ExitError} }

// ErrWorker is wrapped by errors of a worker that died or was killed while it held a call;
// the message says why.
var ErrWorker = errors.New("model worker failed")
