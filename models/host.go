package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/inferd/inferd/engine"
)

// daemonReserve is what a worker's derived memory limit leaves of the usable memory for the
// daemon itself and its request buffers.
const daemonReserve = 256 << 20

// minWorkerMemory is the least a derived limit gives a worker: below it not even ONNX Runtime
// and the demo model fit, and the version would fail with a misleading reason.
const minWorkerMemory = 512 << 20

// HostEvent is a change of one version's host (its worker process), for metrics.
type HostEvent struct {
	Model   string
	Version int64
	engine.HostEvent
}

// OnHostEvent sets a function called for every change of a version's worker (it must not block
// or call back into the repository).
func (r *Repository) OnHostEvent(f func(HostEvent)) {
	r.loadMu.Lock()
	r.hostEvents = f
	r.loadMu.Unlock()
}

// startHost starts the host that v's sessions load into, bounded by v's [limits]. Caller holds
// loadMu.
func (r *Repository) startHost(ctx context.Context, v *Version) (engine.Host, error) {
	limit, err := r.memoryLimitLocked(v)
	if err != nil {
		return nil, err
	}
	events := r.hostEvents
	model, number := v.Model, v.Number
	h, err := r.iso.Start(ctx, engine.HostOptions{
		Name:        fmt.Sprintf("%s/%d", v.Model, v.Number),
		MemoryLimit: limit,
		Threads:     r.cur.Defaults.Cores,
		// Placement decides after the signature is read whether a "gpu" or "auto" version gets
		// a GPU; a worker that may open CUDA sessions cannot be given an address-space bound.
		GPU: v.Config.Instance.Device != DeviceCPU,
		OnEvent: func(e engine.HostEvent) {
			if events != nil {
				events(HostEvent{Model: model, Version: number, HostEvent: e})
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("starting the model worker: %w", err)
	}
	return h, nil
}

// memoryLimitLocked is the memory v's worker may allocate: [limits] max_memory_bytes, or else
// the usable memory now less daemonReserve (never under minWorkerMemory); 0 (unbounded) when
// nothing says and no probe can tell. Caller holds loadMu.
func (r *Repository) memoryLimitLocked(v *Version) (int64, error) {
	if n := v.Config.Limits.MaxMemoryBytes; n > 0 {
		return n, nil
	}
	if r.memProbe == nil {
		return 0, nil
	}
	avail, err := r.memProbe()
	if err != nil || avail == 0 {
		return 0, nil
	}
	return int64(max(avail, daemonReserve+minWorkerMemory) - daemonReserve), nil
}

// loadContext bounds a version's load and warmup by [limits] load_timeout.
func loadContext(ctx context.Context, v *Version) (context.Context, context.CancelFunc) {
	if d := time.Duration(v.Config.Limits.LoadTimeout); d > 0 {
		return context.WithTimeoutCause(ctx, d, fmt.Errorf("load and warmup exceeded load_timeout %s", d))
	}
	return context.WithCancel(ctx)
}

// loadError says why a load stopped when its deadline passed, whatever the engine made of
// the cancelled call.
func loadError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w (%w)", cause, err)
	}
	return err
}

// watchHost turns a host that gave up (its worker failed too often) into an UNAVAILABLE
// version with the reason, until the version's files change; it returns when v's host fails
// or is closed.
func (r *Repository) watchHost(v *Version, log *slog.Logger) {
	failed := v.host.Failed()
	if failed == nil {
		return
	}
	go func() {
		select {
		case <-failed:
		case <-v.closed:
			return
		}
		reason := fmt.Sprintf("model worker given up: %v", v.host.Err())
		log.Error("model version unavailable", "reason", reason)
		r.mu.Lock()
		if v.state == StateReady {
			v.state, v.reason = StateUnavailable, reason
		}
		v.retired.Store(true)
		r.mu.Unlock()
		r.loadMu.Lock()
		defer r.loadMu.Unlock()
		r.events(Event{Model: v.Model, Version: v.Number, Err: errors.New(reason)})
		r.retireLocked(context.Background(), []*Version{v})
	}()
}

// closeVersion closes v's sessions and ends its host (its worker exits, and all the memory
// ONNX Runtime held goes back). Safe to call more than once.
func closeVersion(v *Version) {
	closeAll(v.openSessions())
	if v.host != nil {
		_ = v.host.Close()
	}
	if v.closed != nil {
		v.closeOnce.Do(func() { close(v.closed) })
	}
}

// WorkerStatus is v's host's process as it is now; the zero value in-process or unloaded.
func (v *Version) WorkerStatus() engine.HostStatus {
	if v.host == nil {
		return engine.HostStatus{}
	}
	return v.host.Status()
}
