// Package scheduler sits between the HTTP API and the engine: it decides when, with which other
// requests and on which instance (session) of a model version a request runs. Per model version
// it owns a bounded queue with priority levels, one worker per instance, and the dynamic
// batcher that concatenates compatible requests along dimension 0, runs them once and hands each
// request exactly its rows. It ends a run's context (runctx.go) when every caller of the batch
// has left, when the policy's MaxRunTime passes, or when a drain runs out of time; the engine
// stops the run then. It also keeps the statistics of the statistics extension, and
// reads and checks a request's scheduling parameters (priority, timeout: params.go) so that
// every front end validates them alike, with one sentinel. It does not decode wire formats,
// read the model repository or import ONNX Runtime.
//
// Lock order: Scheduler.mu, then queue.mu, then Stats.mu or runContext.mu (a leaf); none is held
// while a session runs.
//
// Its statistics are read, not pushed: Stats (per target, for the statistics extension) and
// Totals (per model version, for metrics) copy them at the moment they are asked for, so the
// request path keeps only the books it already keeps.
package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Target is a loaded model version: the sessions the scheduler may run its requests on and the
// policy it batches them by. Implementations return the same sessions and policy for as long as
// the target lives, and must be comparable (a pointer): the scheduler keys its queues by target.
type Target interface {
	Instances() []engine.Session
	Policy() Policy
	// Retired reports that the target was replaced or unloaded: the scheduler starts no queue
	// for it, and requests that meet its closed queue get ErrStopped and should re-resolve.
	Retired() bool
}

// Series is implemented by targets that are one generation of a model version that outlives
// them (a version whose files change is reloaded as a new target). Totals sums the statistics
// of a series' targets, forgotten ones included, so that its counts never go backwards.
type Series interface {
	Series() (model, version string)
}

// Policy is how one model version is queued and batched.
type Policy struct {
	// MaxBatchSize > 0 lets the batcher combine requests up to that many rows (dimension 0);
	// 0 runs every request on its own.
	MaxBatchSize int
	// PreferredBatchSizes are batch sizes that run at once, without waiting for MaxQueueDelay.
	PreferredBatchSizes []int
	// MaxQueueDelay is how long the oldest request of a batch may wait for others to join.
	MaxQueueDelay time.Duration
	// AdaptiveDelay dispatches a forming batch before MaxQueueDelay once it holds as many rows
	// as the recent load predicts (the most rows waiting or running since the last dispatch,
	// less those running), so that light load is not delayed and heavy load still batches.
	AdaptiveDelay bool
	// MaxQueueSize bounds the requests waiting (not running); over it requests fail at once
	// with ErrQueueFull. It must be positive: no queue is unbounded.
	MaxQueueSize int
	// PriorityLevels is the number of priority levels (1 is the highest); at least 1.
	PriorityLevels int
	// DefaultPriority is the level of requests that ask for none (priority 0).
	DefaultPriority int
	// DefaultTimeout bounds the time a request may wait in the queue when it sets none;
	// 0 means no bound.
	DefaultTimeout time.Duration
	// MaxRunTime bounds one run (a batch) on an instance; past it the run is stopped and
	// every request of the batch fails with ErrRunTimeout. 0 means no bound.
	MaxRunTime time.Duration
	// ServiceTimes, when set, is what one run takes on one instance by batch size
	// (ServiceTimes[b-1] for b rows), measured by calibration: the batcher then aims for the
	// rows in flight spread over the instances and waits for a batch to grow only while the
	// gain in rows per second pays for the wait (batch.go). MaxQueueDelay stays a hard cap.
	ServiceTimes []time.Duration
	// LatencyBudget bounds, with ServiceTimes, a request's wait and run: no batch is held past
	// what the budget leaves for its run. 0 means none.
	LatencyBudget time.Duration
	// Threads is how many of the node's cores one run of an instance keeps busy (its intra-op
	// threads); each run takes that many from the core budget (SetCores) while it runs. 0 takes
	// none (a run on a GPU).
	Threads int
	// ScaleDownAfter lets the instance count follow the load (scale.go), for a target that
	// implements Scaler and a policy with ServiceTimes: instances that the rows in flight do
	// not keep busy go, one per ScaleDownAfter, down to MinInstances (at least 1), and come back,
	// up to the count the target started with, as soon as the load needs them. 0 keeps the
	// count.
	ScaleDownAfter time.Duration
	MinInstances   int
	// Weight is the version's share of the core budget against other busy versions (cores.go):
	// two busy versions of weights 3 and 1 get core time 3 : 1. Not positive means 1.
	Weight float64
}

