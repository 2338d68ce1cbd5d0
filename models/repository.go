package models

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
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

// Errors returned by Resolve; the HTTP API maps them to statuses with errors.Is.
var (
	ErrModelNotFound   = errors.New("unknown model")
	ErrVersionNotFound = errors.New("unknown version")
	ErrUnavailable     = errors.New("model version is not ready")
)

// Version is one loaded (or failed) version of a model. Its fields are fixed once loading has
// finished; state changes go through the repository's lock.
type Version struct {
	Model  string
	Number int64
	Dir    string
	Config Config
	// Signature is the model's inputs and outputs after model.toml's overrides.
	Signature engine.Signature
	// Sessions are the instances; empty unless the version is READY.
	Sessions []engine.Session
	// Provider is the execution provider the sessions run on.
	Provider string

	state  State
	reason string
}

// Instances returns the version's sessions (the scheduler's view of a version).
func (v *Version) Instances() []engine.Session { return v.Sessions }

// Label is the version number as the protocol spells it.
func (v *Version) Label() string { return strconv.FormatInt(v.Number, 10) }

// Model is a directory of the repository.
type Model struct {
	Name   string
	Config Config
	// Err is set when the model as a whole cannot load (invalid model.toml, no versions).
	Err error
	// Versions are the versions the policy selected, ascending.
	Versions []*Version
}

// IndexEntry is one row of the repository index.
type IndexEntry struct {
	Name    string
	Version string
	State   State
	Reason  string
}

// Repository is the set of models under one root directory.
type Repository struct {
	root     string
	rt       engine.Runtime
	defaults Defaults
	log      *slog.Logger

	mu     sync.RWMutex
	models map[string]*Model
}

// New returns a repository over root that opens sessions with rt. Nothing is read until Load.
func New(root string, rt engine.Runtime, d Defaults, log *slog.Logger) *Repository {
	if d.Instances < 1 {
		d.Instances = 1
	}
	if d.Cores < 1 {
		d.Cores = 1
	}
	return &Repository{root: root, rt: rt, defaults: d, log: log, models: map[string]*Model{}}
}

// Root is the repository directory.
func (r *Repository) Root() string { return r.root }

// Load scans the repository and loads every model it holds. Only an unreadable root is an
// error; a model that fails to load is recorded as UNAVAILABLE with its reason.
func (r *Repository) Load(ctx context.Context) error {
	entries, err := os.ReadDir(r.root)
	if err != nil {
		return fmt.Errorf("model repository %s: %w", r.root, err)
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name()[0] == '.' {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		m := r.loadModel(ctx, e.Name())
		r.mu.Lock()
		r.models[m.Name] = m
		r.mu.Unlock()
	}
	return nil
}

func (r *Repository) loadModel(ctx context.Context, name string) *Model {
	dir := filepath.Join(r.root, name)
	log := r.log.With("model", name)
	cfg, err := readConfig(dir, r.defaults)
	m := &Model{Name: name, Config: cfg}
	if err != nil {
		m.Err = err
		log.Error("model unavailable", "reason", err)
		return m
	}
	onDisk, err := versionsOnDisk(dir, log)
	if err != nil {
		m.Err = err
		log.Error("model unavailable", "reason", err)
		return m
	}
	for _, n := range cfg.VersionPolicy.selectVersions(onDisk) {
		v := &Version{Model: name, Number: n, Dir: filepath.Join(dir, strconv.FormatInt(n, 10)), Config: cfg, state: StateLoading}
		m.Versions = append(m.Versions, v)
	}
	if len(m.Versions) == 0 {
		m.Err = fmt.Errorf("no version on disk matches the version policy (found %v)", onDisk)
		log.Error("model unavailable", "reason", m.Err)
		return m
	}
	for _, v := range m.Versions {
		r.loadVersion(ctx, v, log.With("version", v.Number))
	}
	return m
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
			log.Warn("ignoring directory that is not a version number", "dir", e.Name())
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

func (r *Repository) loadVersion(ctx context.Context, v *Version, log *slog.Logger) {
	err := r.openVersion(ctx, v)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		v.state, v.reason = StateUnavailable, err.Error()
		log.Error("model version unavailable", "reason", err)
		return
	}
	v.state = StateReady
	log.Info("model version ready", "instances", len(v.Sessions), "provider", v.Provider,
		"inputs", len(v.Signature.Inputs), "outputs", len(v.Signature.Outputs))
}

// openVersion reads the version's signature, checks it against the model's settings and opens
// its instances. On error every session it opened is closed again.
func (r *Repository) openVersion(ctx context.Context, v *Version) error {
	path := filepath.Join(v.Dir, ModelFile)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
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
	if v.Config.Instance.Device == DeviceGPU {
		return errors.New("device \"gpu\" requested, but this node has no GPU execution provider; set device = \"cpu\" or \"auto\"")
	}
	opts := engine.Options{
		Provider:       engine.ProviderCPU,
		IntraOpThreads: cmp.Or(v.Config.Instance.IntraOpThreads, r.defaults.IntraOpThreads, max(1, r.defaults.Cores/v.Config.Instance.Count)),
		InterOpThreads: r.defaults.InterOpThreads,
	}
	v.Signature = sig
	for range v.Config.Instance.Count {
		s, err := r.rt.Open(ctx, path, opts)
		if err != nil {
			closeAll(v.Sessions)
			v.Sessions = nil
			return err
		}
		v.Sessions = append(v.Sessions, s)
		v.Provider = s.Provider()
	}
	return nil
}

func closeAll(sessions []engine.Session) {
	for _, s := range sessions {
		_ = s.Close()
	}
}

// Index lists every model and version with its state, sorted by name and version. A model
// that failed as a whole appears once, without a version.
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
			out = append(out, IndexEntry{Name: m.Name, Version: v.Label(), State: v.state, Reason: v.reason})
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

// Ready reports whether at least one model is loaded and no model version is still loading.
func (r *Repository) Ready() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, m := range r.models {
		for _, v := range m.Versions {
			if v.state == StateLoading {
				return false
			}
		}
	}
	return true
}

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
		return nil, fmt.Errorf("%w: model %q has no ready version: %s", ErrUnavailable, name, m.Versions[len(m.Versions)-1].reason)
	}
	n, err := strconv.ParseInt(label, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w %q of model %q: versions are positive integers", ErrVersionNotFound, label, name)
	}
	for _, v := range m.Versions {
		if v.Number == n {
			if v.state != StateReady {
				return v, fmt.Errorf("%w: model %q version %d is %s: %s", ErrUnavailable, name, n, v.state, v.reason)
			}
			return v, nil
		}
	}
	return nil, fmt.Errorf("%w %d of model %q", ErrVersionNotFound, n, name)
}

