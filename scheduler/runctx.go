package scheduler

import (
	"context"
	"errors"
	"sync"
	"time"
)

// runContext is the context.Context an instance's runs get, one value per instance reused from
// run to run, so that a run that nobody stops costs no allocation. It ends when stop is called
// (every caller of the batch left, the queue was aborted, MaxRunTime passed) and stays ended
// until reset for the next run. The queue keeps it per instance rather than a context per run:
// the runs of an instance follow one another, and Session.Run does not keep its context.
//
// Err is context.DeadlineExceeded for ErrRunTimeout and context.Canceled otherwise; the cause
// is the queue's to read (cause), since context.Cause only sees the context package's own.
type runContext struct {
	mu    sync.Mutex
	done  chan struct{} // closed by stop
	cause error         // nil while the run may go on
	gen   uint64        // counts resets, so that a late timer cannot stop a later run
}

func newRunContext() *runContext { return &runContext{done: make(chan struct{})} }

func (*runContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (*runContext) Value(any) any               { return nil }

func (c *runContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *runContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.cause == nil:
		return nil
	case errors.Is(c.cause, ErrRunTimeout):
		return context.DeadlineExceeded
	default:
		return context.Canceled
	}
}

// reset readies c for a new run and returns the run's generation.
func (c *runContext) reset() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		c.done, c.cause = make(chan struct{}), nil
	}
	c.gen++
	return c.gen
}

// stop ends run gen of c with cause, unless it has ended already or a later run has begun.
func (c *runContext) stop(gen uint64, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.cause != nil {
		return
	}
	c.cause = cause
	close(c.done)
}

// stopped returns why the current run was stopped, nil if it was not.
func (c *runContext) stopped() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}
