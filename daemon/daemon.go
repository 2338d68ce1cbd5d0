// Package daemon wires inferd together and runs its lifecycle: it builds the model repository,
// the scheduler, the HTTP API and the metrics from a config.Config, serves until its context
// ends, and then drains. It follows the model repository and the configuration file (and
// SIGHUP, through Reload) and applies changes as transactions: a change that fails leaves what
// served before serving. It talks to systemd through sd_notify (READY=1 once the listener is up
// and the models are loaded, RELOADING=1 and READY=1 around reloads, STATUS= lines, STOPPING=1
// at shutdown). Signals stay in cmd: the daemon stops when its context is cancelled, and
// cancellation is not an error.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/gpu"
	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/hostinfo"
	"github.com/inferd/inferd/kserve/kservehttp"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tracing"
)

// Notifier sends sd_notify state lines (see sd_notify(3)); it must not block.
type Notifier func(state string) error

// Options are the daemon's dependencies that do not come from the configuration.
type Options struct {
	// Version is reported by server metadata, /health and inferd_build_info.
	Version string
	// Revision is the commit inferd was built from, and RuntimeVersion the version of the
	// engine's runtime (ONNX Runtime); both label inferd_build_info.
	Revision, RuntimeVersion string
	// Runtime opens model sessions. The caller owns it and closes it after Run returns.
	Runtime engine.Runtime
	// Isolator starts the host each model version loads into (engine.isolation): worker
	// processes, or nil for Runtime in the daemon's own process.
	Isolator engine.Isolator
	// Components adds engine and hardware detail to /health.
	Components func() map[string]api.Component
	// Notify reports lifecycle states to the service manager; nil sends nothing.
	Notify Notifier
	// DefaultClusterKeyFile overrides DefaultClusterKeyFile (tests).
	DefaultClusterKeyFile string
	// Listener, when set, is used instead of listening on cfg.Server.Listen (tests pass a
	// listener on a free port).
	Listener net.Listener
	// MetricsListener, when set, serves /metrics on its own instead of listening on
	// cfg.Metrics.Listen (tests pass a listener on a free port).
	MetricsListener net.Listener
	// GRPCListener, when set, serves gRPC on it instead of listening on cfg.GRPC.Listen, even
	// when that is empty (tests pass a listener on a free port).
	GRPCListener net.Listener
	// ConfigPath is the file the configuration came from; Reload reads it again, and the
	// daemon watches it. Empty: no configuration reloads.
	ConfigPath string
	// Env is the environment of INFERD_* overrides, re-applied on every reload.
	Env []string
	// LogLevel, when set, is the level of the daemon's logger; reloads change it.
	LogLevel *slog.LevelVar
	// Watchdog is the service manager's watchdog timeout (systemd WatchdogSec=, from
	// WATCHDOG_USEC); when set, a health loop sends WATCHDOG=1 while the daemon is healthy
	// (watchdog.go). Zero: no heartbeat.
	Watchdog time.Duration
	// StopHeartbeat, when it yields, makes the health loop withhold WATCHDOG=1 from then on, as
	// a hung daemon would: a debug hook for testing the watchdog. Nil: never.
	StopHeartbeat <-chan struct{}
	// GPU finds the node's NVIDIA GPUs for model placement, /health and /metrics (gpu.go); the
	// caller creates it (gpu.New) and closes it after Run returns. Nil: no GPU discovery, and
	// every model runs on the CPU.
	GPU *gpu.NVML
}

// Daemon is one running inferd.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	repo    *models.Repository
	sched   *scheduler.Scheduler
	api     *api.Server
	grpc    *grpcapi.Server // nil: no gRPC listener (grpc.go)
	metrics *metrics.Metrics
	addr    chan net.Addr
	gaddr   chan net.Addr

	// settings are the configuration in force (settings.go): read without a lock, swapped
	// under reloadMu.
	settings atomic.Pointer[settings]
	// reloadMu serializes reloads; it guards applied and watchers.
	reloadMu sync.Mutex
	applied  []byte // the bytes of the configuration file in force
	watchers *watchers

	stateMu sync.Mutex
	reload  reloadState

	hw hardware // set in New, read-only after (gpu.go)

	// usableMemory is the host's usable memory detected in New (0 if unknown), from which a
	// server.max_body_bytes_in_flight of 0 is derived; bodies is the budget it bounds, shared
	// by the API and the cluster's router.
	usableMemory uint64
	bodies       *kservehttp.Budget

	sec     *security                 // TLS and tokens (security.go); set in New
	handler handlerSwitch             // what the listener serves: the API, then the cluster's router
	cluster atomic.Pointer[clustered] // set once the node joined (cluster.go)
	tracing *tracing.Tracing          // set in New (tracing.go)
}

