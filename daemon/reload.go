package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/watch"
)

// Reload reads the configuration file again and applies it as a transaction: an invalid file
// changes nothing and says why (log, inferd_config_reloads_total{result="failed"}, /health,
// sd_notify STATUS=); identical bytes do nothing; otherwise every setting that can change live
// does (log level, request limits, scheduler defaults, model repository settings, after which
// the models are reconciled), and settings that need a restart are reported as such while the
// daemon keeps running on the old value. Around it the service manager hears RELOADING=1 and
// READY=1, as Type=notify-reload expects.
func (d *Daemon) Reload(ctx context.Context) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.opts.ConfigPath == "" {
		return errors.New("reload: the daemon was started without a configuration file")
	}
	d.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicMicros()))
	stopExtending := d.extendTimeoutWhile("reloading the configuration")
	result, restart, err := d.reloadLocked(ctx)
	stopExtending()
	d.metrics.ConfigReloads.WithLabelValues(result).Inc()
	d.metrics.ConfigLastReloadTimestamp.Set(float64(time.Now().Unix()))
	st := reloadState{At: time.Now(), Result: result, RestartRequired: restart}
	status := "configuration reloaded"
	switch {
	case err != nil:
		st.Error = err.Error()
		d.metrics.ConfigLastReloadSuccessful.Set(0)
		status = "configuration reload failed, previous configuration in force: " + firstLine(err.Error())
		d.log.Error("configuration reload failed; the previous configuration stays in force", "file", d.opts.ConfigPath, "err", err)
	case result == "unchanged":
		d.metrics.ConfigLastReloadSuccessful.Set(1)
		d.metrics.ConfigLastReloadSuccessTimestamp.SetToCurrentTime()
		status = "configuration unchanged"
		d.log.Info("configuration unchanged", "file", d.opts.ConfigPath)
	default:
		d.metrics.ConfigLastReloadSuccessful.Set(1)
		d.metrics.ConfigLastReloadSuccessTimestamp.SetToCurrentTime()
		if len(restart) > 0 {
			status = fmt.Sprintf("configuration reloaded; restart needed for %v", restart)
		}
	}
	d.stateMu.Lock()
	d.reload = st
	d.stateMu.Unlock()
	d.notify("READY=1\nSTATUS=" + status)
	return err
}

func firstLine(s string) string {
	if i := bytes.IndexByte([]byte(s), '\n'); i >= 0 {
		return s[:i] + " (and more)"
	}
	return s
}

// reloadLocked does the work of Reload; it returns the result label, the keys that need a
// restart, and the reason for a failure.
func (d *Daemon) reloadLocked(ctx context.Context) (result string, restart []string, err error) {
	data, err := os.ReadFile(d.opts.ConfigPath)
	if err != nil {
		return "failed", nil, fmt.Errorf("reading %s: %w", d.opts.ConfigPath, err)
	}
	if d.applied != nil && bytes.Equal(data, d.applied) {
		// routing.toml is a file of its own: editing it alone and reloading applies it.
		if c := d.cluster.Load(); c == nil || !c.policyChanged(d.cfg.Cluster.PolicyFile) {
			return "unchanged", nil, nil
		}
	}
	next, err := config.LoadBytes(d.opts.ConfigPath, data, d.opts.Env)
	if err != nil {
		return "failed", nil, err
	}
	old := d.cfg
	// The routing policy is part of the transaction: a broken routing.toml fails the reload
	// before anything changes.
	var applyPolicy func()
	if c := d.cluster.Load(); c != nil && next.Cluster.Enabled {
		if applyPolicy, err = c.prepare(next.Cluster.PolicyFile); err != nil {
			return "failed", nil, err
		}
	}
	restart = restartRequired(old, next)
	for _, k := range restart {
		d.log.Warn("this setting changes only at restart; keeping the running value", "key", k)
	}
	// What cannot change live keeps its running value, so the daemon's view stays true.
	applied := *next
	applied.Server.Listen = old.Server.Listen
	applied.Server.ReadHeaderTimeout, applied.Server.ReadTimeout = old.Server.ReadHeaderTimeout, old.Server.ReadTimeout
	applied.Server.WriteTimeout, applied.Server.IdleTimeout = old.Server.WriteTimeout, old.Server.IdleTimeout
	applied.Log.Format = old.Log.Format
	applied.Engine.OnnxRuntimeLibrary = old.Engine.OnnxRuntimeLibrary
	applied.GPU.InitRetry, applied.GPU.TelemetryTimeout = old.GPU.InitRetry, old.GPU.TelemetryTimeout
	applied.Metrics.Listen = old.Metrics.Listen
	applied.Server.MaxHeaderBytes, applied.Server.MaxConnections = old.Server.MaxHeaderBytes, old.Server.MaxConnections
	applied.Server.TLS, applied.Auth = old.Server.TLS, old.Auth
	policyFile := next.Cluster.PolicyFile
	applied.Cluster = old.Cluster
	applied.Cluster.PolicyFile = policyFile

	if d.opts.LogLevel != nil {
		var level slog.Level
		if err := level.UnmarshalText([]byte(applied.Log.Level)); err == nil {
			d.opts.LogLevel.Set(level)
		}
	}
	d.api.SetMaxRequestBytes(applied.Server.MaxRequestBytes)
	d.api.SetLimits(limits(&applied))
	if applyPolicy != nil {
		applyPolicy()
	}
	d.repo.SetDefaults(defaults(&applied))
	d.repo.SetGPUMemoryFraction(applied.GPU.MemoryFraction)
	d.repo.SetControl(applied.Models.Control)
	if applied.Models.Repository != old.Models.Repository {
		d.log.Info("model repository moved", "from", old.Models.Repository, "to", applied.Models.Repository)
		d.repo.SetRoot(applied.Models.Repository)
	}
	d.cfg, d.applied = &applied, data
	if d.watchers != nil && watchKey(&applied) != watchKey(old) {
		d.restartModelWatcherLocked(ctx)
	}
	if err := d.repo.Sync(ctx); err != nil {
		d.log.Error("model repository unreadable after reload", "err", err)
	}
	d.log.Info("configuration reloaded", "file", d.opts.ConfigPath, "log_level", applied.Log.Level,
		"repository", applied.Models.Repository, "control", applied.Models.Control)
	return "applied", restart, nil
}