// Request is one inference request, validated against the target's signature.
type Request struct {
	Inputs []tensor.Tensor
	// Outputs names the outputs wanted, in order; empty means all in signature order.
	Outputs []string
	// Priority is the level, 1 = highest; 0 = the policy's default.
	Priority int
	// Timeout bounds the time in the queue; 0 = the policy's default.
	Timeout time.Duration
	// Trace, when set, follows the request through the queue and its batch (trace.go).
	Trace Trace
}

// Errors of Infer; the API maps them to statuses with errors.Is.
var (
	// ErrStopped: the scheduler or the model version is shutting down (503).
	ErrStopped = errors.New("model version is shutting down")
	// ErrQueueFull: the queue holds MaxQueueSize requests already (503 with Retry-After).
	ErrQueueFull = errors.New("exceeds maximum queue size")
	// ErrTimeout: the request's timeout passed while it waited (503).
	ErrTimeout = errors.New("request timed out in the queue")
	// ErrInvalidRequest: the request's scheduling parameters are invalid (400): malformed
	// (SetParameters) or out of the model version's range (Infer).
	ErrInvalidRequest = errors.New("invalid scheduling parameters")
	// ErrBatch: the model's outputs could not be split back into requests (500).
	ErrBatch = errors.New("batch output does not match the batch")
	// ErrRunTimeout: the run of the request's batch took longer than Policy.MaxRunTime and was
	// stopped (500: the model, not the server's load, is at fault). The error says the bound:
	// "run exceeded max_run_time 2s".
	ErrRunTimeout = errors.New("run exceeded max_run_time")
)

// errAborted is the cause of the runs stopped because a drain (Forget, Close) ran out of time;
// it matches context.Canceled, as the drain cancelled them.
var errAborted = fmt.Errorf("the model version stopped before the run finished: %w", context.Canceled)

// Scheduler runs requests on model instances.
type Scheduler struct {
	log *slog.Logger

	mu       sync.Mutex
	queues   map[Target]*queue
	draining map[*queue]Target       // forgotten, finishing what they hold; still in Totals
	retired  map[seriesKey]*Snapshot // the sums of forgotten targets, by series
	stopped  bool

	cores *cores // the node-wide core budget every queue's runs share (cores.go)
}

type seriesKey struct{ model, version string }

// New returns a scheduler.
func New(log *slog.Logger) *Scheduler {
	return &Scheduler{log: log, queues: map[Target]*queue{}, draining: map[*queue]Target{}, retired: map[seriesKey]*Snapshot{}, cores: &cores{}}
}

// SetCores sets the node-wide core budget: the runs of all model versions together keep at
// most n cores busy (each takes its Policy.Threads while it runs, and waits its turn when they
// are taken). 0, the default, sets no budget.
func (s *Scheduler) SetCores(n int) { s.cores.setTotal(n) }

// Cores reports the node-wide core budget and its use now.
func (s *Scheduler) Cores() CoreBudget { return s.cores.budget() }

// queueFor returns t's queue, starting it (and its workers) on first use.
func (s *Scheduler) queueFor(t Target) (*queue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, ErrStopped
	}
	q, ok := s.queues[t]
	if !ok {
		if t.Retired() {
			return nil, ErrStopped
		}
		var err error
		if q, err = startQueue(t, s.log, s.cores); err != nil {
			return nil, err
		}
		s.queues[t] = q
	}
	return q, nil
}

