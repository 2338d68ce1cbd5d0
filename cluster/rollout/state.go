package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"

	"github.com/inferd/inferd/cluster"
)

// RecordKind is the cluster.Record Kind of rollout state; the Key is the model.
const RecordKind = "rollout"

// Record priorities: on equal generations the higher wins (see cluster.Record).
const (
	PriorityProgress uint8 = 0 // the leader's automatic steps and analysis results
	PriorityOperator uint8 = 1 // Start and Promote
	PriorityAbort    uint8 = 2 // Abort, by an operator or by failed analysis
)

const (
	wireVersion    = 1
	hashBytes      = 8
	maxRecordBytes = 16 << 10 // room for JSON-escaped names and reason
	maxReasonBytes = 1024
)

// ErrBadRecord is wrapped by every DecodeRecord failure.
var ErrBadRecord = errors.New("bad rollout record")

// Phase is where a rollout is.
type Phase string

// Phases; completed, promoted and aborted are terminal.
const (
	PhaseProgressing Phase = "progressing"
	PhasePaused      Phase = "paused"
	PhasePromoted    Phase = "promoted"
	PhaseAborted     Phase = "aborted"
	PhaseCompleted   Phase = "completed"
)

// Terminal reports whether the rollout has finished (until a new Start).
func (p Phase) Terminal() bool {
	return p == PhasePromoted || p == PhaseAborted || p == PhaseCompleted
}

func (p Phase) known() bool {
	switch p {
	case PhaseProgressing, PhasePaused, PhasePromoted, PhaseAborted, PhaseCompleted:
		return true
	}
	return false
}

// State is one model's rollout as the cluster agrees on it. Its JSON names are what
// GET /v2/cluster/rollouts serves (records travel in their own wire form, not this one).
type State struct {
	Model string `json:"model"`
	// Stable and Canary are the versions, so any node can route without the definition.
	Stable string `json:"stable,omitempty"`
	Canary string `json:"canary,omitempty"`
	// DefinitionHash is the Hash of the definition the rollout runs.
	DefinitionHash string `json:"definition_hash,omitempty"`
	// Step is the index of the step being waited on (len(steps) once completed; where it was
	// when promoted or aborted), counting a blue-green rollout's switch as step 0.
	Step int `json:"step"`
	// CanaryWeight is the canary's share of traffic in percent (0.01 resolution).
	CanaryWeight float64 `json:"canary_weight"`
	Phase        Phase   `json:"phase,omitempty"`
	// Reason says why the rollout is paused or aborted, or what the last analysis saw.
	Reason string `json:"reason,omitempty"`
	// Generation is the record's; each change is one more.
	Generation uint64 `json:"generation"`
	// Updated is when the record was written; StepStarted when the current step began (a
	// pause's deadline is StepStarted + its duration).
	Updated     time.Time `json:"updated,omitzero"`
	StepStarted time.Time `json:"step_started,omitzero"`
	// Passed, Failed and Inconclusive count the current analysis step's windows.
	Passed       int `json:"passed,omitempty"`
	Failed       int `json:"failed,omitempty"`
	Inconclusive int `json:"inconclusive,omitempty"`
	// By is the node that wrote the record.
	By string `json:"by,omitempty"`
}

// wire is the JSON of a State in a record's Data. Unknown fields are ignored, so a later
// version may add some; an incompatible change bumps V.
type wire struct {
	V            int       `json:"v"`
	Model        string    `json:"model"`
	Stable       string    `json:"stable"`
	Canary       string    `json:"canary"`
	Hash         string    `json:"hash"`
	Step         int       `json:"step"`
	Weight       float64   `json:"weight"`
	Phase        Phase     `json:"phase"`
	Reason       string    `json:"reason,omitempty"`
	Gen          uint64    `json:"gen"`
	Updated      time.Time `json:"updated"`
	StepStarted  time.Time `json:"step_started"`
	Passed       int       `json:"passed,omitempty"`
	Failed       int       `json:"failed,omitempty"`
	Inconclusive int       `json:"inconclusive,omitempty"`
	By           string    `json:"by,omitempty"`
}

// EncodeRecord turns s into the record that carries it, with the given priority.
func EncodeRecord(s State, priority uint8) (cluster.Record, error) {
	w := wire{
		V: wireVersion, Model: s.Model, Stable: s.Stable, Canary: s.Canary, Hash: s.DefinitionHash,
		Step: s.Step, Weight: math.Round(s.CanaryWeight*100) / 100, Phase: s.Phase,
		Reason: truncate(s.Reason, maxReasonBytes), Gen: s.Generation,
		Updated: s.Updated.UTC(), StepStarted: s.StepStarted.UTC(),
		Passed: s.Passed, Failed: s.Failed, Inconclusive: s.Inconclusive, By: s.By,
	}
	if err := w.check(); err != nil {
		return cluster.Record{}, fmt.Errorf("encoding rollout of %q: %w", s.Model, err)
	}
	data, err := json.Marshal(w)
	if err != nil {
		return cluster.Record{}, fmt.Errorf("encoding rollout of %q: %w", s.Model, err)
	}
	if len(data) > maxRecordBytes {
		return cluster.Record{}, fmt.Errorf("encoding rollout of %q: %w: %d bytes, at most %d", s.Model, ErrBadRecord, len(data), maxRecordBytes)
	}
	return cluster.Record{Kind: RecordKind, Key: s.Model, Generation: s.Generation, Priority: priority, Data: data}, nil
}