// Lookup returns a model's directory entry (for metadata of a model whose versions may all be
// unavailable).
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

// Close unloads every model and closes its sessions. Callers drain requests first.
func (r *Repository) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.models {
		for _, v := range m.Versions {
			v.state = StateUnloading
			closeAll(v.Sessions)
			v.Sessions = nil
		}
	}
	r.models = map[string]*Model{}
}

// CheckRequest validates a request's inputs and requested outputs against the version's
// signature, so that every problem is answered precisely before the engine runs. Errors wrap
// ErrInvalidInput.
func (v *Version) CheckRequest(inputs []tensor.Tensor, outputs []string) error {
	if len(inputs) == 0 {
		return fmt.Errorf("%w: request has no inputs; model %q expects %s", ErrInvalidInput, v.Model, names(v.Signature.Inputs))
	}
	seen := make(map[string]bool, len(inputs))
	batch := int64(-1)
	for i := range inputs {
		t := &inputs[i]
		spec, ok := v.Signature.Input(t.Name)
		if !ok {
			return fmt.Errorf("%w: unexpected input %q; model %q expects %s", ErrInvalidInput, t.Name, v.Model, names(v.Signature.Inputs))
		}
		if seen[t.Name] {
			return fmt.Errorf("%w: input %q given more than once", ErrInvalidInput, t.Name)
		}
		seen[t.Name] = true
		if err := spec.Accepts(t.DataType, t.Shape); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidInput, err)
		}
		if err := t.Check(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidInput, err)
		}
		if t.DataType == tensor.Bytes {
			for j, e := range t.Strings {
				if bytes.IndexByte(e, 0) >= 0 {
					return fmt.Errorf("%w: input %q element %d contains a NUL byte, which ONNX Runtime strings cannot carry", ErrInvalidInput, t.Name, j)
				}
			}
		}
		if t.NumElements() == 0 {
			return fmt.Errorf("%w: input %q has no elements (shape %s)", ErrInvalidInput, t.Name, tensor.FormatShape(t.Shape))
		}
		if v.Config.MaxBatchSize > 0 {
			rows := t.Shape[0]
			if rows > int64(v.Config.MaxBatchSize) {
				return fmt.Errorf("%w: input %q has batch size %d, over the model's max_batch_size %d",
					ErrInvalidInput, t.Name, rows, v.Config.MaxBatchSize)
			}
			if batch >= 0 && rows != batch {
				return fmt.Errorf("%w: input %q has batch size %d, but other inputs have %d",
					ErrInvalidInput, t.Name, rows, batch)
			}
			batch = rows
		}
	}
	for _, s := range v.Signature.Inputs {
		if !seen[s.Name] {
			return fmt.Errorf("%w: missing input %q (%s %s)", ErrInvalidInput, s.Name, s.DataType, tensor.FormatShape(s.Shape))
		}
	}
	wanted := make(map[string]bool, len(outputs))
	for _, o := range outputs {
		if _, ok := v.Signature.Output(o); !ok {
			return fmt.Errorf("%w: unknown output %q; model %q has %s", ErrInvalidInput, o, v.Model, names(v.Signature.Outputs))
		}
		if wanted[o] {
			return fmt.Errorf("%w: output %q requested more than once", ErrInvalidInput, o)
		}
		wanted[o] = true
	}
	return nil
}

// ErrInvalidInput marks a request that does not fit the model's signature.
var ErrInvalidInput = errors.New("invalid input")

func names(specs []tensor.Spec) string {
	s := ""
	for i, sp := range specs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q (%s %s)", sp.Name, sp.DataType, tensor.FormatShape(sp.Shape))
	}
	return s
}
