package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// DefaultMaxQueueSize bounds a queue whose policy sets no size.
const DefaultMaxQueueSize = 1024

// queue is one model version's waiting requests and the workers (one per instance) that batch
// and run them.
type queue struct {
	policy Policy
	log    *slog.Logger
	stats  *Stats
	cores  *cores   // the node's core budget, shared with every queue
	acct   *account // this queue's share of it (Policy.Weight)
	// abort stops, once, the runs in flight and those to come, when a drain has run out of time.
	abort func()
	// runTimeout is the cause of a run stopped by policy.MaxRunTime (it wraps ErrRunTimeout).
	runTimeout error
	workers    sync.WaitGroup

	instances []*instance // guarded by mu once the queue runs: autoscaling changes them
	started   int         // instances started so far (instance.index)
	scale     scaling     // scale.go
	// limit is the most rows one batch may hold (batchLimit).
	limit int64
	// model and version name the target's series, for traces (BatchInfo).
	model, version string

	mu       sync.Mutex
	levels   [][]*pending  // FIFO per priority level; levels[0] is priority 1
	waiting  int           // requests in levels
	rows     int64         // batch rows of the requests in levels
	running  int64         // batch rows being run
	runningN int           // requests in the batches being run
	peak     int64         // most rows waiting or running at once since the last dispatch
	peaks    []int64       // peak at the last few dispatches (batch.go), a ring
	peakAt   int           // next slot of peaks to overwrite
	timed    int           // waiting requests that have a deadline
	changed  chan struct{} // closed and replaced whenever the queue changes
	closing  bool
	aborted  bool          // abort was called: runs stop at once
	finished chan struct{} // closed when every worker has exited
}

// instance is one session and the state its worker and direct runs share under queue.mu.
type instance struct {
	sess engine.Session
	// index numbers the queue's instances in the order they started (traces name it); one
	// that autoscaling adds takes the next number
	index int
	busy  bool // running a batch, taken by its worker or by a caller (queue.push)
	// retiring: autoscaling told it to go (scale.go); it takes no batch, and its worker exits
	// once it is free
	retiring bool
	// ctx is the context of the instance's runs; while a batch runs, gen is its run's
	// generation of ctx and live counts the requests of the batch whose callers still wait
	// (whose contexts have not ended): the last to leave stops the run.
	ctx  *runContext
	gen  uint64
	live int
}

// pending is a request in the queue.
type pending struct {
	req      *Request
	priority int
	rows     int64  // batch rows (dimension 0), 1 without batching
	key      string // requests with different keys are never batched together
	arrived  time.Time
	deadline time.Time // zero: none
	taken    bool      // removed from the queue, by a worker or by its caller
	gone     bool      // its caller's context has ended
	inst     *instance // the instance running it, while it runs
	done     chan result
}

type result struct {
	outputs []tensor.Tensor
	err     error
}

func normalize(p Policy) Policy {
	p.PriorityLevels = max(p.PriorityLevels, 1)
	if p.DefaultPriority < 1 || p.DefaultPriority > p.PriorityLevels {
		p.DefaultPriority = (p.PriorityLevels + 1) / 2
	}
	if p.MaxQueueSize <= 0 {
		p.MaxQueueSize = DefaultMaxQueueSize
	}
	p.PreferredBatchSizes = slices.Sorted(slices.Values(p.PreferredBatchSizes))
	return p
}

func startQueue(t Target, log *slog.Logger, budget *cores) (*queue, error) {
	sessions := t.Instances()
	if len(sessions) == 0 {
		return nil, fmt.Errorf("%w: the model version has no instances", ErrStopped)
	}
	p := normalize(t.Policy())
	q := &queue{
		policy:   p,
		log:      log,
		cores:    budget,
		acct:     newAccount(p.Weight),
		stats:    newStats(),
		levels:   make([][]*pending, p.PriorityLevels),
		changed:  make(chan struct{}),
		finished: make(chan struct{}),
	}
	q.abort = sync.OnceFunc(q.stopRuns)
	q.limit = q.batchLimit()
	if named, ok := t.(Series); ok {
		q.model, q.version = named.Series()
	}
	if p.MaxRunTime > 0 {
		q.runTimeout = fmt.Errorf("%w %s", ErrRunTimeout, p.MaxRunTime)
	}
	for _, s := range sessions {
		q.startWorkerLocked(&instance{sess: s, ctx: newRunContext()})
	}
	q.startScaling(t)
	go func() { q.workers.Wait(); close(q.finished) }()
	return q, nil
}

