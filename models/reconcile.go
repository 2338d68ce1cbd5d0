package models

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"time"
)

// Locking. The loader's functions that end in Locked name, at the end of their doc comment,
// which of the repository's two locks the caller holds: "Caller holds loadMu, not mu" for
// those that load, drain or take mu themselves (mu is never held across a load or a drain),
// "Caller holds loadMu and mu" for those that change what the index publishes. The lock
// order is the one on Repository: loadMu, then mu.

// drainTimeout bounds the wait for a retired version's requests before its sessions close.
const drainTimeout = 60 * time.Second

// Sync brings every model in line with the files: new models and versions load, changed ones
// load as a new generation that replaces the old only once it is warm, removed ones drain and
// unload. Only an unreadable root is an error; a model that fails to load is recorded with its
// reason and, if an older generation serves, that one keeps serving.
func (r *Repository) Sync(ctx context.Context) error {
	r.lockLoader()
	defer r.loadMu.Unlock()
	entries, err := os.ReadDir(r.cur.Root)
	if err != nil {
		return fmt.Errorf("model repository %s: %w", r.cur.Root, err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() && e.Name()[0] != '.' {
			names[e.Name()] = true
		}
	}
	r.mu.RLock()
	for name := range r.models {
		names[name] = true
	}
	r.mu.RUnlock()
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	}) {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.cur.Control == ControlExplicit && r.unloaded[name] {
			continue
		}
		r.syncModelLocked(ctx, name)
	}
	r.synced.Store(true)
	return nil
}

// SyncModels reconciles the named models only (the watcher's report of what changed).
func (r *Repository) SyncModels(ctx context.Context, names []string) {
	r.lockLoader()
	defer r.loadMu.Unlock()
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		if r.cur.Control == ControlExplicit && r.unloaded[name] {
			continue
		}
		r.syncModelLocked(ctx, name)
	}
}

// LoadModel loads (or reloads) one model on request; only in explicit control mode.
func (r *Repository) LoadModel(ctx context.Context, name string) error {
	r.lockLoader()
	defer r.loadMu.Unlock()
	if r.cur.Control != ControlExplicit {
		return fmt.Errorf("%w: models.control is %q; loading on request needs \"explicit\"", ErrControl, r.cur.Control)
	}
	if !validName(name) {
		return fmt.Errorf("%w %q", ErrModelNotFound, name)
	}
	if st, err := os.Stat(filepath.Join(r.cur.Root, name)); err != nil || !st.IsDir() {
		return fmt.Errorf("%w %q: no directory %s", ErrModelNotFound, name, filepath.Join(r.cur.Root, name))
	}
	delete(r.unloaded, name)
	r.syncModelLocked(ctx, name)
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := r.models[name]
	switch {
	case m == nil:
		return fmt.Errorf("%w %q", ErrModelNotFound, name)
	case m.Err != nil:
		return fmt.Errorf("%w: model %q: %v", ErrUnavailable, name, m.Err)
	case m.LastError != nil:
		return fmt.Errorf("%w: model %q: %v (the previous generation still serves)", ErrUnavailable, name, m.LastError)
	}
	for _, v := range m.Versions {
		if v.state != StateReady {
			return fmt.Errorf("%w: model %q version %d: %s", ErrUnavailable, name, v.Number, v.reason)
		}
	}
	return nil
}

// UnloadModel drains and unloads one model on request; only in explicit control mode.
func (r *Repository) UnloadModel(ctx context.Context, name string) error {
	r.lockLoader()
	defer r.loadMu.Unlock()
	if r.cur.Control != ControlExplicit {
		return fmt.Errorf("%w: models.control is %q; unloading on request needs \"explicit\"", ErrControl, r.cur.Control)
	}
	r.mu.Lock()
	m, ok := r.models[name]
	if !ok {
		r.mu.Unlock()
		return fmt.Errorf("%w %q", ErrModelNotFound, name)
	}
	delete(r.models, name)
	r.markRetiredLocked(m.Versions)
	r.mu.Unlock()
	r.unloaded[name] = true
	r.log.Info("model unloaded on request", "model", name)
	r.retireLocked(ctx, m.Versions)
	return nil
}

func validName(name string) bool {
	return name != "" && name[0] != '.' && filepath.Base(name) == name
}

