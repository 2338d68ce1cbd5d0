package models

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/scheduler"
)

// A calibrated version's instance count follows its load (scheduler/scale.go): the scheduler
// closes instances the load leaves idle and asks for them again when it grows. Sessions keeps
// the instances the version was loaded with; instanceSet keeps track of which of them were
// closed since and which were opened on top, so that closing the version closes each open
// session exactly once.
var _ scheduler.Scaler = (*Version)(nil)

// instanceSet is a version's sessions beyond Sessions as the scheduler scales it.
type instanceSet struct {
	// open opens one more instance in the chosen configuration; nil for a version whose count
	// stays (not calibrated, or on a GPU). Set by the loader before the version is published.
	open func(context.Context) (engine.Session, error)

	mu     sync.Mutex
	extra  []engine.Session        // opened by Grow, still open
	shut   map[engine.Session]bool // of Sessions, closed by Shrink
	closed bool                    // closeVersion ran: Grow keeps nothing more
}

// errNotScalable: the version's instance count does not follow the load.
var errNotScalable = errors.New("the instance count of this model version is fixed")

// scales reports whether v's instance count may follow the load.
func (v *Version) scales() bool { return v.scale.open != nil }

// Grow opens one more instance of v like the others (scheduler.Scaler).
func (v *Version) Grow(ctx context.Context) (engine.Session, error) {
	if !v.scales() {
		return nil, errNotScalable
	}
	s, err := v.scale.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening an instance of %s version %d: %w", v.Model, v.Number, err)
	}
	v.scale.mu.Lock()
	defer v.scale.mu.Unlock()
	if v.scale.closed {
		_ = s.Close()
		return nil, fmt.Errorf("%s version %d: %w", v.Model, v.Number, scheduler.ErrStopped)
	}
	v.scale.extra = append(v.scale.extra, s)
	return s, nil
}

// Shrink closes an instance of v the scheduler no longer runs on (scheduler.Scaler).
func (v *Version) Shrink(s engine.Session) {
	v.scale.mu.Lock()
	if v.scale.closed {
		v.scale.mu.Unlock()
		return // closeVersion closed it
	}
	if i := slices.Index(v.scale.extra, s); i >= 0 {
		v.scale.extra = slices.Delete(v.scale.extra, i, i+1)
	} else {
		if v.scale.shut == nil {
			v.scale.shut = map[engine.Session]bool{}
		}
		v.scale.shut[s] = true
	}
	v.scale.mu.Unlock()
	_ = s.Close()
}

// openSessions returns v's sessions that are open now, and marks v closed so that no Grow
// adds one afterwards: what closeVersion closes.
func (v *Version) openSessions() []engine.Session {
	v.scale.mu.Lock()
	defer v.scale.mu.Unlock()
	v.scale.closed = true
	open := slices.DeleteFunc(slices.Clone(v.Sessions), func(s engine.Session) bool { return v.scale.shut[s] })
	return append(open, v.scale.extra...)
}