// startWorkerLocked adds inst to the queue's instances and starts its worker. Before the queue
// is published, or with mu held.
func (q *queue) startWorkerLocked(inst *instance) {
	inst.index = q.started
	q.started++
	q.instances = append(q.instances, inst)
	q.workers.Add(1)
	go q.work(inst)
}

// changedLocked wakes every worker waiting for the queue to change.
func (q *queue) changedLocked() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// snapshot is the queue's statistics with what waits and runs now.
func (q *queue) snapshot() Snapshot {
	snap := q.stats.Snapshot()
	q.mu.Lock()
	snap.Pending = q.waiting
	snap.InFlight = q.waiting + q.runningN
	snap.Instances = q.activeLocked()
	if q.policy.ServiceTimes != nil {
		snap.BatchTarget = int(q.batchTargetLocked(q.limit))
	}
	q.mu.Unlock()
	return snap
}

func (q *queue) infer(ctx context.Context, req *Request) ([]tensor.Tensor, error) {
	prio, err := q.policy.level(req)
	if err != nil {
		q.stats.refuse(OutcomeClientError)
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		q.stats.refuse(OutcomeCanceled)
		return nil, err
	}
	timeout := cmp.Or(req.Timeout, q.policy.DefaultTimeout)
	p := &pending{req: req, priority: prio, rows: 1, arrived: time.Now(), done: make(chan result, 1)}
	if q.policy.MaxBatchSize > 0 {
		p.rows, p.key = batchKey(req)
	}
	if timeout > 0 {
		p.deadline = p.arrived.Add(timeout)
	}
	if ctx.Done() != nil {
		// A caller that leaves no longer holds its batch's run up; see leave.
		defer context.AfterFunc(ctx, func() { q.leave(p, context.Cause(ctx)) })()
	}
	inst, err := q.push(p)
	if errors.Is(err, ErrStopped) {
		return nil, err // not admitted: the caller counts it where it finally ends
	}
	if err != nil {
		q.stats.fail(1, OutcomeQueueFull)
		return nil, err
	}
	if inst != nil {
		q.run(inst, []*pending{p}, true)
		r := <-p.done
		return r.outputs, r.err
	}

	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case r := <-p.done:
		return r.outputs, r.err
	case <-ctx.Done():
		if q.withdraw(p) {
			q.stats.fail(1, OutcomeCanceled)
			return nil, ctx.Err()
		}
		// Already in a batch: wait for it, since the batch still reads this request's inputs
		// (which may alias a buffer the caller recycles once Infer returns).
		<-p.done
		return nil, ctx.Err()
	case <-expired:
		if q.withdraw(p) {
			q.stats.fail(1, OutcomeTimeout)
			return nil, fmt.Errorf("%w after %s", ErrTimeout, timeout)
		}
		r := <-p.done
		return r.outputs, r.err
	}
}

// batchKey returns a request's rows and the key of the batches it may join: the same inputs
// with the same datatypes and non-batch dimensions, and the same outputs.
func batchKey(req *Request) (int64, string) {
	b := make([]byte, 0, 64)
	ins := make([]int, len(req.Inputs))
	for i := range ins {
		ins[i] = i
	}
	slices.SortFunc(ins, func(a, c int) int { return strings.Compare(req.Inputs[a].Name, req.Inputs[c].Name) })
	for _, i := range ins {
		t := &req.Inputs[i]
		b = append(append(append(b, t.Name...), 0), t.DataType...)
		for _, d := range t.Shape[1:] {
			b = strconv.AppendInt(append(b, ','), d, 10)
		}
		b = append(b, 0)
	}
	b = append(b, 1)
	for _, o := range req.Outputs {
		b = append(append(b, o...), 0)
	}
	rows := int64(1)
	if len(req.Inputs) > 0 && len(req.Inputs[0].Shape) > 0 {
		rows = req.Inputs[0].Shape[0]
	}
	return rows, string(b)
}

