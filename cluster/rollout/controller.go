package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inferd/inferd/cluster"
)

// Errors of the Controller's operations.
var (
	ErrNoDefinition = errors.New("no rollout is defined for the model on this node")
	ErrNoRollout    = errors.New("no rollout state for the model")
	ErrFinished     = errors.New("rollout has finished")
	ErrMismatch     = errors.New("this node's rollout definition differs from the one running")
)

// Store holds the cluster-wide records (package cluster's gossiped store).
//
// Its methods are called with the Controller's lock held: they must be safe for concurrent use,
// must not block on the network, and must not call the Controller.
type Store interface {
	// PutRecord offers a record; the store keeps it if it wins over the one it has (the rule
	// on cluster.Record) and spreads it to the cluster.
	PutRecord(cluster.Record)
	// Records returns the records of a kind. Several per key are allowed; the winner is used.
	Records(kind string) []cluster.Record
}

// Config is what New needs. Store, Counters and Leader are required.
type Config struct {
	// Node is this node's name, written into records as State.By.
	Node     string
	Store    Store
	Counters Counters
	Leader   Leader
	// Logger receives state changes at Info and bad records at Warn; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Interval is how often Run reconciles; 0 means 1s. Pause and analysis deadlines are
	// noticed up to one Interval late.
	Interval time.Duration
}

// Controller runs the rollouts of this node's definitions when it is the leader, and serves
// every node the converged state.
type Controller struct {
	node     string
	store    Store
	counters Counters
	leader   Leader
	log      *slog.Logger
	now      func() time.Time
	interval time.Duration

	// mu guards plans and windows, and is held across each read-modify-write of a record so
	// that this node's own writes never race each other.
	mu      sync.Mutex
	plans   map[string]*plan
	windows map[string]*window // leader-only: the analysis window in progress per model
	badGen  map[string]uint64  // last undecodable generation logged per model, to log once

	view atomic.Pointer[map[string]State] // converged states for Weights
}

// window is an analysis interval in progress. It belongs to the record generation it started
// under (or that this node last wrote); any other writer's record restarts it.
type window struct {
	gen    uint64
	start  time.Time
	counts Counts
}

