package models

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"time"
)

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

// syncModelLocked reconciles one model with its directory. Caller holds loadMu.
func (r *Repository) syncModelLocked(ctx context.Context, name string) {
	dir := filepath.Join(r.cur.Root, name)
	log := r.log.With("model", name)
	r.mu.RLock()
	old := r.models[name]
	r.mu.RUnlock()

	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		if old != nil {
			log.Info("model removed from the repository; draining and unloading")
			r.mu.Lock()
			delete(r.models, name)
			r.markRetiredLocked(old.Versions)
			r.mu.Unlock()
			r.retireLocked(ctx, old.Versions)
		}
		return
	}

	cfg, err := readConfig(dir, r.cur.Defaults)
	var selected []int64
	if err == nil {
		var onDisk []int64
		if onDisk, err = versionsOnDisk(dir, log); err == nil {
			if selected = cfg.VersionPolicy.selectVersions(onDisk); len(selected) == 0 {
				err = fmt.Errorf("no version on disk matches the version policy (found %v)", onDisk)
			}
		}
	}
	if err != nil {
		r.modelFailedLocked(ctx, name, old, cfg, err, log)
		return
	}

	current := map[int64]*Version{}
	failed := map[int64]string{}
	if old != nil {
		for _, v := range old.Versions {
			current[v.Number] = v
		}
		failed = old.failed
	}
	r.publishLoadingLocked(name, old, cfg, selected, current)

	next := &Model{Name: name, Config: cfg, failed: map[int64]string{}}
	var retire []*Version
	for _, n := range selected {
		vdir := filepath.Join(dir, strconv.FormatInt(n, 10))
		fp := fingerprint(vdir, cfg, r.cur.Defaults)
		cur := current[n]
		if cur != nil && cur.state != StateLoading && (cur.fingerprint == fp || failed[n] == fp && cur.state == StateReady) {
			next.Versions = append(next.Versions, cur)
			if failed[n] == fp {
				next.failed[n] = fp
				next.LastError = old.LastError
			}
			continue
		}
		v := &Version{Model: name, Number: n, Dir: vdir, Config: cfg, fingerprint: fp}
		vlog := log.With("version", n)
		start := time.Now()
		err := r.openVersion(ctx, v, vlog)
		r.events(Event{Model: name, Version: n, Err: err})
		switch {
		case err == nil:
			v.state = StateReady
			vlog.Info("model version ready", "instances", len(v.Sessions), "provider", v.Provider,
				"inputs", len(v.Signature.Inputs), "outputs", len(v.Signature.Outputs), "load_time", time.Since(start).Round(time.Millisecond))
			next.Versions = append(next.Versions, v)
			if cur != nil {
				retire = append(retire, cur)
			}
		case cur != nil && cur.state == StateReady:
			vlog.Error("update failed; the previous generation keeps serving", "reason", err)
			next.Versions = append(next.Versions, cur)
			next.failed[n] = fp
			next.LastError = fmt.Errorf("version %d: %w", n, err)
		default:
			v.state, v.reason = StateUnavailable, err.Error()
			vlog.Error("model version unavailable", "reason", err)
			next.Versions = append(next.Versions, v)
			if cur != nil {
				retire = append(retire, cur)
			}
		}
	}
	// Versions the policy no longer selects leave, unless nothing selected loaded: then the
	// ones that serve keep serving until a new version does.
	servesNew := slices.ContainsFunc(next.Versions, func(v *Version) bool { return v.state == StateReady })
	for _, n := range slices.Sorted(maps.Keys(current)) {
		v := current[n]
		if slices.Contains(selected, n) {
			continue
		}
		if !servesNew && v.state == StateReady {
			log.Warn("no newly selected version loaded; the previous version keeps serving", "version", n)
			next.Versions = append(next.Versions, v)
			if next.LastError == nil {
				next.LastError = errors.New("no version selected by the policy loaded")
			}
			continue
		}
		log.Info("version no longer selected; draining and unloading", "version", n)
		retire = append(retire, v)
	}
	slices.SortFunc(next.Versions, func(a, b *Version) int { return cmp.Compare(a.Number, b.Number) })
	r.mu.Lock()
	r.models[name] = next
	r.markRetiredLocked(retire)
	r.mu.Unlock()
	r.retireLocked(ctx, retire)
}

// publishLoadingLocked shows the versions that have nothing serving yet as LOADING while they
// load; versions that serve keep serving.
func (r *Repository) publishLoadingLocked(name string, old *Model, cfg Config, selected []int64, current map[int64]*Version) {
	var interim []*Version
	for _, n := range selected {
		if v := current[n]; v != nil && v.state == StateReady {
			interim = append(interim, v)
		} else if v == nil {
			interim = append(interim, &Version{Model: name, Number: n, Config: cfg, state: StateLoading})
		} else {
			interim = append(interim, v)
		}
	}
	// Versions the policy is about to drop keep serving until the new ones are ready.
	for n, v := range current {
		if !slices.Contains(selected, n) && v.state == StateReady {
			interim = append(interim, v)
		}
	}
	slices.SortFunc(interim, func(a, b *Version) int { return cmp.Compare(a.Number, b.Number) })
	m := &Model{Name: name, Config: cfg, Versions: interim}
	if old != nil {
		m.LastError, m.failed = old.LastError, old.failed
	}
	r.mu.Lock()
	r.models[name] = m
	r.mu.Unlock()
}

// modelFailedLocked records a model whose settings or layout are invalid. If an older
// generation serves, it keeps serving and the failure is its LastError.
func (r *Repository) modelFailedLocked(ctx context.Context, name string, old *Model, cfg Config, err error, log *slog.Logger) {
	r.events(Event{Model: name, Err: err})
	r.mu.Lock()
	if old != nil && slices.ContainsFunc(old.Versions, func(v *Version) bool { return v.state == StateReady }) {
		kept := *old
		kept.LastError = err
		r.models[name] = &kept
		r.mu.Unlock()
		log.Error("model update failed; the previous generation keeps serving", "reason", err)
		return
	}
	r.models[name] = &Model{Name: name, Config: cfg, Err: err}
	var retire []*Version
	if old != nil {
		retire = old.Versions
		r.markRetiredLocked(retire)
	}
	r.mu.Unlock()
	log.Error("model unavailable", "reason", err)
	r.retireLocked(ctx, retire)
}

func (r *Repository) markRetiredLocked(vs []*Version) {
	for _, v := range vs {
		v.retired.Store(true)
		if v.state == StateReady {
			v.state = StateUnloading
		}
	}
}

// retireLocked drains the retired versions and closes their sessions. Caller holds loadMu and
// has already made them unroutable.
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
		closeAll(v.Sessions)
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

// openVersion reads the version's signature, checks it against the model's settings, opens
// its instances and warms them up. On error every session it opened is closed again.
func (r *Repository) openVersion(ctx context.Context, v *Version, log *slog.Logger) error {
	path := filepath.Join(v.Dir, ModelFile)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := r.checkModelFile(path, max(v.Config.Instance.Count, 1)); err != nil {
		return err
	}
	sig, err := r.rt.Inspect(path)
	if err != nil {
		return err
	}
	if sig.Inputs, err = v.Config.effectiveInputs(sig.Inputs); err != nil {
		return err
	}
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
	if err := warmup(ctx, v, log); err != nil {
		closeAll(v.Sessions)
		v.Sessions = nil
		return err
	}
	if err := r.settleGPULocked(ctx, v, log); err != nil {
		closeAll(v.Sessions)
		v.Sessions = nil
		return err
	}
	return nil
}