// push queues p. When p finds the queue empty, an instance idle, and formLocked would run p
// alone at once, push takes p back out for that instance and returns it: the caller runs p on
// its own goroutine, saving the queue's two goroutine hand-offs (to a worker and back) where
// they buy nothing.
func (q *queue) push(p *pending) (*instance, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return nil, ErrStopped
	}
	if q.waiting >= q.policy.MaxQueueSize {
		return nil, fmt.Errorf("%w (%d requests waiting)", ErrQueueFull, q.waiting)
	}
	q.levels[p.priority-1] = append(q.levels[p.priority-1], p)
	q.waiting++
	q.rows += p.rows
	q.peak = max(q.peak, q.rows+q.running)
	q.noteInFlightLocked()
	if !p.deadline.IsZero() {
		q.timed++
	}
	if q.waiting == 1 {
		if i := slices.IndexFunc(q.instances, func(inst *instance) bool { return !inst.busy && !inst.retiring }); i >= 0 {
			if batch, ready, _ := q.formLocked(p.arrived); ready && len(batch) == 1 {
				q.takeLocked(batch, q.instances[i])
				return q.instances[i], nil
			}
		}
	}
	q.changedLocked()
	return nil, nil
}

// leave records that p's caller has gone (its context ended with cause). A run goes on while
// any request of its batch still has a caller; when the last one leaves, the run is stopped,
// with that caller's cause.
func (q *queue) leave(p *pending, cause error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p.gone {
		return
	}
	p.gone = true
	if inst := p.inst; inst != nil {
		if inst.live--; inst.live == 0 {
			inst.ctx.stop(inst.gen, cause)
		}
	}
}

// stopRuns stops the runs in flight and marks the queue aborted, so that the runs still to
// start stop at once (queue.abort).
func (q *queue) stopRuns() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.aborted = true
	for _, inst := range q.instances {
		if inst.busy {
			inst.ctx.stop(inst.gen, errAborted)
		}
	}
}

// withdraw removes p from the queue if no worker has taken it yet.
func (q *queue) withdraw(p *pending) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p.taken {
		return false
	}
	q.removeLocked(p)
	return true
}

func (q *queue) removeLocked(p *pending) {
	lvl := q.levels[p.priority-1]
	if i := slices.Index(lvl, p); i >= 0 {
		q.levels[p.priority-1] = slices.Delete(lvl, i, i+1)
	}
	p.taken = true
	q.waiting--
	q.rows -= p.rows
	if !p.deadline.IsZero() {
		q.timed--
	}
}

// expireLocked fails the waiting requests whose deadline has passed.
func (q *queue) expireLocked(now time.Time) {
	if q.timed == 0 {
		return
	}
	for _, lvl := range q.levels {
		for _, p := range slices.Clone(lvl) {
			if !p.deadline.IsZero() && !now.Before(p.deadline) {
				q.removeLocked(p)
				q.stats.fail(1, OutcomeTimeout)
				p.done <- result{err: fmt.Errorf("%w after %s", ErrTimeout, p.deadline.Sub(p.arrived))}
			}
		}
	}
}

// next blocks until inst is free and a batch is ready, and takes the batch out of the queue for
// inst. It returns nil when the queue is closing and empty and inst is free, and when inst is
// free and retiring.
func (q *queue) next(inst *instance) []*pending {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if inst.retiring && !inst.busy {
			return nil
		}
		now := time.Now()
		q.expireLocked(now)
		// inst is busy while a caller runs on it (push); the caller's release wakes this
		// worker, which stays until then even when the queue closes: the drain waits for it.
		if q.waiting == 0 || inst.busy {
			if q.closing && !inst.busy {
				return nil
			}
			changed := q.changed
			q.mu.Unlock()
			<-changed
			q.mu.Lock()
			continue
		}
		batch, ready, wake := q.formLocked(now)
		if ready || q.closing {
			q.takeLocked(batch, inst)
			return batch
		}
		changed := q.changed
		q.mu.Unlock()
		timer := time.NewTimer(wake.Sub(now))
		select {
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
		q.mu.Lock()
	}
}

// takeLocked moves batch out of the queue and onto inst.
func (q *queue) takeLocked(batch []*pending, inst *instance) {
	for _, p := range batch {
		q.removeLocked(p)
		q.running += p.rows
	}
	q.runningN += len(batch)
	if q.policy.ServiceTimes != nil {
		q.notePeakLocked()
	}
	q.peak = q.rows + q.running
	inst.busy = true
	live := 0
	for _, p := range batch {
		p.inst = inst
		if !p.gone {
			live++
		}
	}
	inst.live = live
	inst.gen = inst.ctx.reset()
	switch {
	case q.aborted:
		inst.ctx.stop(inst.gen, errAborted)
	case live == 0:
		inst.ctx.stop(inst.gen, context.Canceled)
	}
}

