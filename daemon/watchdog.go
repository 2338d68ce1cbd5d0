package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// The service manager's watchdog (systemd WatchdogSec=, sd_notify WATCHDOG=1) restarts a
// daemon that stops answering. A goroutine that pings on a timer would keep pinging while the
// scheduler is wedged, so the ping comes from a health loop that first checks the parts a
// request goes through, and withholds it while any check fails or does not return.

// extendEvery and extendBy pace EXTEND_TIMEOUT_USEC during long operations: every extendEvery
// the service manager is asked for extendBy more from now, so a start or reload that makes
// progress is never cut off by TimeoutStartSec, while one that hangs still is once the
// process stops asking (it asks only while the operation is under way).
const (
	extendEvery = 10 * time.Second
	extendBy    = 30 * time.Second
)

// errHeartbeatStopped is the health loop's verdict after Options.StopHeartbeat fired.
var errHeartbeatStopped = errors.New("heartbeat stopped on request (debug hook)")

// extendTimeoutWhile asks the service manager for more start (or reload) time every
// extendEvery until the returned function is called. It sends nothing when no watchdog and
// no service manager are configured (Notify is then a no-op anyway).
func (d *Daemon) extendTimeoutWhile(what string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(extendEvery)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				d.notify(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d\nSTATUS=%s (%s so far)", extendBy.Microseconds(), what,
					time.Since(start).Round(time.Second)))
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// startHeartbeat runs the health loop when the service manager set a watchdog
// (Options.Watchdog); the returned function stops it and waits for it.
func (d *Daemon) startHeartbeat(ctx context.Context) (stop func()) {
	if d.opts.Watchdog <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	hb := &heartbeat{
		period: d.opts.Watchdog / 3,
		notify: d.notify,
		probe:  newProgressProbe(d.repo, d.sched, d.opts.Watchdog).check,
		stop:   d.opts.StopHeartbeat,
		log:    d.log.With("component", "watchdog"),
	}
	done := make(chan struct{})
	go func() { defer close(done); hb.run(ctx) }()
	d.log.Info("watchdog heartbeat on", "watchdog", d.opts.Watchdog, "every", hb.period)
	return func() { cancel(); <-done }
}

// heartbeat sends WATCHDOG=1 every period while probe passes. A probe that fails, or that has
// not returned within the period, withholds the ping; the next probe starts only once the
// previous one has returned, so a wedged check never piles up goroutines.
type heartbeat struct {
	period time.Duration
	notify func(string)
	// probe checks the daemon's health at now; it may block (that is what it detects).
	probe func(now time.Time) error
	// stop, when it yields, makes every later probe fail (a debug hook for the watchdog test).
	stop <-chan struct{}
	log  *slog.Logger
}

func (h *heartbeat) run(ctx context.Context) {
	t := time.NewTicker(h.period)
	defer t.Stop()
	var (
		stopped   bool
		unhealthy error
		result    chan error // the probe in flight; nil when none
	)
	beat := func() {
		if result == nil {
			result = make(chan error, 1)
			go func(now time.Time, r chan<- error) { r <- h.probe(now) }(time.Now(), result)
		}
		var err error
		select {
		case err = <-result:
			result = nil
		case <-time.After(h.period / 2):
			err = fmt.Errorf("health check has not returned for %s or more", (h.period / 2).Round(time.Millisecond))
		case <-ctx.Done():
			return
		}
		if stopped {
			err = errHeartbeatStopped
		}
		switch {
		case err != nil && unhealthy == nil:
			h.log.Error("unhealthy: withholding the watchdog heartbeat; the service manager restarts inferd if this lasts",
				"reason", err)
			h.notify("STATUS=unhealthy, watchdog heartbeat withheld: " + err.Error())
		case err == nil && unhealthy != nil:
			h.log.Info("healthy again; watchdog heartbeat resumed", "was", unhealthy)
			h.notify("STATUS=healthy again")
		}
		unhealthy = err
		if err == nil {
			h.notify("WATCHDOG=1")
		}
	}
	beat()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			stopped, h.stop = true, nil
			beat()
		case <-t.C:
			beat()
		}
	}
}

// progressProbe is the health loop's check of the request path: the model repository answers
// (its lock is not wedged), and every model version with requests waiting has finished a batch
// within stallAfter (the scheduler is not hung). It is called by one goroutine at a time.
type progressProbe struct {
	repo       prober
	sched      statser
	stallAfter time.Duration
	// seen is, per model version with requests waiting, the executions counted when they were
	// first seen waiting without progress, and since when.
	seen map[string]progress
}

type progress struct {
	executions uint64
	since      time.Time
}

// prober is what the health loop needs of the model repository.
type prober interface {
	Index() []models.IndexEntry
	Resolve(name, version string) (*models.Version, error)
}

var _ prober = (*models.Repository)(nil)

// statser is what the health loop needs of the scheduler.
type statser interface {
	Stats(t scheduler.Target) scheduler.Snapshot
}

func newProgressProbe(repo prober, sched statser, stallAfter time.Duration) *progressProbe {
	return &progressProbe{repo: repo, sched: sched, stallAfter: stallAfter, seen: map[string]progress{}}
}

func (p *progressProbe) check(now time.Time) error {
	live := map[string]bool{}
	var errs []error
	for _, e := range p.repo.Index() {
		if e.State != models.StateReady {
			continue
		}
		v, err := p.repo.Resolve(e.Name, e.Version)
		if err != nil {
			continue // retired between Index and Resolve
		}
		key := e.Name + "/" + e.Version
		snap := p.sched.Stats(v)
		if snap.Pending == 0 {
			continue
		}
		live[key] = true
		prev, ok := p.seen[key]
		if !ok || prev.executions != snap.ExecutionCount {
			p.seen[key] = progress{executions: snap.ExecutionCount, since: now}
			continue
		}
		if stalled := now.Sub(prev.since); stalled >= p.stallAfter {
			errs = append(errs, fmt.Errorf("model %s version %s: %d requests waiting and no batch finished for %s",
				e.Name, e.Version, snap.Pending, stalled.Round(time.Millisecond)))
		}
	}
	for key := range p.seen {
		if !live[key] {
			delete(p.seen, key)
		}
	}
	return errors.Join(errs...)
}
