package scheduler

import "time"

// Trace follows one request through the queue and the run of its batch (Request.Trace): the
// tracing package implements it for a traced request, and a request without one costs the
// scheduler a nil check. Its methods are called on the goroutine that runs the batch, before
// and after the run; they must not block.
type Trace interface {
	// StartBatch starts the account of a batch whose first traced request this is; traces
	// are those of every traced request in the batch, this one first. The batch's End is
	// called when its run and the split of its outputs are over.
	StartBatch(info BatchInfo, traces []Trace) BatchTrace
	// Waited tells the request's time in the queue, from its arrival to the start of its
	// batch's run (the core budget's wait included), and the batch it ran in.
	Waited(arrived, started time.Time, batch BatchTrace)
}

// BatchTrace is the account of one batch's run (Trace.StartBatch).
type BatchTrace interface {
	// End closes it with the run's error (nil: the batch ran and split).
	End(err error)
}

// BatchInfo describes a batch as it starts to run.
type BatchInfo struct {
	// Model and Version name the target's series ("" for a target that is no Series).
	Model, Version string
	// Instance is the index of the instance (session) that runs it, from 0.
	Instance int
	// Requests and Rows are the batch's size in requests and in rows (dimension 0).
	Requests int
	Rows     int64
}

// traceBatch starts the trace of a batch when any of its requests is traced; nil otherwise,
// with no allocation.
func (q *queue) traceBatch(inst *instance, batch []*pending, rows int64, started time.Time) BatchTrace {
	first := -1
	for i, p := range batch {
		if p.req.Trace != nil {
			first = i
			break
		}
	}
	if first < 0 {
		return nil
	}
	traces := make([]Trace, 0, len(batch)-first)
	for _, p := range batch[first:] {
		if p.req.Trace != nil {
			traces = append(traces, p.req.Trace)
		}
	}
	bt := traces[0].StartBatch(BatchInfo{Model: q.model, Version: q.version, Instance: inst.index, Requests: len(batch), Rows: rows}, traces)
	for _, p := range batch[first:] {
		if p.req.Trace != nil {
			p.req.Trace.Waited(p.arrived, started, bt)
		}
	}
	return bt
}