// formLocked picks the batch the oldest highest-priority request would run in now. It is ready
// when it is full (max_batch_size rows, or the next compatible request would not fit), when it
// reaches a preferred size, or when the oldest request has waited max_queue_delay; otherwise
// wake is when that delay ends.
func (q *queue) formLocked(now time.Time) (batch []*pending, ready bool, wake time.Time) {
	var head *pending
	for _, lvl := range q.levels {
		if len(lvl) > 0 {
			head = lvl[0]
			break
		}
	}
	if q.policy.MaxBatchSize == 0 {
		return []*pending{head}, true, time.Time{}
	}
	limit := q.limit
	var rows int64
	full := false
collect:
	for _, lvl := range q.levels {
		for _, p := range lvl {
			if p.key != head.key {
				continue
			}
			if rows+p.rows > limit {
				full = true
				break collect
			}
			batch = append(batch, p)
			rows += p.rows
			if rows == limit {
				full = true
				break collect
			}
		}
	}
	if full {
		return batch, true, time.Time{}
	}
	if pref := q.policy.PreferredBatchSizes; len(pref) > 0 {
		best, sum := -1, int64(0)
		for i, p := range batch {
			sum += p.rows
			if _, found := slices.BinarySearch(pref, int(sum)); found {
				best = i
			}
		}
		if best >= 0 {
			return batch[:best+1], true, time.Time{}
		}
	}
	if q.policy.ServiceTimes != nil {
		ready, wake := q.tunedReadyLocked(now, head.arrived, rows, limit)
		return batch, ready, wake
	}
	deadline := head.arrived.Add(q.policy.MaxQueueDelay)
	if !now.Before(deadline) {
		return batch, true, time.Time{}
	}
	// Adaptive delay: wait only while the recent load says more requests are on their way.
	// The most rows seen in the system since the last dispatch, less those running, is what
	// this batch can expect to gather; once it has that, waiting longer only adds latency. A
	// lone client thus never waits, and a crowd still fills its batches.
	if q.policy.AdaptiveDelay && rows >= min(limit, q.peak-q.running) {
		return batch, true, time.Time{}
	}
	return batch, false, deadline
}

// work is one instance's loop: take a batch, run it, deliver, until the queue closes.
func (q *queue) work(inst *instance) {
	defer q.workers.Done()
	for {
		batch := q.next(inst)
		if batch == nil {
			if inst.retiring { // set under mu before next saw it, and never unset
				q.retire(inst)
			}
			return
		}
		q.run(inst, batch, false)
	}
}

// run runs batch on inst, which the caller has marked busy, frees inst and delivers the
// results. direct is a run on a caller's goroutine (queue.push): freeing inst then wakes the
// workers, since inst's own may be waiting for it.
func (q *queue) run(inst *instance, batch []*pending, direct bool) {
	// The cores first: waiting for them is queueing, not compute. A run stopped meanwhile
	// (every caller left) goes to the session with its context ended and fails at once.
	held, _ := q.cores.acquire(q.acct, q.policy.Threads, inst.ctx.Done())
	start := time.Now()
	var rows int64
	for _, p := range batch {
		rows += p.rows
	}
	bt := q.traceBatch(inst, batch, rows, start)
	// inst.gen is inst's to read: it changes only when inst is taken for a run.
	var timer *time.Timer
	if q.runTimeout != nil {
		ctx, gen := inst.ctx, inst.gen
		timer = time.AfterFunc(q.policy.MaxRunTime, func() { ctx.stop(gen, q.runTimeout) })
	}
	inputs := concat(batch)
	gathered := time.Now()
	outputs, err := inst.sess.Run(inst.ctx, inputs, batch[0].req.Outputs)
	ran := time.Now()
	q.cores.release(q.acct, held, ran.Sub(start))
	if timer != nil {
		timer.Stop()
	}
	var parts [][]tensor.Tensor
	failure := OutcomeServerError
	if err != nil {
		if cause := inst.ctx.stopped(); cause != nil {
			// Stopped: its requests hear why (ErrRunTimeout, the drain, their own leaving)
			// rather than the engine's account of it, which the log keeps.
			q.log.Debug("run stopped", "requests", len(batch), "err", err)
			err = cause
			if !errors.Is(err, ErrRunTimeout) && !errors.Is(err, errAborted) {
				failure = OutcomeCanceled // every caller had left
			}
		}
	}
	if err == nil {
		parts, err = split(batch, outputs)
	}
	end := time.Now()
	if bt != nil {
		bt.End(err)
	}
	// The books are closed before anyone hears back: a client that sends its next request, or
	// reads the statistics, as soon as it has its answer sees this batch finished.
	q.mu.Lock()
	q.running -= rows
	q.runningN -= len(batch)
	inst.busy = false
	for _, p := range batch {
		p.inst = nil
	}
	if direct {
		q.changedLocked()
	}
	q.mu.Unlock()
	q.stats.record(batch, start, gathered, ran, end, err, failure)
	if err != nil && failure == OutcomeServerError {
		q.log.Warn("batch failed", "requests", len(batch), "err", err)
	}
	for i, p := range batch {
		if err != nil {
			p.done <- result{err: err}
		} else {
			p.done <- result{outputs: parts[i]}
		}
	}
}

