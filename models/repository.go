package models

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/scheduler"
)

// State is a model version's lifecycle state, as the repository index reports it.
type State string

// States of the repository extension.
const (
	StateLoading     State = "LOADING"
	StateReady       State = "READY"
	StateUnavailable State = "UNAVAILABLE"
	StateUnloading   State = "UNLOADING"
)

// Errors returned by Resolve and the explicit load and unload calls; the HTTP API maps them to
// statuses with errors.Is.
var (
	ErrModelNotFound   = errors.New("unknown model")
	ErrVersionNotFound = errors.New("unknown version")
	ErrUnavailable     = errors.New("model version is not ready")
	// ErrControl: the call is not allowed in the repository's control mode.
	ErrControl = errors.New("not allowed in this model control mode")
)

// Version is one generation of one version of a model: the files it was loaded from, its
// settings and its sessions. Its exported fields never change after it is published; a change
// on disk makes a new Version that replaces it.
type Version struct {
	Model  string
	Number int64
	Dir    string
	Config Config
	// Signature is the model's inputs and outputs after model.toml's overrides.
	Signature engine.Signature
	// Sessions are the instances; empty unless the version loaded.
	Sessions []engine.Session
	// Provider is the execution provider the sessions run on.
	Provider string
	// GPUs is the GPU (NVML index) of each session, in Sessions' order; nil on the CPU.
	GPUs []int
	// GPUMemory is what each session is taken to hold on its GPU, in bytes: the estimate it
	// was placed by, replaced by measured usage once loaded (when NVML can tell).
	GPUMemory []uint64
	// Fallback says why a version whose device is "gpu" (with cpu_fallback) or "auto" runs on
	// the CPU; empty otherwise.
	Fallback string
	// Tuning is how its configuration was chosen (tune.go).
	Tuning Tuning

	scale instanceSet // the instances opened and closed as the load moves (scale.go)

	fingerprint string         // what it was loaded from: files and effective settings
	baseline    map[int]uint64 // this process's GPU memory before the load, per GPU; loader only
	retired     atomic.Bool    // no longer routable; requests that still hold it must re-resolve

	host      engine.Host   // where Sessions live (host.go); set by the loader before publishing
	closed    chan struct{} // closed by closeVersion; made with host
	closeOnce sync.Once

	state  State  // guarded by Repository.mu
	reason string // guarded by Repository.mu
}

// A Version is what the scheduler queues requests for: the scheduler keys its queues by the
// pointer, so every request that resolved the same generation shares its queue, and a reload
// (a new Version) starts a new queue in the same series.
var (
	_ scheduler.Target = (*Version)(nil)
	_ scheduler.Series = (*Version)(nil)
)

// Instances returns the version's sessions (scheduler.Target).
func (v *Version) Instances() []engine.Session { return v.Sessions }

// Policy is how the scheduler queues and batches the version's requests (scheduler.Target).
func (v *Version) Policy() scheduler.Policy {
	p := v.Config.schedulerPolicy()
	if v.Provider != engine.ProviderCUDA {
		p.Threads = max(v.Tuning.IntraOpThreads, 1) // a run on a GPU keeps no core busy
	}
	if v.Tuning.service != nil {
		p.ServiceTimes, p.LatencyBudget = v.Tuning.service, v.Tuning.latencyBudget
		if !v.Config.set.maxQueueDelay {
			p.MaxQueueDelay = 0 // the tuned batcher's own bound, unless model.toml sets one
		}
		if v.scales() {
			p.ScaleDownAfter, p.MinInstances = v.Config.Tuning.scaleDownAfter(), v.Config.Tuning.MinInstances
		}
	}
	return p
}

// Series names the model version whose generation v is, so that the scheduler's totals add up
// across reloads (scheduler.Series).
func (v *Version) Series() (model, version string) { return v.Model, v.Label() }

// Retired reports whether a newer generation replaced this one or it was unloaded. A request
// that resolved it before and could not run on it should resolve again (scheduler.Target).
func (v *Version) Retired() bool { return v.retired.Load() }

// Label is the version number as the protocol spells it.
func (v *Version) Label() string { return strconv.FormatInt(v.Number, 10) }

// Model is a directory of the repository.
type Model struct {
	Name   string
	Config Config
	// Err is set when the model as a whole cannot load (invalid model.toml, no versions) and
	// nothing of it serves.
	Err error
	// Versions are the versions the policy selected, ascending, each the generation serving
	// (or, when none loaded, the last that failed).
	Versions []*Version
	// LastError is the last failed attempt to update a model that still serves its previous
	// generation.
	LastError error

	failed map[int64]string // fingerprints that failed to load, not retried until they change
}

