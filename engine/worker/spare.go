package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/inferd/inferd/engine"
)

// A worker's start costs about 50 ms, nearly all of it ONNX Runtime's own: loading its library
// and creating its environment, which the daemon does once for isolation = "none". With
// Isolator.KeepSpare set, the isolator keeps one worker started ahead with the runtime loaded
// and no memory limit yet; the next Start (or restart) takes it, sets its limit, and starts the
// next spare behind it, so a burst of loads (the daemon's start, a repository change) waits for
// none of their workers after the first. A spare nobody takes within KeepSpare exits.

// spares is the isolator's worker started ahead; the zero value holds none.
type spares struct {
	p       *process
	timer   *time.Timer   // ends p once it has waited KeepSpare
	pending chan struct{} // closed when the spare starting now is up (or failed); nil if none is
}

// Prestart starts a spare worker now, if KeepSpare is set and there is none: the daemon calls
// it before its first loads.
func (iso *Isolator) Prestart() {
	if iso.KeepSpare <= 0 || iso.launch != nil { // the supervisor tests' fake workers have no spares
		return
	}
	iso.mu.Lock()
	defer iso.mu.Unlock()
	if iso.spare.p != nil || iso.spare.pending != nil || iso.closed {
		return
	}
	iso.spare.pending = make(chan struct{})
	go iso.startSpare()
}

func (iso *Isolator) startSpare() {
	log := iso.logger().With("host", "spare")
	ctx, cancel := context.WithTimeoutCause(context.Background(), iso.startTimeout(), fmt.Errorf("worker start exceeded %s", iso.startTimeout()))
	p, err := iso.spawn(ctx, engine.HostOptions{Name: "spare"}, log)
	cancel()
	iso.mu.Lock()
	defer iso.mu.Unlock()
	close(iso.spare.pending)
	iso.spare.pending = nil
	if err != nil {
		log.Debug("spare worker did not start", "err", err)
		return
	}
	if iso.closed {
		go p.stop(iso.grace())
		return
	}
	iso.spare.p = p
	iso.spare.timer = time.AfterFunc(iso.KeepSpare, func() {
		iso.mu.Lock()
		idle := iso.spare.p == p
		if idle {
			iso.spare.p = nil
		}
		iso.mu.Unlock()
		if idle {
			p.stop(iso.grace())
		}
	})
}

// take returns a worker for a version: the spare, given the version's memory limit, or a
// worker started now; either way the next spare starts behind it. A spare still starting is
// waited for: it is closer to ready than a worker started now would be.
func (iso *Isolator) take(ctx context.Context, opts engine.HostOptions, log *slog.Logger) (proc, error) {
	iso.mu.Lock()
	pending := iso.spare.pending
	iso.mu.Unlock()
	if pending != nil {
		select {
		case <-pending:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: worker for %s did not start: %w", engine.ErrWorker, opts.Name, context.Cause(ctx))
		}
	}
	iso.mu.Lock()
	p := iso.spare.p
	iso.spare.p = nil
	if p != nil {
		iso.spare.timer.Stop()
	}
	iso.mu.Unlock()
	defer iso.Prestart()
	if p != nil && !exited(p) {
		limit := memoryLimit(opts)
		_, err := p.call(ctx, kindLimit, nil, true, func(e *encoder) { e.uint(uint64(limit)) })
		if err == nil {
			p.adopt(limit, log)
			return p, nil
		}
		log.Debug("spare worker refused its limit; starting another", "err", err)
		p.stop(iso.grace())
	}
	return iso.startWorker(ctx, opts, log)
}

// Close ends the spare worker, if one waits; the isolator's hosts are closed by their owners.
func (iso *Isolator) Close() {
	iso.mu.Lock()
	p := iso.spare.p
	iso.spare.p = nil
	iso.closed = true
	if p != nil {
		iso.spare.timer.Stop()
	}
	iso.mu.Unlock()
	if p != nil {
		p.stop(iso.grace())
	}
}