// concat joins the batch's inputs along dimension 0, in the first request's input order. A
// batch of one request runs on that request's own tensors.
func concat(batch []*pending) []tensor.Tensor {
	first := batch[0].req.Inputs
	if len(batch) == 1 {
		return first
	}
	var rows int64
	for _, p := range batch {
		rows += p.rows
	}
	out := make([]tensor.Tensor, len(first))
	for i, in := range first {
		t := tensor.Tensor{Name: in.Name, DataType: in.DataType, Shape: slices.Clone(in.Shape)}
		t.Shape[0] = rows
		if in.DataType == tensor.Bytes {
			t.Strings = make([][]byte, 0, int(rows)*len(in.Strings)/int(max(batch[0].rows, 1)))
		} else {
			t.Data = make([]byte, 0, int(rows)*len(in.Data)/int(max(batch[0].rows, 1)))
		}
		for _, p := range batch {
			part := inputNamed(p.req.Inputs, in.Name)
			t.Strings = append(t.Strings, part.Strings...)
			t.Data = append(t.Data, part.Data...)
		}
		out[i] = t
	}
	return out
}

func inputNamed(ts []tensor.Tensor, name string) *tensor.Tensor {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return &tensor.Tensor{} // unreachable: batch keys guarantee the same input names
}

// split hands each request its rows of every output (sub-slices of the batch's output buffers,
// which nobody else holds).
func split(batch []*pending, outputs []tensor.Tensor) ([][]tensor.Tensor, error) {
	parts := make([][]tensor.Tensor, len(batch))
	if len(batch) == 1 {
		parts[0] = outputs
		return parts, nil
	}
	var rows int64
	for _, p := range batch {
		rows += p.rows
	}
	for _, o := range outputs {
		if len(o.Shape) == 0 || o.Shape[0] != rows {
			return nil, fmt.Errorf("%w: output %q has shape %s for a batch of %d rows", ErrBatch, o.Name, tensor.FormatShape(o.Shape), rows)
		}
		perRow, err := tensor.Elements(o.Shape[1:])
		if err != nil {
			return nil, fmt.Errorf("%w: output %q: %v", ErrBatch, o.Name, err)
		}
		rowBytes := perRow * int64(o.DataType.Size())
		var off int64
		for i, p := range batch {
			part := tensor.Tensor{Name: o.Name, DataType: o.DataType, Shape: slices.Clone(o.Shape)}
			part.Shape[0] = p.rows
			if o.DataType == tensor.Bytes {
				part.Strings = o.Strings[off*perRow : (off+p.rows)*perRow : (off+p.rows)*perRow]
			} else {
				part.Data = o.Data[off*rowBytes : (off+p.rows)*rowBytes : (off+p.rows)*rowBytes]
			}
			parts[i] = append(parts[i], part)
			off += p.rows
		}
	}
	return parts, nil
}

// close stops taking new requests, lets the workers drain what is queued, and waits for them;
// when ctx ends first, runs in flight are cancelled.
func (q *queue) close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closing {
		q.closing = true
		q.stopScalingLocked()
		q.changedLocked()
	}
	q.mu.Unlock()
	select {
	case <-q.finished:
		q.abort()
		return nil
	case <-ctx.Done():
		q.abort()
		return ctx.Err()
	}
}