// New returns a Controller with no definitions.
func New(cfg Config) (*Controller, error) {
	if cfg.Store == nil || cfg.Counters == nil || cfg.Leader == nil {
		return nil, errors.New("rollout: Config needs Store, Counters and Leader")
	}
	c := &Controller{
		node: cfg.Node, store: cfg.Store, counters: cfg.Counters, leader: cfg.Leader,
		log: cfg.Logger, now: cfg.Now, interval: cfg.Interval,
		plans: map[string]*plan{}, windows: map[string]*window{}, badGen: map[string]uint64{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.interval <= 0 {
		c.interval = time.Second
	}
	c.view.Store(&map[string]State{})
	return c, nil
}

// SetDefinitions replaces this node's definitions as one transaction: if any is invalid,
// nothing changes. A definition that is new or whose hash differs from the running rollout's
// starts (again) at the leader's next Reconcile.
func (c *Controller) SetDefinitions(defs []Definition) error {
	if err := ValidateDefinitions(defs); err != nil {
		return err
	}
	plans := make(map[string]*plan, len(defs))
	for _, d := range defs {
		p, err := newPlan(d)
		if err != nil {
			return err
		}
		plans[d.Model] = p
	}
	c.mu.Lock()
	c.plans = plans
	c.mu.Unlock()
	return nil
}

// Run reconciles every Interval until ctx is cancelled, then returns nil.
func (c *Controller) Run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.Reconcile()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconcile does one pass: on the leader it starts, advances, analyses and completes rollouts;
// on every node it refreshes the view Weights reads.
func (c *Controller) Reconcile() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leader.IsLeader() {
		// A window must not outlive a spell without leadership: another leader may have
		// judged the same traffic meanwhile.
		clear(c.windows)
		c.refreshLocked()
		return
	}
	for model := range c.windows {
		if c.plans[model] == nil {
			delete(c.windows, model)
		}
	}
	for _, model := range slices.Sorted(maps.Keys(c.plans)) {
		// Go on while a pass writes, so that entering a step also begins it (opens an
		// analysis window); each write enters a later step or waits, so this ends.
		for range maxSteps {
			if !c.driveLocked(c.plans[model], c.currentLocked()[model]) {
				break
			}
		}
	}
	c.refreshLocked()
}

// entry is the winning record of a key and what it decodes to.
type entry struct {
	rec cluster.Record
	st  State
	err error
}

func (c *Controller) currentLocked() map[string]*entry {
	out := map[string]*entry{}
	for _, r := range c.store.Records(RecordKind) {
		if r.Kind != RecordKind {
			continue
		}
		if e, ok := out[r.Key]; ok && !wins(r, e.rec) {
			continue
		}
		out[r.Key] = &entry{rec: r}
	}
	for _, e := range out {
		e.st, e.err = DecodeRecord(e.rec)
		if e.err != nil && c.badGen[e.rec.Key] != e.rec.Generation {
			c.badGen[e.rec.Key] = e.rec.Generation
			c.log.Warn("rollout: ignoring undecodable record", "model", e.rec.Key, "generation", e.rec.Generation, "err", e.err)
		}
	}
	return out
}

// refreshLocked replaces the view Weights reads with the winning records, and returns it.
func (c *Controller) refreshLocked() map[string]State {
	view := map[string]State{}
	for model, e := range c.currentLocked() {
		if e.err == nil {
			view[model] = e.st
		}
	}
	c.view.Store(&view)
	return view
}

// driveLocked moves one model's rollout forward, as the leader, and reports whether it wrote a
// record.
func (c *Controller) driveLocked(p *plan, e *entry) bool {
	now := c.now()
	switch {
	case e == nil:
		_, ok := c.startLocked(p, 0, PriorityProgress, "definition appeared")
		return ok
	case e.err != nil:
		// Leave it: it may be a newer node's format. Start overrides it.
		return false
	case e.st.DefinitionHash != p.hash:
		_, ok := c.startLocked(p, e.st.Generation, PriorityProgress, "definition changed from "+e.st.DefinitionHash)
		return ok
	case e.st.Phase.Terminal():
		return false
	}
	st := e.st
	if st.Step >= len(p.steps) {
		_, ok := c.writeLocked(p.enter(st, len(p.steps), now), PriorityProgress, "steps done")
		return ok
	}
	switch s := p.steps[st.Step]; {
	case s.SetWeight != nil:
		_, ok := c.writeLocked(p.enter(st, st.Step, now), PriorityProgress, "step")
		return ok
	case s.Pause != nil:
		d := time.Duration(s.Pause.Duration)
		if d > 0 && !now.Before(st.StepStarted.Add(d)) {
			_, ok := c.writeLocked(p.enter(st, st.Step+1, now), PriorityProgress, "pause over")
			return ok
		}
	case s.Analysis != nil:
		if st.Phase == PhaseProgressing {
			return c.analyseLocked(p, *s.Analysis, st, now)
		}
	}
	return false
}

// analyseLocked opens the step's window, or closes a full one and acts on its verdict; it
// reports whether it wrote a record.
func (c *Controller) analyseLocked(p *plan, a Analysis, st State, now time.Time) bool {
	model := p.def.Model
	w := c.windows[model]
	if w == nil || w.gen != st.Generation {
		// A version without counters yet has served nothing: its counters start at zero.
		counts, _ := c.counters.Snapshot(model, st.Canary)
		c.windows[model] = &window{gen: st.Generation, start: now, counts: counts}
		return false
	}
	if now.Sub(w.start) < time.Duration(a.Window) {
		return false
	}
	end, ok := c.counters.Snapshot(model, st.Canary)
	r := evaluate(a, w.counts, end)
	if !ok {
		r = result{inconclusive, fmt.Sprintf("no counters for version %q", st.Canary)}
	}
	*w = window{start: now, counts: end}
	c.log.Debug("rollout: analysis window", "model", model, "step", st.Step, "verdict", r.verdict.String(), "detail", r.detail)

	prio := PriorityProgress
	switch r.verdict {
	case pass:
		st.Passed++
		st.Reason = "analysis: " + r.detail
	case fail:
		st.Failed++
		st.Reason = fmt.Sprintf("analysis failed %d of %d allowed: %s", st.Failed, a.FailureLimit, r.detail)
	case inconclusive:
		st.Inconclusive++
		st.Reason = "analysis inconclusive: " + r.detail
	}
	what := "analysis " + r.verdict.String()
	switch {
	case st.Failed >= a.FailureLimit:
		st.Phase, st.CanaryWeight, prio, what = PhaseAborted, 0, PriorityAbort, "aborted by analysis"
	case st.Passed+st.Failed >= a.Intervals:
		st = p.enter(st, st.Step+1, now)
		what = "analysis passed"
	case a.InconclusiveLimit > 0 && st.Inconclusive >= a.InconclusiveLimit:
		st.Phase = PhasePaused
		st.Reason = fmt.Sprintf("analysis paused after %d inconclusive windows (promote to skip, abort to stop): %s", st.Inconclusive, r.detail)
		what = "analysis inconclusive; paused"
	}
	gen, ok := c.writeLocked(st, prio, what)
	if ok {
		w.gen = gen
	}
	return ok
}

// enter begins step i: set_weight steps apply at once, the first pause or analysis is waited
// on, and running out of steps completes the rollout.
func (p *plan) enter(st State, i int, now time.Time) State {
	st.Passed, st.Failed, st.Inconclusive, st.Reason = 0, 0, 0, ""
	st.StepStarted = now
	for ; i < len(p.steps); i++ {
		switch s := p.steps[i]; {
		case s.SetWeight != nil:
			st.CanaryWeight = *s.SetWeight
		case s.Pause != nil:
			st.Step, st.Phase = i, PhasePaused
			if s.Pause.Duration == 0 {
				st.Reason = "paused until promoted"
			} else {
				st.Reason = "paused for " + s.Pause.Duration.String()
			}
			return st
		case s.Analysis != nil:
			st.Step, st.Phase = i, PhaseProgressing
			return st
		}
	}
	st.Step, st.Phase, st.CanaryWeight = len(p.steps), PhaseCompleted, 100
	return st
}

// startLocked writes step 0 of p under generation after+1.
func (c *Controller) startLocked(p *plan, after uint64, prio uint8, why string) (uint64, bool) {
	st := State{
		Model: p.def.Model, Stable: p.def.Stable, Canary: p.def.Canary, DefinitionHash: p.hash,
		Generation: after,
	}
	return c.writeLocked(p.enter(st, 0, c.now()), prio, "started: "+why)
}

// writeLocked stores st as the next generation and refreshes the view; it returns the
// generation written.
func (c *Controller) writeLocked(st State, prio uint8, what string) (uint64, bool) {
	st.Generation++
	st.Updated = c.now()
	st.By = c.node
	rec, err := EncodeRecord(st, prio)
	if err != nil {
		c.log.Error("rollout: cannot encode state", "model", st.Model, "err", err)
		return 0, false
	}
	c.store.PutRecord(rec)
	c.log.Info("rollout: "+what, "model", st.Model, "phase", st.Phase, "step", st.Step,
		"canary", st.Canary, "canary_weight", st.CanaryWeight, "generation", st.Generation, "reason", st.Reason)
	c.refreshLocked()
	return st.Generation, true
}

// currentForOpLocked returns the model's decoded state for an operation, or why there is none.
func (c *Controller) currentForOpLocked(model string) (State, error) {
	e := c.currentLocked()[model]
	if e == nil {
		return State{}, fmt.Errorf("rollout of %q: %w", model, ErrNoRollout)
	}
	if e.err != nil {
		return State{}, fmt.Errorf("rollout of %q: %w", model, e.err)
	}
	return e.st, nil
}

// Start (re)starts the model's rollout at step 0 from this node's definition, whatever phase
// it is in; it is how an aborted rollout is retried. Any node may call it.
func (c *Controller) Start(model string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.plans[model]
	if p == nil {
		return fmt.Errorf("start %q: %w", model, ErrNoDefinition)
	}
	var after uint64
	if e := c.currentLocked()[model]; e != nil {
		after = e.rec.Generation
	}
	if _, ok := c.startLocked(p, after, PriorityOperator, "by operator"); !ok {
		return fmt.Errorf("start %q: could not encode the state", model)
	}
	return nil
}

// unfinishedLocked returns the model's state for a promotion, or why it cannot be promoted:
// there is no rollout, or it has finished.
func (c *Controller) unfinishedLocked(model string) (State, error) {
	st, err := c.currentForOpLocked(model)
	if err != nil {
		return State{}, fmt.Errorf("promote: %w", err)
	}
	if st.Phase.Terminal() {
		return State{}, fmt.Errorf("promote %q: %w (%s)", model, ErrFinished, st.Phase)
	}
	return st, nil
}

// Promote ends the step the rollout waits on (a pause, or an analysis) and goes on with the
// next; promoting the last step completes the rollout. It needs this node's definition to be
// the one running. Any node may call it.
func (c *Controller) Promote(model string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.unfinishedLocked(model)
	if err != nil {
		return err
	}
	p := c.plans[model]
	if p == nil {
		return fmt.Errorf("promote %q: %w", model, ErrNoDefinition)
	}
	if p.hash != st.DefinitionHash {
		return fmt.Errorf("promote %q: %w (here %s, running %s)", model, ErrMismatch, p.hash, st.DefinitionHash)
	}
	c.writeLocked(p.enter(st, st.Step+1, c.now()), PriorityOperator, "promoted step")
	return nil
}

// PromoteFull skips every remaining step: the canary gets 100% and the rollout is promoted.
// Any node may call it, with or without the definition.
func (c *Controller) PromoteFull(model string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.unfinishedLocked(model)
	if err != nil {
		return err
	}
	st.Phase, st.CanaryWeight, st.Reason = PhasePromoted, 100, "promoted by operator"
	c.writeLocked(st, PriorityOperator, "promoted fully")
	return nil
}

// Abort sends all traffic back to the stable version (canary 0%) and records reason; on a
// completed or promoted rollout it is the rollback. Aborting an aborted rollout does nothing.
// Any node may call it, with or without the definition.
func (c *Controller) Abort(model, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.currentForOpLocked(model)
	if err != nil {
		return fmt.Errorf("abort: %w", err)
	}
	if st.Phase == PhaseAborted {
		return nil
	}
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if reason == "" {
		reason = "aborted by operator"
	}
	st.Phase, st.CanaryWeight, st.Reason = PhaseAborted, 0, reason
	c.writeLocked(st, PriorityAbort, "aborted")
	return nil
}

// Status returns every rollout's converged state, by model. What it returns is in force: it
// refreshes the view Weights reads, so a caller that sees "aborted" knows routing does too.
func (c *Controller) Status() []State {
	c.mu.Lock()
	defer c.mu.Unlock()
	view := c.refreshLocked()
	out := slices.Collect(maps.Values(view))
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.Model, b.Model) })
	return out
}