// IndexEntry is one row of the repository index.
type IndexEntry struct {
	Name    string
	Version string
	State   State
	Reason  string
	// Worker is the version's worker process (isolation = "process"); zero otherwise.
	Worker engine.HostStatus
}

// Drainer stops a retired version's traffic: it waits until the requests already given to the
// version have finished (or ctx ends). The repository closes the version's sessions after.
type Drainer interface {
	Drain(ctx context.Context, v *Version) error
}

// Control modes of the repository.
const (
	// ControlWatch: the daemon reconciles models when their files change; the load and unload
	// API is refused.
	ControlWatch = "watch"
	// ControlExplicit: models change only through Load and Unload (and a full Sync).
	ControlExplicit = "explicit"
	// ControlNone: the models loaded at start stay as they are until restart (or reload).
	ControlNone = "none"
)

// Settings are the daemon-wide settings the repository loads models by. The repository reads
// them when a change of the model set begins (Sync, SyncModels, LoadModel, UnloadModel) and
// keeps that value until the change ends, so one change sees one configuration. A value is
// never changed once handed over: a configuration reload makes a new one.
type Settings struct {
	// Root is the repository directory. A change of it makes the next Sync unload the models
	// that are not in the new directory and load those that are.
	Root string
	// Control is the control mode (ControlWatch, ControlExplicit or ControlNone); "" is
	// ControlWatch.
	Control string
	// Defaults are what a model.toml that says nothing gets; a change reloads (at the next
	// Sync) the models whose effective settings it changes.
	Defaults Defaults
	// GPUMemoryFraction is gpu.memory_fraction, the share of a GPU's free memory a new version
	// may be placed into; 0 is DefaultGPUMemoryFraction. Versions placed already stay.
	GPUMemoryFraction float64
}

func (s Settings) normalized() Settings {
	s.Control = cmp.Or(s.Control, ControlWatch)
	s.Defaults = s.Defaults.normalized()
	s.GPUMemoryFraction = cmp.Or(s.GPUMemoryFraction, DefaultGPUMemoryFraction)
	return s
}

// Repository is the set of models under one root directory.
type Repository struct {
	iso      engine.Isolator
	log      *slog.Logger
	settings func() Settings

	// loadMu serializes every change of the model set (sync, load, unload, close): one loader
	// at a time. Lock order: loadMu, then mu; mu is never held while a model loads or drains.
	loadMu   sync.Mutex
	cur      Settings        // the settings of the change in progress (lockLoader); guarded by loadMu
	drainer  Drainer         // guarded by loadMu
	unloaded map[string]bool // explicit mode: models unloaded by request; guarded by loadMu

	synced atomic.Bool // the first Sync has finished

	devices Devices           // guarded by loadMu
	onGPU   map[*Version]bool // loaded versions holding GPU memory; guarded by loadMu

	memProbe MemoryProbe // guarded by loadMu (memguard.go)
	tuning   TuningEnv   // guarded by loadMu (tune.go)

	mu         sync.RWMutex
	models     map[string]*Model
	events     func(Event)     // guarded by loadMu
	hostEvents func(HostEvent) // guarded by loadMu
}

// Event reports the outcome of loading one version, for metrics and logs.
type Event struct {
	Model   string
	Version int64
	// Err is nil for a version that now serves.
	Err error
}

// New returns a repository over root, in watch control mode with defaults d, that opens
// sessions with rt in this process; its settings never change. Nothing is read until Sync.
func New(root string, rt engine.Runtime, d Defaults, log *slog.Logger) *Repository {
	s := Settings{Root: root, Defaults: d}
	return NewWith(engine.InProcess(rt), func() Settings { return s }, log)
}

// NewWith returns a repository that loads each version into a host iso starts (a worker
// process, or this process) and reads its settings from settings at the start of every change
// of the model set, so a configuration reload takes effect at the next Sync. settings must not
// block. Nothing is read until Sync.
func NewWith(iso engine.Isolator, settings func() Settings, log *slog.Logger) *Repository {
	return &Repository{iso: iso, settings: settings, cur: settings().normalized(), log: log,
		models: map[string]*Model{}, unloaded: map[string]bool{}, events: func(Event) {}, onGPU: map[*Version]bool{}}
}