// restartRequired lists the keys whose change only a restart applies.
func restartRequired(old, next *config.Config) []string {
	var keys []string
	add := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	add(old.Server.Listen != next.Server.Listen, "server.listen")
	add(old.Server.ReadHeaderTimeout != next.Server.ReadHeaderTimeout, "server.read_header_timeout")
	add(old.Server.ReadTimeout != next.Server.ReadTimeout, "server.read_timeout")
	add(old.Server.WriteTimeout != next.Server.WriteTimeout, "server.write_timeout")
	add(old.Server.IdleTimeout != next.Server.IdleTimeout, "server.idle_timeout")
	add(old.Log.Format != next.Log.Format, "log.format")
	add(old.Engine.OnnxRuntimeLibrary != next.Engine.OnnxRuntimeLibrary, "engine.onnxruntime_library")
	add(old.GPU.InitRetry != next.GPU.InitRetry, "gpu.init_retry")
	add(old.GPU.TelemetryTimeout != next.GPU.TelemetryTimeout, "gpu.telemetry_timeout")
	add(old.Metrics.Listen != next.Metrics.Listen, "metrics.listen")
	add(old.Server.MaxHeaderBytes != next.Server.MaxHeaderBytes, "server.max_header_bytes")
	add(old.Server.MaxConnections != next.Server.MaxConnections, "server.max_connections")
	// The files named here are re-read when they change; their names are fixed at start.
	add(old.Server.TLS != next.Server.TLS, "server.tls")
	add(old.Auth != next.Auth, "auth")
	oc, nc := old.Cluster, next.Cluster
	oc.PolicyFile, nc.PolicyFile = "", ""
	add(!reflect.DeepEqual(oc, nc), "cluster")
	return keys
}

func monotonicMicros() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}

// watchers are the goroutines that follow the configuration file and the model repository.
type watchers struct {
	wg           sync.WaitGroup
	stopModels   context.CancelFunc
	modelsDone   chan struct{}
	configCancel context.CancelFunc
}

// watchKey changes when the model watcher must restart.
func watchKey(c *config.Config) string {
	return fmt.Sprintf("%s|%s|%v|%s|%s|%s", c.Models.Repository, c.Models.Control, c.Models.Poll,
		c.Models.PollInterval, c.Models.QuietPeriod, c.Models.ReadyMarker)
}

func (d *Daemon) startWatchers(ctx context.Context) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.watchers = &watchers{}
	if d.opts.ConfigPath != "" {
		if data, err := os.ReadFile(d.opts.ConfigPath); err == nil {
			d.applied = data
		}
		d.startConfigWatcherLocked(ctx)
	}
	d.restartModelWatcherLocked(ctx)
}

func (d *Daemon) stopWatchers() {
	d.reloadMu.Lock()
	w := d.watchers
	d.reloadMu.Unlock()
	if w == nil {
		return
	}
	if w.stopModels != nil {
		w.stopModels()
	}
	if w.configCancel != nil {
		w.configCancel()
	}
	w.wg.Wait()
}

func (d *Daemon) watchOptions(c *config.Config) watch.Options {
	return watch.Options{Quiet: c.Models.QuietPeriod, PollInterval: c.Models.PollInterval, Poll: c.Models.Poll, Marker: c.Models.ReadyMarker}
}

func (d *Daemon) startConfigWatcherLocked(ctx context.Context) {
	log := d.log.With("component", "config-watch")
	fw, err := watch.NewFile(d.opts.ConfigPath, d.watchOptions(d.cfg), log)
	if err != nil {
		log.Error("not watching the configuration file; reload with SIGHUP", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	d.watchers.configCancel = cancel
	d.watchers.wg.Add(2)
	go func() { defer d.watchers.wg.Done(); _ = fw.Run(ctx) }()
	go func() {
		defer d.watchers.wg.Done()
		for range fw.Changes() {
			log.Info("configuration file changed; reloading", "file", d.opts.ConfigPath)
			_ = d.Reload(ctx)
		}
	}()
}

// restartModelWatcherLocked (re)starts the model watcher for the current settings; only in
// watch control mode. Caller holds reloadMu.
func (d *Daemon) restartModelWatcherLocked(ctx context.Context) {
	w := d.watchers
	if w.stopModels != nil {
		w.stopModels()
		<-w.modelsDone
		w.stopModels = nil
	}
	if d.cfg.Models.Control != models.ControlWatch {
		return
	}
	log := d.log.With("component", "model-watch")
	rw, err := watch.NewRepository(d.cfg.Models.Repository, d.watchOptions(d.cfg), log)
	if err != nil {
		log.Error("not watching the model repository", "err", err)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.stopModels, w.modelsDone = cancel, done
	w.wg.Add(2)
	var inner sync.WaitGroup
	inner.Add(2)
	go func() { defer w.wg.Done(); defer inner.Done(); _ = rw.Run(ctx) }()
	go func() {
		defer w.wg.Done()
		defer inner.Done()
		for names := range rw.Changes() {
			log.Info("model files changed", "models", names)
			d.repo.SyncModels(ctx, names)
		}
	}()
	go func() { inner.Wait(); close(done) }()
}
