// Package daemon wires inferd together and runs its lifecycle: it builds the engine, the model
// repository, the scheduler and the HTTP API from a config.Config, serves until its context
// ends, and then drains. It talks to systemd through sd_notify (READY=1 once the listener is up
// and the models are loaded, STATUS= lines, STOPPING=1 at shutdown). Signal handling stays in
// cmd: the daemon stops when its context is cancelled, and cancellation is not an error.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// Notifier sends sd_notify state lines (see sd_notify(3)); it must not block.
type Notifier func(state string) error

// Options are the daemon's dependencies that do not come from the configuration.
type Options struct {
	// Version is reported by server metadata and /health.
	Version string
	// Runtime opens model sessions. The caller owns it and closes it after Run returns.
	Runtime engine.Runtime
	// Components adds engine and hardware detail to /health.
	Components func() map[string]api.Component
	// Notify reports lifecycle states to the service manager; nil sends nothing.
	Notify Notifier
	// Listener, when set, is used instead of listening on cfg.Server.Listen (tests pass a
	// listener on a free port).
	Listener net.Listener
}

// Daemon is one running inferd.
type Daemon struct {
	cfg   *config.Config
	opts  Options
	log   *slog.Logger
	repo  *models.Repository
	sched *scheduler.Scheduler
	api   *api.Server
	addr  chan net.Addr
}

// New builds a daemon from a validated configuration.
func New(cfg *config.Config, opts Options, log *slog.Logger) (*Daemon, error) {
	if opts.Runtime == nil {
		return nil, errors.New("daemon: no engine runtime")
	}
	if opts.Notify == nil {
		opts.Notify = func(string) error { return nil }
	}
	repo := models.New(cfg.Models.Repository, opts.Runtime, models.Defaults{
		Instances:      cfg.Scheduler.DefaultInstances,
		MaxBatchSize:   cfg.Scheduler.DefaultMaxBatchSize,
		IntraOpThreads: cfg.Engine.IntraOpThreads,
		InterOpThreads: cfg.Engine.InterOpThreads,
		Cores:          runtime.GOMAXPROCS(0),
		MaxQueueDelay:  cfg.Scheduler.MaxQueueDelay,
		AdaptiveDelay:  cfg.Scheduler.AdaptiveDelay,
		MaxQueueSize:   cfg.Scheduler.MaxQueueSize,
		DefaultTimeout: cfg.Scheduler.DefaultTimeout,
	}, log.With("component", "models"))
	sched := scheduler.New(log.With("component", "scheduler"))
	srv := api.New(repo, sched, api.Options{
		Name:            "inferd",
		Version:         opts.Version,
		MaxRequestBytes: cfg.Server.MaxRequestBytes,
		Components:      opts.Components,
	}, log.With("component", "api"))
	return &Daemon{cfg: cfg, opts: opts, log: log, repo: repo, sched: sched, api: srv, addr: make(chan net.Addr, 1)}, nil
}

// Addr returns the address the HTTP listener is bound to, once it is; it blocks until then or
// until ctx ends.
func (d *Daemon) Addr(ctx context.Context) (net.Addr, error) {
	select {
	case a := <-d.addr:
		d.addr <- a
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run serves until ctx is cancelled, then drains in-flight requests for at most
// server.shutdown_timeout and releases every model. It returns nil after a clean drain.
func (d *Daemon) Run(ctx context.Context) error {
	ln := d.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", d.cfg.Server.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", d.cfg.Server.Listen, err)
		}
	}
	hs := &http.Server{
		Handler:           d.api,
		ReadHeaderTimeout: d.cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       d.cfg.Server.ReadTimeout,
		WriteTimeout:      d.cfg.Server.WriteTimeout,
		IdleTimeout:       d.cfg.Server.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	d.addr <- ln.Addr()
	d.log.Info("listening", "addr", ln.Addr().String(), "repository", d.repo.Root())
	d.notify("STATUS=loading models from " + d.repo.Root())

	if err := d.repo.Load(ctx); err != nil && ctx.Err() == nil {
		d.notify("STATUS=model repository unreadable: " + err.Error())
		d.log.Error("model repository unreadable; serving no models", "err", err)
	}
	if ctx.Err() == nil {
		d.api.SetPhase(api.PhaseServing)
		ready, total := countReady(d.repo.Index())
		d.notify(fmt.Sprintf("READY=1\nSTATUS=serving %d of %d model versions on %s", ready, total, ln.Addr()))
		d.log.Info("ready", "model_versions_ready", ready, "model_versions", total)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	}
	return errors.Join(runErr, d.shutdown(hs))
}

func (d *Daemon) shutdown(hs *http.Server) error {
	d.notify("STOPPING=1\nSTATUS=draining in-flight requests")
	d.api.SetPhase(api.PhaseStopping)
	d.log.Info("shutting down", "drain_timeout", d.cfg.Server.ShutdownTimeout)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Server.ShutdownTimeout)
	defer cancel()
	// The HTTP server stops accepting at once and waits for every handler in flight; the
	// scheduler then has nothing left but requests whose clients already left.
	var errs []error
	if err := hs.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain of in-flight requests did not finish within %s: %w", d.cfg.Server.ShutdownTimeout, err))
	}
	if err := d.sched.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	d.repo.Close()
	d.log.Info("stopped", "drained_in", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

func (d *Daemon) notify(state string) {
	if err := d.opts.Notify(state); err != nil {
		d.log.Warn("sd_notify failed", "err", err)
	}
}

func countReady(index []models.IndexEntry) (ready, total int) {
	for _, e := range index {
		total++
		if e.State == models.StateReady {
			ready++
		}
	}
	return ready, total
}