func (d Defaults) normalized() Defaults {
	d.Instances = max(d.Instances, 1)
	d.Cores = max(d.Cores, 1)
	return d
}

// lockLoader takes loadMu for a change of the model set and reads the settings that change
// runs by.
func (r *Repository) lockLoader() {
	r.loadMu.Lock()
	r.cur = r.settings().normalized()
}

// SetDrainer sets what drains retired versions (the scheduler); without one, retired versions
// are closed as soon as they are replaced.
func (r *Repository) SetDrainer(d Drainer) {
	r.loadMu.Lock()
	r.drainer = d
	r.loadMu.Unlock()
}

// OnEvent sets a function called after each version load attempt (under the loader's lock:
// it must not call back into the repository).
func (r *Repository) OnEvent(f func(Event)) {
	r.loadMu.Lock()
	r.events = f
	r.loadMu.Unlock()
}

// Index lists every model and version with its state, sorted by name and version. A model
// that failed as a whole appears once, without a version. A version that serves while an
// update of it failed is READY with the update's failure as reason.
func (r *Repository) Index() []IndexEntry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []IndexEntry
	for _, m := range r.sortedModelsLocked() {
		if m.Err != nil {
			out = append(out, IndexEntry{Name: m.Name, State: StateUnavailable, Reason: m.Err.Error()})
			continue
		}
		for _, v := range m.Versions {
			e := IndexEntry{Name: m.Name, Version: v.Label(), State: v.state, Reason: v.reason, Worker: v.WorkerStatus()}
			if e.Reason == "" && m.LastError != nil && v.state == StateReady {
				e.Reason = "update failed, previous files still serve: " + m.LastError.Error()
			}
			out = append(out, e)
		}
	}
	return out
}

func (r *Repository) sortedModelsLocked() []*Model {
	ms := make([]*Model, 0, len(r.models))
	for _, m := range r.models {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *Model) int { return cmp.Compare(a.Name, b.Name) })
	return ms
}

// Ready reports whether the first Sync has finished: every model on disk at start has loaded
// or failed. Later loads (a new version, a new model) do not make the node unready; the
// versions serving meanwhile keep serving.
func (r *Repository) Ready() bool { return r.synced.Load() }

// Resolve finds the version that serves a request for model name at version label ("" = the
// newest ready version). A version that exists but is not ready yields ErrUnavailable with
// its reason.
func (r *Repository) Resolve(name, label string) (*Version, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.models[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrModelNotFound, name)
	}
	if m.Err != nil {
		return nil, fmt.Errorf("%w: model %q: %v", ErrUnavailable, name, m.Err)
	}
	if label == "" {
		for _, v := range slices.Backward(m.Versions) {
			if v.state == StateReady {
				return v, nil
			}
		}
		if len(m.Versions) == 0 {
			return nil, fmt.Errorf("%w: model %q has no version", ErrUnavailable, name)
		}
		last := m.Versions[len(m.Versions)-1]
		return nil, fmt.Errorf("%w: model %q has no ready version: %s", ErrUnavailable, name, cmp.Or(last.reason, string(last.state)))
	}
	n, err := strconv.ParseInt(label, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w %q of model %q: versions are positive integers", ErrVersionNotFound, label, name)
	}
	for _, v := range m.Versions {
		if v.Number == n {
			if v.state != StateReady {
				return nil, fmt.Errorf("%w: model %q version %d is %s: %s", ErrUnavailable, name, n, v.state, v.reason)
			}
			return v, nil
		}
	}
	return nil, fmt.Errorf("%w %d of model %q", ErrVersionNotFound, n, name)
}

// Lookup returns a model's directory entry.
func (r *Repository) Lookup(name string) (*Model, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.models[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrModelNotFound, name)
	}
	return m, nil
}

// ReadyVersions lists the labels of a model's ready versions, ascending.
func (r *Repository) ReadyVersions(m *Model) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, v := range m.Versions {
		if v.state == StateReady {
			out = append(out, v.Label())
		}
	}
	return out
}

// Close unloads every model: each version is retired, drained and its sessions closed.
func (r *Repository) Close(ctx context.Context) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.mu.Lock()
	var all []*Version
	for _, m := range r.models {
		all = append(all, m.Versions...)
	}
	r.models = map[string]*Model{}
	r.mu.Unlock()
	r.retireLocked(ctx, all)
}

func closeAll(sessions []engine.Session) {
	for _, s := range sessions {
		_ = s.Close()
	}
}