// DecodeRecord reads the State a record carries, rejecting anything malformed or inconsistent
// (another kind, a key that is not the model, a generation that disagrees, an unknown phase, a
// weight out of range, ...). Errors wrap ErrBadRecord.
func DecodeRecord(r cluster.Record) (State, error) {
	if r.Kind != RecordKind {
		return State{}, fmt.Errorf("%w: kind %q, want %q", ErrBadRecord, r.Kind, RecordKind)
	}
	if len(r.Data) > maxRecordBytes {
		return State{}, fmt.Errorf("%w %q: %d bytes, at most %d", ErrBadRecord, r.Key, len(r.Data), maxRecordBytes)
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(r.Data))
	if err := dec.Decode(&w); err != nil {
		return State{}, fmt.Errorf("%w %q: %w", ErrBadRecord, r.Key, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return State{}, fmt.Errorf("%w %q: data after the JSON value", ErrBadRecord, r.Key)
	}
	if w.Model != r.Key {
		return State{}, fmt.Errorf("%w %q: carries model %q", ErrBadRecord, r.Key, w.Model)
	}
	if w.Gen != r.Generation {
		return State{}, fmt.Errorf("%w %q: data says generation %d, record %d", ErrBadRecord, r.Key, w.Gen, r.Generation)
	}
	if err := w.check(); err != nil {
		return State{}, fmt.Errorf("%w %q: %w", ErrBadRecord, r.Key, err)
	}
	return State{
		Model: w.Model, Stable: w.Stable, Canary: w.Canary, DefinitionHash: w.Hash, Step: w.Step,
		CanaryWeight: w.Weight, Phase: w.Phase, Reason: w.Reason, Generation: w.Gen,
		Updated: w.Updated, StepStarted: w.StepStarted,
		Passed: w.Passed, Failed: w.Failed, Inconclusive: w.Inconclusive, By: w.By,
	}, nil
}

// check holds the rules that both encoding and decoding enforce.
func (w *wire) check() error {
	if w.V != wireVersion {
		return fmt.Errorf("format version %d, want %d", w.V, wireVersion)
	}
	for _, f := range []struct{ name, v string }{{"model", w.Model}, {"stable", w.Stable}, {"canary", w.Canary}} {
		if f.v == "" || len(f.v) > maxNameBytes || !utf8.ValidString(f.v) {
			return fmt.Errorf("%s %q: want 1 to %d bytes of UTF-8", f.name, f.v, maxNameBytes)
		}
	}
	if w.Stable == w.Canary {
		return fmt.Errorf("stable and canary are both %q", w.Stable)
	}
	if len(w.Hash) != 2*hashBytes || !isLowerHex(w.Hash) {
		return fmt.Errorf("definition hash %q: want %d lowercase hex digits", w.Hash, 2*hashBytes)
	}
	if w.Step < 0 || w.Step >= maxSteps {
		return fmt.Errorf("step %d outside 0..%d", w.Step, maxSteps-1)
	}
	if math.IsNaN(w.Weight) || w.Weight < 0 || w.Weight > 100 {
		return fmt.Errorf("canary weight %v outside 0..100", w.Weight)
	}
	if !w.Phase.known() {
		return fmt.Errorf("unknown phase %q", w.Phase)
	}
	if w.Phase == PhaseAborted && w.Weight != 0 {
		return fmt.Errorf("aborted with canary weight %v", w.Weight)
	}
	if (w.Phase == PhaseCompleted || w.Phase == PhasePromoted) && w.Weight != 100 {
		return fmt.Errorf("%s with canary weight %v", w.Phase, w.Weight)
	}
	if len(w.Reason) > maxReasonBytes || !utf8.ValidString(w.Reason) {
		return fmt.Errorf("reason: want at most %d bytes of UTF-8", maxReasonBytes)
	}
	if len(w.By) > maxNameBytes || !utf8.ValidString(w.By) {
		return fmt.Errorf("by: want at most %d bytes of UTF-8", maxNameBytes)
	}
	if w.Passed < 0 || w.Failed < 0 || w.Inconclusive < 0 {
		return fmt.Errorf("negative analysis counts %d/%d/%d", w.Passed, w.Failed, w.Inconclusive)
	}
	if w.Updated.IsZero() {
		return errors.New("no update time")
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// wins reports whether record a beats record b with the same key, by the rule documented on
// cluster.Record: higher Generation, then higher Priority, then the Data that sorts higher.
func wins(a, b cluster.Record) bool {
	if a.Generation != b.Generation {
		return a.Generation > b.Generation
	}
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return bytes.Compare(a.Data, b.Data) > 0
}
