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
	after []*afterFunc  // registered by AfterFunc for the current run
}

// afterFunc is one function registered with AfterFunc.
type afterFunc struct {
	f       func()
	stopped bool // unregistered, or already started
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
	c.after = c.after[:0]
	c.gen++
	return c.gen
}

// AfterFunc arranges for f to run in its own goroutine once the current run is stopped, or at
// once if it is already; stop unregisters f and reports whether it did so before f started.
// context.AfterFunc calls it instead of starting a goroutine of its own that waits for Done: the
// engines register one per run (to interrupt a native run), and most runs are never stopped.
func (c *runContext) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		a.stopped = true
		go f()
	} else {
		c.after = append(c.after, a)
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a.stopped {
			return false
		}
		a.stopped = true
		return true
	}
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
	for _, a := range c.after {
		if !a.stopped {
			a.stopped = true
			go a.f()
		}
	}
	c.after = c.after[:0]
}

// stopped returns why the current run was stopped, nil if it was not.
func (c *runContext) stopped() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}
