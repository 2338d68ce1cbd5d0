package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/watch"
)

// Reload reads the configuration file again and applies it as a transaction: a file that is
// invalid or cannot be applied (a routing policy that fails its checks, a model repository
// that cannot be read or watched) changes nothing and says why (log,
// inferd_config_reloads_total{result="failed"}, /health, sd_notify STATUS=); identical bytes do
// nothing; otherwise the new settings (settings.go) replace the old in one swap, the models are
// reconciled by them, and the keys that need a restart (config's reload:"restart" tags) are
// reported as such while the daemon keeps running on their old values. Around it the service
// manager hears RELOADING=1 and READY=1, as Type=notify-reload expects.
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
// restart, and the reason for a failure. Everything that can fail before the new settings are
// in force runs first (parse, validate, the routing policy, the model watcher); the one step
// after the swap that can fail, reading the model repository, swaps the old settings back, so
// a failure always leaves the previous configuration in force.
func (d *Daemon) reloadLocked(ctx context.Context) (result string, restart []string, err error) {
	data, err := os.ReadFile(d.opts.ConfigPath)
	if err != nil {
		return "failed", nil, fmt.Errorf("reading %s: %w", d.opts.ConfigPath, err)
	}
	old := d.settings.Load()
	if d.applied != nil && bytes.Equal(data, d.applied) {
		// routing.toml is a file of its own: editing it alone and reloading applies it.
		if c := d.cluster.Load(); c == nil || !c.policyChanged(old.cfg.Cluster.PolicyFile) {
			return "unchanged", nil, nil
		}
	}
	loaded, err := config.LoadBytes(d.opts.ConfigPath, data, d.opts.Env)
	if err != nil {
		return "failed", nil, err
	}
	// The routing policy is part of the transaction: a broken routing.toml fails the reload
	// before anything changes.
	var applyPolicy func()
	if c := d.cluster.Load(); c != nil && loaded.Cluster.Enabled {
		if applyPolicy, err = c.prepare(loaded.Cluster.PolicyFile); err != nil {
			return "failed", nil, err
		}
	}
	restart = config.RestartRequired(old.cfg, loaded)
	next := newSettings(config.KeepRestartOnly(old.cfg, loaded))
	// A new exporter is built before the swap and put in force after it (tracing.go).
	traces, err := d.tracing.Build(d.tracingSettings(next.cfg))
	if err != nil {
		return "failed", restart, err
	}
	rewatch := d.watchers != nil && watchKey(next.cfg) != watchKey(old.cfg)
	var rw *watch.Repo
	if rewatch {
		if rw, err = d.newModelWatcher(next.cfg); err != nil {
			traces.Discard()
			return "failed", restart, err
		}
	}

	d.setSettingsLocked(next)
	if err := d.repo.Sync(ctx); err != nil {
		d.setSettingsLocked(old)
		traces.Discard()
		return "failed", restart, fmt.Errorf("applying the configuration: %w", err)
	}
	d.tracing.Install(traces)
	if applyPolicy != nil {
		applyPolicy()
	}
	if rewatch {
		d.restartModelWatcherLocked(ctx, rw)
	}
	d.applied = data
	for _, k := range restart {
		d.log.Warn("this setting changes only at restart; keeping the running value", "key", k)
	}
	if next.cfg.Models.Repository != old.cfg.Models.Repository {
		d.log.Info("model repository moved", "from", old.cfg.Models.Repository, "to", next.cfg.Models.Repository)
	}
	d.log.Info("configuration reloaded", "file", d.opts.ConfigPath, "log_level", next.cfg.Log.Level,
		"repository", next.cfg.Models.Repository, "control", next.cfg.Models.Control)
	return "applied", restart, nil
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
	rw, err := d.newModelWatcher(d.config())
	if err != nil {
		d.log.Error("not watching the model repository", "component", "model-watch", "err", err)
	}
	d.restartModelWatcherLocked(ctx, rw)
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
	fw, err := watch.NewFile(d.opts.ConfigPath, d.watchOptions(d.config()), log)
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

// newModelWatcher returns the model watcher cfg asks for; nil unless models.control is watch.
func (d *Daemon) newModelWatcher(cfg *config.Config) (*watch.Repo, error) {
	if cfg.Models.Control != models.ControlWatch {
		return nil, nil
	}
	rw, err := watch.NewRepository(cfg.Models.Repository, d.watchOptions(cfg), d.log.With("component", "model-watch"))
	if err != nil {
		return nil, fmt.Errorf("watching the model repository: %w", err)
	}
	return rw, nil
}

// restartModelWatcherLocked stops the model watcher and runs rw in its place (nil: none).
// Caller holds reloadMu.
func (d *Daemon) restartModelWatcherLocked(ctx context.Context, rw *watch.Repo) {
	w := d.watchers
	if w.stopModels != nil {
		w.stopModels()
		<-w.modelsDone
		w.stopModels = nil
	}
	if rw == nil {
		return
	}
	log := d.log.With("component", "model-watch")
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
