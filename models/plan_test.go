package models

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// ver is a loaded version of model "m" in state st, loaded from files with fingerprint fp.
func ver(n int64, st State, fp string) *Version {
	return &Version{Model: "m", Number: n, state: st, fingerprint: fp}
}

func model(failed map[int64]string, lastErr error, vs ...*Version) *Model {
	return &Model{Name: "m", Versions: vs, failed: failed, LastError: lastErr}
}

func policy(p VersionPolicy) Config { return Config{VersionPolicy: p} }

var (
	latest1 = policy(VersionPolicy{Latest: 1})
	all     = policy(VersionPolicy{All: true})
)

// describe spells a plan as "kind: step step ... | unselected", a step as "<n> load",
// "<n> load replacing <state>", "<n> keep" or "<n> keep known-failure".
func describe(p modelPlan) string {
	kinds := map[planKind]string{planNothing: "nothing", planRemove: "remove", planFail: "fail", planVersions: "versions"}
	var b strings.Builder
	b.WriteString(kinds[p.kind])
	if p.kind == planFail {
		fmt.Fprintf(&b, " (%v) keep serving %v", p.err, p.keepServing)
	}
	if p.kind != planVersions {
		return b.String()
	}
	b.WriteString(":")
	for _, s := range p.steps {
		switch {
		case s.load && s.current != nil:
			fmt.Fprintf(&b, " %d load replacing %s", s.number, s.current.state)
		case s.load:
			fmt.Fprintf(&b, " %d load", s.number)
		case s.knownFailure:
			fmt.Fprintf(&b, " %d keep known-failure", s.number)
		default:
			fmt.Fprintf(&b, " %d keep", s.number)
		}
	}
	if len(p.unselected) > 0 {
		b.WriteString(" | drop")
		for _, v := range p.unselected {
			fmt.Fprintf(&b, " %d", v.Number)
		}
	}
	return b.String()
}

func TestPlanModel(t *testing.T) {
	badConfig := errors.New("model.toml: bad")
	tests := []struct {
		name string
		disk modelOnDisk
		old  *Model
		fps  map[int64]string // fingerprints of the files on disk
		want string
	}{
		{"no directory, nothing loaded", modelOnDisk{missing: true}, nil, nil, "nothing"},
		{"directory removed", modelOnDisk{missing: true}, model(nil, nil, ver(1, StateReady, "a")), nil, "remove"},
		{"invalid model.toml, the old generation serves", modelOnDisk{err: badConfig},
			model(nil, nil, ver(1, StateUnavailable, "a"), ver(2, StateReady, "b")), nil, "fail (model.toml: bad) keep serving true"},
		{"invalid model.toml, nothing serves", modelOnDisk{err: badConfig},
			model(nil, nil, ver(1, StateUnavailable, "a")), nil, "fail (model.toml: bad) keep serving false"},
		{"invalid new model", modelOnDisk{err: badConfig}, nil, nil, "fail (model.toml: bad) keep serving false"},
		{"no version the policy selects", modelOnDisk{config: policy(VersionPolicy{Specific: []int64{5}}), versions: []int64{1, 2}}, nil, nil,
			"fail (no version on disk matches the version policy (found [1 2])) keep serving false"},
		{"new model, latest 1", modelOnDisk{config: latest1, versions: []int64{1, 2, 3}}, nil, map[int64]string{3: "c"}, "versions: 3 load"},
		{"new model, specific", modelOnDisk{config: policy(VersionPolicy{Specific: []int64{1, 3}}), versions: []int64{1, 2, 3}}, nil,
			map[int64]string{1: "a", 3: "c"}, "versions: 1 load 3 load"},
		{"identical files do nothing", modelOnDisk{config: all, versions: []int64{1, 2}},
			model(nil, nil, ver(1, StateReady, "a"), ver(2, StateReady, "b")), map[int64]string{1: "a", 2: "b"}, "versions: 1 keep 2 keep"},
		{"a new version beside one that serves", modelOnDisk{config: all, versions: []int64{1, 2}},
			model(nil, nil, ver(1, StateReady, "a")), map[int64]string{1: "a", 2: "b"}, "versions: 1 keep 2 load"},
		{"changed files load a new generation", modelOnDisk{config: all, versions: []int64{1}},
			model(nil, nil, ver(1, StateReady, "a")), map[int64]string{1: "a2"}, "versions: 1 load replacing READY"},
		{"files that failed before are not retried", modelOnDisk{config: all, versions: []int64{1}},
			model(map[int64]string{1: "a2"}, errors.New("boom"), ver(1, StateReady, "a")), map[int64]string{1: "a2"}, "versions: 1 keep known-failure"},
		{"files changed again after a failure", modelOnDisk{config: all, versions: []int64{1}},
			model(map[int64]string{1: "a2"}, errors.New("boom"), ver(1, StateReady, "a")), map[int64]string{1: "a3"}, "versions: 1 load replacing READY"},
		{"an unavailable version with the same files stays", modelOnDisk{config: all, versions: []int64{1}},
			model(nil, nil, ver(1, StateUnavailable, "a")), map[int64]string{1: "a"}, "versions: 1 keep"},
		{"an unavailable version with new files loads", modelOnDisk{config: all, versions: []int64{1}},
			model(nil, nil, ver(1, StateUnavailable, "a")), map[int64]string{1: "b"}, "versions: 1 load replacing UNAVAILABLE"},
		// A failed fingerprint only holds back a version that serves.
		{"a failed fingerprint without a serving version", modelOnDisk{config: all, versions: []int64{1}},
			model(map[int64]string{1: "b"}, nil, ver(1, StateUnavailable, "a")), map[int64]string{1: "b"}, "versions: 1 load replacing UNAVAILABLE"},
		{"a LOADING placeholder always loads", modelOnDisk{config: all, versions: []int64{1}},
			model(nil, nil, ver(1, StateLoading, "a")), map[int64]string{1: "a"}, "versions: 1 load replacing LOADING"},
		{"latest 1 moves to a new version", modelOnDisk{config: latest1, versions: []int64{1, 2}},
			model(nil, nil, ver(1, StateReady, "a")), map[int64]string{2: "b"}, "versions: 2 load | drop 1"},
		{"versions removed from disk leave", modelOnDisk{config: all, versions: []int64{2}},
			model(nil, nil, ver(3, StateReady, "c"), ver(1, StateReady, "a"), ver(2, StateReady, "b")), map[int64]string{2: "b"}, "versions: 2 keep | drop 1 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var read []int64
			p := planModel("m", tt.disk, tt.old, func(n int64) string {
				read = append(read, n)
				fp, ok := tt.fps[n]
				if !ok {
					t.Errorf("fingerprint of version %d read; the policy does not select it", n)
				}
				return fp
			})
			if got := describe(p); got != tt.want {
				t.Errorf("plan\n got %s\nwant %s", got, tt.want)
			}
			if len(read) != len(tt.fps) {
				t.Errorf("fingerprints read of %v, want those of %v", read, tt.fps)
			}
		})
	}
}