// reloadState is what /health says about configuration reloads.
type reloadState struct {
	At              time.Time `json:"at,omitzero"`
	Result          string    `json:"result,omitempty"`
	Error           string    `json:"error,omitempty"`
	RestartRequired []string  `json:"restart_required,omitempty"`
}

// New builds a daemon from a validated configuration.
func New(cfg *config.Config, opts Options, log *slog.Logger) (*Daemon, error) {
	if opts.Runtime == nil {
		return nil, errors.New("daemon: no engine runtime")
	}
	if opts.Notify == nil {
		opts.Notify = func(string) error { return nil }
	}
	m := metrics.New(metrics.BuildInfo{Version: opts.Version, Revision: opts.Revision, ORTVersion: opts.RuntimeVersion})
	m.ConfigLastReloadSuccessTimestamp.SetToCurrentTime()
	d := &Daemon{opts: opts, log: log, metrics: m, addr: make(chan net.Addr, 1), gaddr: make(chan net.Addr, 1)}
	d.setSettingsLocked(newSettings(cfg))
	if mem, err := hostinfo.DetectMemory(); err == nil {
		d.usableMemory = mem.UsableTotal
	}
	d.bodies = kservehttp.NewBudget(d.bodyBytesInFlight)
	iso := opts.Isolator
	if iso == nil {
		iso = engine.InProcess(opts.Runtime)
	}
	repo := models.NewWith(iso, func() models.Settings { return d.settings.Load().models }, log.With("component", "models"))
	repo.SetTuning(tuningEnv(cfg, opts.RuntimeVersion))
	repo.SetMemoryProbe(func() (uint64, error) {
		m, err := hostinfo.DetectMemory()
		return m.UsableAvailable, err
	})
	sched := scheduler.New(log.With("component", "scheduler"))
	// The runs of every model share the cores the process may use: a model's instances ×
	// threads fit them (calibration), and the budget keeps several busy models from running
	// more threads than that together.
	sched.SetCores(runtime.GOMAXPROCS(0))
	repo.SetDrainer(drainer{sched})
	repo.OnEvent(func(e models.Event) {
		result := "success"
		if e.Err != nil {
			result = "failure"
		}
		m.ModelLoads.WithLabelValues(e.Model, result).Inc()
		m.ModelLastLoadTimestamp.WithLabelValues(e.Model, result).SetToCurrentTime()
		d.grpcChanged() // gRPC health watchers look again
	})
	inference := registerCollectors(m, repo, sched)
	d.repo, d.sched = repo, sched
	d.setupHardware(cfg)
	sec, err := newSecurity(cfg, d)
	if err != nil {
		return nil, err
	}
	d.sec = sec
	if err := d.setupTracing(cfg); err != nil {
		return nil, err
	}
	d.api = api.New(repo, sched, api.Options{
		Name:          "inferd",
		Version:       opts.Version,
		Settings:      func() *api.Settings { return &d.settings.Load().api },
		BodyBudget:    d.bodies,
		LimitExceeded: func(l string) { m.LimitRejections.WithLabelValues(l).Inc() },
		Components:    d.components,
		Metrics:       d.metricsOnAPI(),
		Refused:       func(model, version string, o scheduler.Outcome) { inference.Refused(model, version, o.String()) },
	}, log.With("component", "api"))
	d.setupGRPC(cfg, inference)
	return d, nil
}

// drainer lets the repository drain a retired version through the scheduler.
type drainer struct{ s *scheduler.Scheduler }

func (d drainer) Drain(ctx context.Context, v *models.Version) error {
	return d.s.Forget(ctx, v)
}