// syncModelLocked reconciles one model with its directory: it reads the directory, plans
// (plan.go), loads what the plan loads, and publishes and retires what the plan settles on.
// Caller holds loadMu, not mu.
func (r *Repository) syncModelLocked(ctx context.Context, name string) {
	dir := filepath.Join(r.cur.Root, name)
	log := r.log.With("model", name)
	r.mu.RLock()
	old := r.models[name]
	r.mu.RUnlock()

	disk := readModelDir(r.cur.Root, dir, r.cur.Defaults, log)
	p := planModel(name, disk, old, func(n int64) string {
		return fingerprint(versionDir(dir, n), disk.config, r.cur.Defaults)
	})
	switch p.kind {
	case planNothing:
		return
	case planRemove:
		log.Info("model removed from the repository; draining and unloading")
		r.mu.Lock()
		delete(r.models, name)
		r.markRetiredLocked(old.Versions)
		r.mu.Unlock()
		r.retireLocked(ctx, old.Versions)
		return
	case planFail:
		r.modelFailedLocked(ctx, p, log)
		return
	}

	r.mu.Lock()
	r.models[name] = p.interim()
	r.mu.Unlock()
	loaded := make([]*Version, len(p.steps))
	errs := make([]error, len(p.steps))
	for i, s := range p.steps {
		if s.load {
			loaded[i], errs[i] = r.loadVersionLocked(ctx, p, s, dir, log)
		}
	}
	out := p.settle(loaded, errs)
	for _, v := range p.unselected {
		if slices.Contains(out.held, v) {
			log.Warn("no newly selected version loaded; the previous version keeps serving", "version", v.Number)
		} else {
			log.Info("version no longer selected; draining and unloading", "version", v.Number)
		}
	}
	r.mu.Lock()
	r.models[name] = out.next
	r.markRetiredLocked(out.retire)
	r.mu.Unlock()
	r.retireLocked(ctx, out.retire)
}

// readModelDir reads what a model's directory holds: its settings and version directories. A
// model directory whose links lead outside root is read no further: the model fails with the
// reason.
func readModelDir(root, dir string, d Defaults, log *slog.Logger) modelOnDisk {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return modelOnDisk{missing: true}
	}
	if _, err := checkInRoot(root, dir); err != nil {
		log.Warn("ignoring a model directory outside the repository", "reason", err)
		return modelOnDisk{err: err}
	}
	if toml := filepath.Join(dir, ConfigFile); exists(toml) {
		if _, err := checkInRoot(root, toml); err != nil {
			log.Warn("ignoring a model.toml outside the repository", "reason", err)
			return modelOnDisk{err: fmt.Errorf("%w: %w", ErrConfig, err)}
		}
	}
	cfg, err := readConfig(dir, d)
	disk := modelOnDisk{config: cfg, err: err}
	if err == nil {
		disk.versions, disk.err = versionsOnDisk(dir, log)
	}
	return disk
}

func versionDir(modelDir string, n int64) string {
	return filepath.Join(modelDir, strconv.FormatInt(n, 10))
}

// loadVersionLocked loads a new generation for step s and returns it, READY or (with the
// error) UNAVAILABLE with its reason. Caller holds loadMu, not mu.
func (r *Repository) loadVersionLocked(ctx context.Context, p modelPlan, s versionStep, modelDir string, log *slog.Logger) (*Version, error) {
	v := &Version{Model: p.name, Number: s.number, Dir: versionDir(modelDir, s.number), Config: p.config, fingerprint: s.fingerprint}
	vlog := log.With("version", s.number)
	start := time.Now()
	err := r.openVersion(ctx, v, vlog)
	r.events(Event{Model: p.name, Version: s.number, Err: err})
	if err == nil {
		v.state = StateReady
		vlog.Info("model version ready", "instances", len(v.Sessions), "provider", v.Provider,
			"inputs", len(v.Signature.Inputs), "outputs", len(v.Signature.Outputs), "load_time", time.Since(start).Round(time.Millisecond))
		return v, nil
	}
	v.state, v.reason = StateUnavailable, err.Error()
	if s.fallsBack() {
		vlog.Error("update failed; the previous generation keeps serving", "reason", err)
	} else {
		vlog.Error("model version unavailable", "reason", err)
	}
	return v, err
}

// modelFailedLocked records a model whose settings or layout are invalid (a planFail plan). If
// an older generation serves, it keeps serving and the failure is its LastError. Caller holds
// loadMu, not mu.
func (r *Repository) modelFailedLocked(ctx context.Context, p modelPlan, log *slog.Logger) {
	r.events(Event{Model: p.name, Err: p.err})
	r.mu.Lock()
	if p.keepServing {
		kept := *p.old
		kept.LastError = p.err
		r.models[p.name] = &kept
		r.mu.Unlock()
		log.Error("model update failed; the previous generation keeps serving", "reason", p.err)
		return
	}
	r.models[p.name] = &Model{Name: p.name, Config: p.config, Err: p.err}
	var retire []*Version
	if p.old != nil {
		retire = p.old.Versions
		r.markRetiredLocked(retire)
	}
	r.mu.Unlock()
	log.Error("model unavailable", "reason", p.err)
	r.retireLocked(ctx, retire)
}