func TestPlanInterim(t *testing.T) {
	v1, v2, v3, v4 := ver(1, StateReady, "a"), ver(2, StateUnavailable, "b"), ver(3, StateReady, "c"), ver(4, StateUnavailable, "d")
	old := model(map[int64]string{1: "x"}, errors.New("earlier"), v4, v3, v2, v1)
	// Policy: versions 1, 2 and 5; 3 and 4 are no longer selected.
	p := planModel("m", modelOnDisk{config: policy(VersionPolicy{Specific: []int64{1, 2, 5}}), versions: []int64{1, 2, 3, 4, 5}}, old,
		func(n int64) string { return map[int64]string{1: "a2", 2: "b2", 5: "e"}[n] })
	m := p.interim()
	var got []string
	for _, v := range m.Versions {
		got = append(got, fmt.Sprintf("%d %s", v.Number, v.state))
	}
	// 1 serves while its new generation loads, 2 stays as it is, 5 has nothing yet, 3 serves
	// until a selected version does, 4 serves nothing and goes.
	if want := "1 READY, 2 UNAVAILABLE, 3 READY, 5 LOADING"; strings.Join(got, ", ") != want {
		t.Errorf("interim versions %s, want %s", strings.Join(got, ", "), want)
	}
	if m.Versions[0] != v1 || m.Versions[1] != v2 || m.Versions[2] != v3 {
		t.Error("the interim does not show the generations in place")
	}
	if m.LastError == nil || m.failed[1] != "x" {
		t.Errorf("the interim lost the model's last error or failed fingerprints: %v %v", m.LastError, m.failed)
	}
}

