package models

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// The reconcile of one model is a plan and its execution. planModel decides, from what is on
// disk and what is loaded, which versions stay as they are, which load a new generation and
// which leave; settle decides, once the loads are done, what serves next and what retires.
// Both are pure: the file reads, the loads, the locks and the logs are syncModelLocked's.

// modelOnDisk is what one model's directory holds, read without deciding anything.
type modelOnDisk struct {
	// missing: there is no directory (any more).
	missing bool
	// config is model.toml's settings (the defaults where there is none).
	config Config
	// err says why the model as a whole cannot load: model.toml is unreadable or invalid, or
	// there is no version directory.
	err error
	// versions are the numeric version directories, ascending.
	versions []int64
}

// planKind is what a plan does with a model.
type planKind int

const (
	planNothing  planKind = iota // no directory and nothing loaded
	planRemove                   // the directory is gone: every version leaves
	planFail                     // the model as a whole cannot load (modelPlan.err)
	planVersions                 // version by version: modelPlan.steps and unselected
)

// modelPlan is the decision for one model.
type modelPlan struct {
	kind   planKind
	name   string
	config Config
	// old is the model as loaded before, nil for a new one.
	old *Model
	// err is why the model cannot load (planFail); keepServing says that an older generation
	// serves and keeps serving, with err as its LastError.
	err         error
	keepServing bool
	// steps are the versions the policy selects, ascending.
	steps []versionStep
	// unselected are the loaded versions the policy no longer selects, ascending: they leave
	// once a selected version serves.
	unselected []*Version
}

// versionStep is what happens to one selected version.
type versionStep struct {
	number      int64
	fingerprint string
	// current is the generation of this version in place (serving, or the one that failed),
	// nil if none.
	current *Version
	// load: the files differ from current's (or there is none): load a new generation, which
	// replaces current once it is ready. Otherwise current stays.
	load bool
	// knownFailure: current stays although the files differ, because these very files failed
	// to load before and are not retried until they change.
	knownFailure bool
}

// fallsBack reports whether current keeps serving if the step's load fails.
func (s versionStep) fallsBack() bool { return s.current != nil && s.current.state == StateReady }

// planModel decides what to do with the model named name given what its directory holds, the
// model as loaded (nil if it is not), and the fingerprint of a selected version's files and
// settings (read only for the versions the version policy selects).
func planModel(name string, disk modelOnDisk, old *Model, fingerprint func(version int64) string) modelPlan {
	p := modelPlan{name: name, config: disk.config, old: old}
	switch {
	case disk.missing && old == nil:
		return p
	case disk.missing:
		p.kind = planRemove
		return p
	}
	p.err = disk.err
	var selected []int64
	if p.err == nil {
		if selected = disk.config.VersionPolicy.selectVersions(disk.versions); len(selected) == 0 {
			p.err = fmt.Errorf("no version on disk matches the version policy (found %v)", disk.versions)
		}
	}
	if p.err != nil {
		p.kind = planFail
		p.keepServing = old != nil && slices.ContainsFunc(old.Versions, ready)
		return p
	}

	p.kind = planVersions
	current := map[int64]*Version{}
	var failed map[int64]string
	if old != nil {
		for _, v := range old.Versions {
			current[v.Number] = v
		}
		failed = old.failed
	}
	for _, n := range selected {
		s := versionStep{number: n, fingerprint: fingerprint(n), current: current[n]}
		cur, fp := s.current, s.fingerprint
		// A LOADING version is a placeholder of a load that never finished: load it.
		keep := cur != nil && cur.state != StateLoading && (cur.fingerprint == fp || failed[n] == fp && ready(cur))
		s.load = !keep
		s.knownFailure = keep && failed[n] == fp
		p.steps = append(p.steps, s)
	}
	for _, v := range old.sortedVersions() {
		if !slices.Contains(selected, v.Number) {
			p.unselected = append(p.unselected, v)
		}
	}
	return p
}

// sortedVersions lists the model's versions ascending; none for no model.
func (m *Model) sortedVersions() []*Version {
	if m == nil {
		return nil
	}
	vs := slices.Clone(m.Versions)
	slices.SortFunc(vs, byNumber)
	return vs
}

func ready(v *Version) bool { return v.state == StateReady }

func byNumber(a, b *Version) int { return cmp.Compare(a.Number, b.Number) }

// interim is what serves while the plan's versions load: a selected version that serves, or
// failed, stays as it is; one that has nothing yet shows as LOADING; versions the policy is
// about to drop keep serving until the new ones are ready.
func (p modelPlan) interim() *Model {
	m := &Model{Name: p.name, Config: p.config}
	if p.old != nil {
		m.LastError, m.failed = p.old.LastError, p.old.failed
	}
	for _, s := range p.steps {
		if s.current != nil {
			m.Versions = append(m.Versions, s.current)
		} else {
			m.Versions = append(m.Versions, &Version{Model: p.name, Number: s.number, Config: p.config, state: StateLoading})
		}
	}
	for _, v := range p.unselected {
		if ready(v) {
			m.Versions = append(m.Versions, v)
		}
	}
	slices.SortFunc(m.Versions, byNumber)
	return m
}

// settled is the outcome of a plan once its loads are done.
type settled struct {
	next *Model
	// retire are the versions to make unroutable, drain and close.
	retire []*Version
	// held are unselected versions that keep serving because no selected version loaded.
	held []*Version
}

// errNothingSelectedLoaded is the LastError of a model whose selected versions all failed
// while versions the policy dropped still serve.
var errNothingSelectedLoaded = errors.New("no version selected by the policy loaded")

// settle decides what serves after the plan's loads: loaded[i] is the generation step i
// loaded, with its state set (READY, or UNAVAILABLE with its reason) and errs[i] its error;
// both are unused for a step that does not load.
func (p modelPlan) settle(loaded []*Version, errs []error) settled {
	next := &Model{Name: p.name, Config: p.config, failed: map[int64]string{}}
	var out settled
	for i, s := range p.steps {
		switch {
		case !s.load:
			next.Versions = append(next.Versions, s.current)
			if s.knownFailure {
				next.failed[s.number] = s.fingerprint
				next.LastError = p.old.LastError
			}
		case errs[i] != nil && s.fallsBack():
			next.Versions = append(next.Versions, s.current)
			next.failed[s.number] = s.fingerprint
			next.LastError = fmt.Errorf("version %d: %w", s.number, errs[i])
		default:
			next.Versions = append(next.Versions, loaded[i])
			if s.current != nil {
				out.retire = append(out.retire, s.current)
			}
		}
	}
	// Versions the policy no longer selects leave, unless nothing selected loaded: then the
	// ones that serve keep serving until a new version does.
	servesNew := slices.ContainsFunc(next.Versions, ready)
	for _, v := range p.unselected {
		if !servesNew && ready(v) {
			out.held = append(out.held, v)
			next.Versions = append(next.Versions, v)
			if next.LastError == nil {
				next.LastError = errNothingSelectedLoaded
			}
			continue
		}
		out.retire = append(out.retire, v)
	}
	slices.SortFunc(next.Versions, byNumber)
	out.next = next
	return out
}