// markRetiredLocked makes vs unroutable: requests that hold them re-resolve. Caller holds
// loadMu and mu.
func (r *Repository) markRetiredLocked(vs []*Version) {
	for _, v := range vs {
		v.retired.Store(true)
		if v.state == StateReady {
			v.state = StateUnloading
		}
	}
}

// retireLocked drains the retired versions and closes their sessions; it blocks for as long
// as the drain takes. Caller holds loadMu, not mu, and has already made them unroutable.
func (r *Repository) retireLocked(ctx context.Context, vs []*Version) {
	closed := false
	defer func() {
		if closed {
			// Hand the retired generation's Go memory back to the system too, so that a
			// daemon that reloads all day does not keep its peak forever.
			debug.FreeOSMemory()
		}
	}()
	for _, v := range vs {
		if len(v.Sessions) == 0 {
			continue
		}
		if r.drainer != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
			if err := r.drainer.Drain(dctx, v); err != nil {
				r.log.Warn("drain of a retired version did not finish; closing it anyway",
					"model", v.Model, "version", v.Number, "err", err)
			}
			cancel()
		}
		closeVersion(v)
		delete(r.onGPU, v)
		closed = true
		r.log.Debug("model version unloaded", "model", v.Model, "version", v.Number)
	}
}

// versionsOnDisk lists the numeric version directories of a model, ascending.
func versionsOnDisk(dir string, log *slog.Logger) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || n < 1 {
			log.Debug("ignoring directory that is not a version number", "dir", e.Name())
			continue
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("no numeric version directory (expected <model>/<version>/model.onnx)")
	}
	slices.Sort(out)
	return out, nil
}

// fingerprint identifies what a version would be loaded from: every file of its directory
// (name, size, modification time), the model's effective settings and the daemon's defaults.
func fingerprint(dir string, cfg Config, d Defaults) string {
	h := sha256.New()
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", rel, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	settings, _ := json.Marshal(cfg)
	h.Write(settings)
	fmt.Fprintf(h, "%+v", d)
	return hex.EncodeToString(h.Sum(nil))
}

// openVersion starts the version's host, reads its signature there, checks it against the
// model's settings, opens its instances and warms them up, all within [limits] load_timeout.
// On error every session it opened is closed again and its host ended.
func (r *Repository) openVersion(ctx context.Context, v *Version, log *slog.Logger) error {
	ctx, cancel := loadContext(ctx, v)
	defer cancel()
	path := filepath.Join(v.Dir, ModelFile)
	if err := checkModelPath(r.cur.Root, path); err != nil {
		return err
	}
	if err := r.checkModelFile(path, v); err != nil {
		return err
	}
	host, err := r.startHost(ctx, v)
	if err != nil {
		return loadError(ctx, err)
	}
	v.host, v.closed = host, make(chan struct{})
	if err := r.openInHost(ctx, v, path, log); err != nil {
		closeVersion(v)
		v.Sessions = nil
		return loadError(ctx, err)
	}
	r.watchHost(v, log)
	return nil
}

// openInHost is openVersion's work inside v's host.
func (r *Repository) openInHost(ctx context.Context, v *Version, path string, log *slog.Logger) error {
	sig, err := v.host.Inspect(ctx, path)
	if err != nil {
		return err
	}
	if sig.Inputs, err = v.Config.effectiveInputs(sig.Inputs); err != nil {
		return err
	}
	v.Signature = sig
	defaultBatching(v, log)
	if err := checkBatchDims(v.Config.MaxBatchSize, sig.Inputs, "input"); err != nil {
		return err
	}
	if err := checkBatchDims(v.Config.MaxBatchSize, sig.Outputs, "output"); err != nil {
		return err
	}
	v.Signature = sig
	if err := r.checkDeclaredShapes(v); err != nil {
		return err
	}
	if err := r.openInstancesLocked(ctx, v, path, log); err != nil {
		return err
	}
	limit, err := r.memoryLimitLocked(v)
	if err != nil {
		return err
	}
	if err := warmup(ctx, v, limit, log); err != nil {
		return err
	}
	return r.settleGPULocked(ctx, v, log)
}