func TestPlanSettle(t *testing.T) {
	boom := errors.New("boom")
	type load struct {
		state State
		err   error
	}
	tests := []struct {
		name    string
		disk    modelOnDisk
		old     *Model
		fps     map[int64]string
		loads   map[int64]load // outcome of each load, by version
		next    string         // versions that serve next, "<n> <state> <fingerprint>"
		retire  string
		held    string
		lastErr string
		failed  map[int64]string
	}{
		{name: "a loaded version replaces the old generation",
			disk: modelOnDisk{config: all, versions: []int64{1}}, old: model(nil, nil, ver(1, StateReady, "a")),
			fps: map[int64]string{1: "a2"}, loads: map[int64]load{1: {StateReady, nil}},
			next: "1 READY a2", retire: "1 a"},
		{name: "a failed update keeps the old generation serving",
			disk: modelOnDisk{config: all, versions: []int64{1}}, old: model(nil, nil, ver(1, StateReady, "a")),
			fps: map[int64]string{1: "a2"}, loads: map[int64]load{1: {StateUnavailable, boom}},
			next: "1 READY a", lastErr: "version 1: boom", failed: map[int64]string{1: "a2"}},
		{name: "a failed new version is unavailable",
			disk: modelOnDisk{config: all, versions: []int64{1}}, fps: map[int64]string{1: "a"}, loads: map[int64]load{1: {StateUnavailable, boom}},
			next: "1 UNAVAILABLE a"},
		{name: "a failed version replaces one that did not serve either",
			disk: modelOnDisk{config: all, versions: []int64{1}}, old: model(nil, nil, ver(1, StateUnavailable, "a")),
			fps: map[int64]string{1: "a2"}, loads: map[int64]load{1: {StateUnavailable, boom}},
			next: "1 UNAVAILABLE a2", retire: "1 a"},
		{name: "a known failure keeps its error",
			disk: modelOnDisk{config: all, versions: []int64{1}}, old: model(map[int64]string{1: "a2"}, boom, ver(1, StateReady, "a")),
			fps: map[int64]string{1: "a2"}, next: "1 READY a", lastErr: "boom", failed: map[int64]string{1: "a2"}},
		{name: "identical files clear nothing and keep nothing failed",
			disk: modelOnDisk{config: all, versions: []int64{1}}, old: model(map[int64]string{1: "a2"}, boom, ver(1, StateReady, "a")),
			fps: map[int64]string{1: "a"}, next: "1 READY a"},
		{name: "versions no longer selected leave once a new one serves",
			disk: modelOnDisk{config: latest1, versions: []int64{1, 2}}, old: model(nil, nil, ver(1, StateReady, "a")),
			fps: map[int64]string{2: "b"}, loads: map[int64]load{2: {StateReady, nil}},
			next: "2 READY b", retire: "1 a"},
		{name: "versions no longer selected keep serving while no new one does",
			disk: modelOnDisk{config: latest1, versions: []int64{1, 2, 3}},
			old:  model(nil, nil, ver(1, StateReady, "a"), ver(2, StateUnavailable, "b")),
			fps:  map[int64]string{3: "c"}, loads: map[int64]load{3: {StateUnavailable, boom}},
			next: "1 READY a, 3 UNAVAILABLE c", retire: "2 b", held: "1 a", lastErr: errNothingSelectedLoaded.Error()},
		{name: "a kept version that serves lets the unselected go",
			disk: modelOnDisk{config: policy(VersionPolicy{Specific: []int64{2}}), versions: []int64{1, 2}},
			old:  model(nil, nil, ver(1, StateReady, "a"), ver(2, StateReady, "b")),
			fps:  map[int64]string{2: "b2"}, loads: map[int64]load{2: {StateUnavailable, boom}},
			next: "2 READY b", retire: "1 a", lastErr: "version 2: boom", failed: map[int64]string{2: "b2"}},
	}
	spell := func(vs []*Version, state bool) string {
		var out []string
		for _, v := range vs {
			if state {
				out = append(out, fmt.Sprintf("%d %s %s", v.Number, v.state, v.fingerprint))
			} else {
				out = append(out, fmt.Sprintf("%d %s", v.Number, v.fingerprint))
			}
		}
		return strings.Join(out, ", ")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planModel("m", tt.disk, tt.old, func(n int64) string { return tt.fps[n] })
			if p.kind != planVersions {
				t.Fatalf("plan %s", describe(p))
			}
			loaded := make([]*Version, len(p.steps))
			errs := make([]error, len(p.steps))
			for i, s := range p.steps {
				l, ok := tt.loads[s.number]
				if ok != s.load {
					t.Fatalf("version %d: plan loads %v, test gives an outcome %v", s.number, s.load, ok)
				}
				if s.load {
					loaded[i], errs[i] = ver(s.number, l.state, s.fingerprint), l.err
				}
			}
			out := p.settle(loaded, errs)
			if got := spell(out.next.Versions, true); got != tt.next {
				t.Errorf("next serves %q, want %q", got, tt.next)
			}
			if got := spell(out.retire, false); got != tt.retire {
				t.Errorf("retires %q, want %q", got, tt.retire)
			}
			if got := spell(out.held, false); got != tt.held {
				t.Errorf("holds %q, want %q", got, tt.held)
			}
			var lastErr string
			if out.next.LastError != nil {
				lastErr = out.next.LastError.Error()
			}
			if lastErr != tt.lastErr {
				t.Errorf("last error %q, want %q", lastErr, tt.lastErr)
			}
			if fmt.Sprint(out.next.failed) != fmt.Sprint(tt.failed) && !(len(out.next.failed) == 0 && len(tt.failed) == 0) {
				t.Errorf("failed fingerprints %v, want %v", out.next.failed, tt.failed)
			}
		})
	}
}