// Infer queues req for t, waits for its batch to run, and returns its outputs. Every request
// it admits is counted under its Outcome in t's statistics; one refused with ErrStopped is not
// admitted and not counted. It returns
// early with ctx's error when ctx ends while the request still waits (a client that leaves
// leaves the queue), and with ErrTimeout when the request's timeout passes first. Once a
// request is in a running batch, Infer returns only after the batch, so the caller may reuse
// the inputs' buffers as soon as Infer returns. A run goes on while any request of its batch
// still has its caller; once every one has left (their contexts ended), the run is stopped, so
// that the instance is free for others. A run longer than the policy's MaxRunTime is stopped
// too, and its requests fail with ErrRunTimeout.
func (s *Scheduler) Infer(ctx context.Context, t Target, req *Request) ([]tensor.Tensor, error) {
	q, err := s.queueFor(t)
	if err != nil {
		return nil, err
	}
	return q.infer(ctx, req)
}

// Stats returns a snapshot of t's statistics; a target that never ran has zero counts.
func (s *Scheduler) Stats(t Target) Snapshot {
	s.mu.Lock()
	q := s.queues[t]
	s.mu.Unlock()
	if q == nil {
		return Snapshot{}
	}
	return q.snapshot()
}

// SeriesSnapshot is the statistics of one model version, summed over its generations.
type SeriesSnapshot struct {
	Model, Version string
	Snapshot
}

// Totals returns the statistics of every model version the scheduler has queued requests for,
// sorted by model and version: the sums over each Series' targets, those running and those
// forgotten alike. Counts in successive Totals never decrease. Targets that do not implement
// Series are left out.
func (s *Scheduler) Totals() []SeriesSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sums := make(map[seriesKey]*Snapshot, len(s.retired)+len(s.queues))
	for k, r := range s.retired {
		sum := &Snapshot{}
		sum.add(r)
		sums[k] = sum
	}
	live := func(t Target, q *queue) {
		named, ok := t.(Series)
		if !ok {
			return
		}
		var k seriesKey
		k.model, k.version = named.Series()
		if sums[k] == nil {
			sums[k] = &Snapshot{}
		}
		snap := q.snapshot()
		sums[k].add(&snap)
	}
	for t, q := range s.queues {
		live(t, q)
	}
	for q, t := range s.draining {
		live(t, q)
	}
	out := make([]SeriesSnapshot, 0, len(sums))
	for k, sum := range sums {
		out = append(out, SeriesSnapshot{Model: k.model, Version: k.version, Snapshot: *sum})
	}
	slices.SortFunc(out, func(a, b SeriesSnapshot) int {
		return cmp.Or(strings.Compare(a.Model, b.Model), strings.Compare(a.Version, b.Version))
	})
	return out
}

// Forget drains t's queue (every request already queued still runs), stops its workers and
// drops it; ctx bounds the wait. Callers stop routing new requests to t first.
func (s *Scheduler) Forget(ctx context.Context, t Target) error {
	s.mu.Lock()
	q := s.queues[t]
	delete(s.queues, t)
	if q != nil {
		s.draining[q] = t
	}
	s.mu.Unlock()
	if q == nil {
		return nil
	}
	return s.drain(ctx, t, q)
}

// drain closes a queue that is in s.draining, then moves its statistics to the retired sums in
// the same step that removes it, so that Totals counts them exactly once.
func (s *Scheduler) drain(ctx context.Context, t Target, q *queue) error {
	err := q.close(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.draining, q)
	if named, ok := t.(Series); ok {
		var k seriesKey
		k.model, k.version = named.Series()
		snap := q.stats.Snapshot()
		if s.retired[k] == nil {
			s.retired[k] = &Snapshot{}
		}
		s.retired[k].add(&snap)
	}
	return err
}

// Close refuses new requests, drains every queue and waits until the running requests have
// finished or ctx ends; then in-flight runs are cancelled.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	queues := s.queues
	s.queues = map[Target]*queue{}
	for t, q := range queues {
		s.draining[q] = t
	}
	s.mu.Unlock()
	var errs []error
	for t, q := range queues {
		if err := s.drain(ctx, t, q); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("scheduler drain: %w", err)
	}
	return nil
}