// components is /health's view of the daemon: the caller's components plus configuration
// reloads.
func (d *Daemon) components() map[string]api.Component {
	out := map[string]api.Component{}
	if d.opts.Components != nil {
		maps.Copy(out, d.opts.Components())
	}
	d.stateMu.Lock()
	st := d.reload
	d.stateMu.Unlock()
	c := api.Component{State: "ok", Detail: st}
	if st.Result == "failed" {
		c.State = "degraded"
	}
	out["config"] = c
	out["tracing"] = d.tracingComponent()
	d.hardwareComponents(out)
	d.budgetComponent(out)
	return out
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
	cfg := d.config()
	ln := d.opts.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Server.Listen); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Server.Listen, err)
		}
	}
	ln = d.sec.listener(ln, cfg.Server.MaxConnections)
	d.handler.set(d.front(d.api, cfg))
	hs := &http.Server{
		Handler: &d.handler,
		// net/http answers headers over this bound itself, in plain text; below it, front
		// answers those over server.max_header_bytes with a KServe error.
		MaxHeaderBytes:    2 * cfg.Server.MaxHeaderBytes,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       cfg.Server.ReadTimeout,
		WriteTimeout:      cfg.Server.WriteTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	stopMetrics, merr := d.serveMetrics(cfg)
	if merr != nil {
		_ = hs.Close()
		return merr
	}
	defer stopMetrics()
	grpcErr, gerr := d.serveGRPC(cfg)
	if gerr != nil {
		_ = hs.Close()
		return gerr
	}
	d.addr <- ln.Addr()
	d.log.Info("listening", "addr", ln.Addr().String(), "repository", cfg.Models.Repository, "control", cfg.Models.Control)
	d.notify("STATUS=loading models from " + cfg.Models.Repository)

	stopExtending := d.extendTimeoutWhile("loading models from " + cfg.Models.Repository)
	stopHardware := d.startHardware(ctx)
	defer stopHardware()
	err := d.repo.Sync(ctx)
	stopExtending()
	if err != nil && ctx.Err() == nil {
		d.notify("STATUS=model repository unreadable: " + err.Error())
		d.log.Error("model repository unreadable; serving no models until it appears", "err", err)
	}
	if cfg.Cluster.Enabled && ctx.Err() == nil {
		c, h, err := d.startCluster(ctx, cfg, ln.Addr(), d.api)
		if err != nil {
			_ = hs.Close()
			return err
		}
		d.cluster.Store(c)
		d.handler.set(d.front(h, cfg))
	}
	watchCtx, stopWatching := context.WithCancel(ctx)
	d.startWatchers(watchCtx)
	if ctx.Err() == nil {
		d.api.SetPhase(api.PhaseServing)
		d.grpcChanged()
		ready, total := countReady(d.repo.Index())
		d.notify(fmt.Sprintf("READY=1\nSTATUS=serving %d of %d model versions on %s", ready, total, ln.Addr()))
		d.log.Info("ready", "model_versions_ready", ready, "model_versions", total)
	}
	stopHeartbeat := d.startHeartbeat(ctx)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-grpcErr:
		runErr = fmt.Errorf("grpc server: %w", err)
	}
	stopHeartbeat()
	stopWatching()
	d.stopWatchers()
	return errors.Join(runErr, d.shutdown(hs))
}

func (d *Daemon) shutdown(hs *http.Server) error {
	timeout := d.config().Server.ShutdownTimeout
	d.notify("STOPPING=1\nSTATUS=draining in-flight requests")
	d.log.Info("shutting down", "drain_timeout", timeout)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := d.cluster.Load()
	if c != nil {
		// Peers hear "draining" and route elsewhere before this node refuses anything; it
		// keeps serving meanwhile.
		c.leave(ctx, d.config().Cluster.LeaveTimeout)
	}
	d.api.SetPhase(api.PhaseStopping)
	// The HTTP and gRPC servers stop accepting at once and wait for every call in flight
	// (gRPC streams answer what they hold and end), both within the one timeout; the
	// scheduler then has nothing left but requests whose clients already left.
	var errs []error
	grpcDone := d.stopGRPC(ctx)
	if err := hs.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("drain of in-flight requests did not finish within %s: %w", timeout, err))
	}
	if err := <-grpcDone; err != nil {
		errs = append(errs, fmt.Errorf("drain of gRPC calls did not finish within %s: %w", timeout, err))
	}
	if err := d.sched.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if c != nil {
		c.close(ctx)
	}
	d.repo.Close(ctx)
	d.closeTracing(ctx)
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