// Refresh brings the view Weights reads up to the store's records now, rather than at the
// next Reconcile: call it when the store changed (a record arrived by gossip), so that routing
// follows an abort or a promotion within a gossip round instead of up to an Interval later.
func (c *Controller) Refresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshLocked()
}

// Weights is what routing should use for the model now: the canary's share in percent, the
// rest to stable. ok is false when no decodable rollout state exists for the model; a state
// is reported whether or not this node has a definition for the model. It reads the view of
// the last Reconcile (or of this node's last write) and never blocks.
func (c *Controller) Weights(model string) (stable, canary string, canaryWeight float64, ok bool) {
	st, ok := (*c.view.Load())[model]
	if !ok {
		return "", "", 0, false
	}
	return st.Stable, st.Canary, st.CanaryWeight, true
}

// VersionWeight is one version's share of a model's traffic, in percent.
type VersionWeight struct {
	Version string
	Weight  float64
}

// VersionWeights is Weights as a list summing to 100: stable first, then canary. Versions
// with no traffic are left out.
func (c *Controller) VersionWeights(model string) ([]VersionWeight, bool) {
	stable, canary, w, ok := c.Weights(model)
	if !ok {
		return nil, false
	}
	var out []VersionWeight
	if w < 100 {
		out = append(out, VersionWeight{stable, math.Round((100-w)*100) / 100})
	}
	if w > 0 {
		out = append(out, VersionWeight{canary, w})
	}
	return out, true
}
