package rollout

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

const model = "resnet"

// expect checks the node's converged state and what Weights tells routing.
func expect(t *testing.T, n *node, phase Phase, step int, weight float64) State {
	t.Helper()
	st := n.state(t, model)
	if st.Phase != phase || st.Step != step || st.CanaryWeight != weight {
		t.Fatalf("node %s: phase %s step %d weight %v (reason %q), want %s step %d weight %v",
			n.node, st.Phase, st.Step, st.CanaryWeight, st.Reason, phase, step, weight)
	}
	stable, canary, w, ok := n.Weights(model)
	if !ok || stable != st.Stable || canary != st.Canary || w != weight {
		t.Fatalf("node %s: Weights = %q %q %v %v, want %q %q %v true", n.node, stable, canary, w, ok, st.Stable, st.Canary, weight)
	}
	return st
}

func canaryDef(steps ...Step) Definition {
	return Definition{Model: model, Stable: "1", Canary: "2", Steps: steps}
}

// A rollout goes through set_weight, a timed pause, a two-window analysis, another weight and
// pause, and completes at 100%; each change is one generation more.
func TestRolloutCompletes(t *testing.T) {
	clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
	def := canaryDef(
		weightStep(10),
		pauseStep(5*time.Minute),
		analysisStep(Analysis{Window: Duration(time.Minute), Intervals: 2, MaxErrorRate: ptr(0.05),
			MaxMeanLatency: Duration(100 * time.Millisecond), MinRequests: 50}),
		weightStep(50),
		pauseStep(time.Minute),
	)
	n := newNode(t, "a", store, counters, clock, true, def)

	if _, _, _, ok := n.Weights(model); ok {
		t.Fatal("Weights before any record: ok")
	}
	n.Reconcile()
	first := expect(t, n, PhasePaused, 1, 10)
	clock.Advance(4*time.Minute + 59*time.Second)
	n.Reconcile()
	if st := expect(t, n, PhasePaused, 1, 10); st.Generation != first.Generation {
		t.Fatalf("generation moved during the pause: %d → %d", first.Generation, st.Generation)
	}
	clock.Advance(time.Second)
	n.Reconcile() // pause over; the analysis window opens in the same pass
	expect(t, n, PhaseProgressing, 2, 10)

	for i := 1; i <= 2; i++ {
		counters.serve(model, "2", 100, 1, 10*time.Millisecond)
		counters.serve(model, "1", 900, 90, time.Second) // the stable version's trouble is not the canary's
		clock.Advance(time.Minute)
		n.Reconcile()
		if i == 1 {
			if st := expect(t, n, PhaseProgressing, 2, 10); st.Passed != 1 {
				t.Fatalf("after one good window: passed %d, want 1", st.Passed)
			}
		}
	}
	expect(t, n, PhasePaused, 4, 50)
	clock.Advance(time.Minute)
	n.Reconcile()
	final := expect(t, n, PhaseCompleted, 5, 100)
	if final.Generation != first.Generation+4 {
		t.Errorf("generation %d after 4 changes from %d", final.Generation, first.Generation)
	}
	writes := store.writes()
	clock.Advance(time.Hour)
	n.Reconcile()
	if store.writes() != writes {
		t.Error("a completed rollout was written again")
	}
}

// Failed windows abort at the failure limit; a window with too little traffic counts neither
// way; the abort reaches another node through the record.
func TestAnalysisAbortsOnErrors(t *testing.T) {
	clock, counters := newFakeClock(), newFakeCounters()
	storeA, storeB := newMemStore(), newMemStore()
	def := canaryDef(
		weightStep(20),
		analysisStep(Analysis{Window: Duration(time.Minute), Intervals: 3, MaxErrorRate: ptr(0.05),
			MinRequests: 10, FailureLimit: 2}),
		weightStep(100),
	)
	a := newNode(t, "a", storeA, counters, clock, true, def)
	b := newNode(t, "b", storeB, counters, clock, false, def)

	a.Reconcile()
	expect(t, a, PhaseProgressing, 1, 20)

	window := func(n, errs int) State {
		counters.serve(model, "2", n, errs, 5*time.Millisecond)
		clock.Advance(time.Minute)
		a.Reconcile()
		return a.state(t, model)
	}
	if st := window(100, 20); st.Failed != 1 || st.Phase != PhaseProgressing {
		t.Fatalf("first bad window: %+v", st)
	}
	if st := window(5, 5); st.Failed != 1 || st.Passed != 0 || st.Inconclusive != 1 || st.Phase != PhaseProgressing {
		t.Fatalf("window under min_requests: %+v, want it inconclusive", st)
	}
	st := window(100, 30)
	expect(t, a, PhaseAborted, 1, 0)
	if !strings.Contains(st.Reason, "error rate 0.3000 > 0.05") {
		t.Errorf("reason %q does not say what failed", st.Reason)
	}

	gossip(storeA, storeB)
	b.Reconcile()
	if got := expect(t, b, PhaseAborted, 1, 0); got.Reason != st.Reason {
		t.Errorf("node b reason %q, want %q", got.Reason, st.Reason)
	}
	if err := b.Promote(model); !errors.Is(err, ErrFinished) {
		t.Errorf("Promote after abort = %v, want ErrFinished", err)
	}
}

// Inconclusive windows pause the step at inconclusive_limit; Promote skips it.
func TestAnalysisInconclusiveLimit(t *testing.T) {
	clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
	n := newNode(t, "a", store, counters, clock, true, canaryDef(
		weightStep(5),
		analysisStep(Analysis{Window: Duration(time.Minute), MaxErrorRate: ptr(0.0), MinRequests: 100, InconclusiveLimit: 2}),
		weightStep(30), pauseStep(0),
	))
	n.Reconcile()
	for range 2 {
		counters.serve(model, "2", 10, 0, time.Millisecond)
		clock.Advance(time.Minute)
		n.Reconcile()
	}
	st := expect(t, n, PhasePaused, 1, 5)
	if st.Inconclusive != 2 || !strings.Contains(st.Reason, "fewer than the 100 needed") {
		t.Fatalf("state %+v", st)
	}
	clock.Advance(time.Hour)
	n.Reconcile()
	expect(t, n, PhasePaused, 1, 5)
	if err := n.Promote(model); err != nil {
		t.Fatal(err)
	}
	expect(t, n, PhasePaused, 3, 30)
}

// An indefinite pause holds until Promote, which any node with the definition may call;
// PromoteFull jumps to 100%.
func TestPromoteIndefinitePause(t *testing.T) {
	clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
	def := canaryDef(weightStep(20), pauseStep(0), weightStep(60), Step{Pause: &Pause{}})
	a := newNode(t, "a", store, counters, clock, true, def)
	b := newNode(t, "b", store, counters, clock, false, def)

	a.Reconcile()
	expect(t, a, PhasePaused, 1, 20)
	clock.Advance(30 * 24 * time.Hour)
	a.Reconcile()
	expect(t, a, PhasePaused, 1, 20)

	if err := b.Promote(model); err != nil { // not the leader: operator intent is written anyway
		t.Fatal(err)
	}
	st := expect(t, b, PhasePaused, 3, 60)
	if st.By != "b" {
		t.Errorf("record written by %q, want b", st.By)
	}
	a.Reconcile()
	expect(t, a, PhasePaused, 3, 60)
	if err := a.Promote(model); err != nil {
		t.Fatal(err)
	}
	expect(t, a, PhaseCompleted, 4, 100)
	if err := a.Promote(model); !errors.Is(err, ErrFinished) {
		t.Errorf("Promote of a completed rollout = %v, want ErrFinished", err)
	}

	if err := a.Start(model); err != nil {
		t.Fatal(err)
	}
	expect(t, a, PhasePaused, 1, 20)
	if err := b.PromoteFull(model); err != nil {
		t.Fatal(err)
	}
	expect(t, b, PhasePromoted, 1, 100)

	other := newNode(t, "c", store, counters, clock, false) // no definition
	if err := other.Promote(model); !errors.Is(err, ErrFinished) {
		t.Errorf("Promote on a promoted rollout = %v, want ErrFinished", err)
	}
	if err := other.Start("nope"); !errors.Is(err, ErrNoDefinition) {
		t.Errorf("Start without a definition = %v, want ErrNoDefinition", err)
	}
	if err := other.Abort("nope", ""); !errors.Is(err, ErrNoRollout) {
		t.Errorf("Abort without a record = %v, want ErrNoRollout", err)
	}
}

// An abort and a promote made on two nodes from the same generation carry the same next
// generation; whichever order gossip delivers them in, every node keeps the abort.
func TestAbortWinsTieAgainstPromote(t *testing.T) {
	for _, abortFirst := range []bool{false, true} {
		clock, counters := newFakeClock(), newFakeCounters()
		storeA, storeB := newMemStore(), newMemStore()
		def := canaryDef(weightStep(25), pauseStep(0))
		a := newNode(t, "a", storeA, counters, clock, true, def)
		b := newNode(t, "b", storeB, counters, clock, false, def)
		a.Reconcile()
		gossip(storeA, storeB)
		b.Reconcile()
		before := expect(t, b, PhasePaused, 1, 25)

		if err := a.Promote(model); err != nil {
			t.Fatal(err)
		}
		if err := b.Abort(model, "canary looks wrong"); err != nil {
			t.Fatal(err)
		}
		pa, pb := a.state(t, model), b.state(t, model)
		if pa.Generation != before.Generation+1 || pb.Generation != pa.Generation {
			t.Fatalf("generations %d and %d, want both %d", pa.Generation, pb.Generation, before.Generation+1)
		}
		if abortFirst {
			gossip(storeB, storeA)
			gossip(storeA, storeB)
		} else {
			gossip(storeA, storeB)
			gossip(storeB, storeA)
		}
		a.Reconcile()
		b.Reconcile()
		for _, n := range []*node{a, b} {
			if st := expect(t, n, PhaseAborted, 1, 0); st.Reason != "canary looks wrong" {
				t.Errorf("node %s reason %q", n.node, st.Reason)
			}
		}
	}
}

// The leader's deadline and analysis counts live in the record, so a new leader continues:
// it ends the pause the old leader began on time, and failures counted by different leaders
// add up to the limit. A leader that lost and regained leadership without noticing does not
// judge its old window again: another leader's record restarts it.
func TestLeaderChangeContinues(t *testing.T) {
	clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
	def := canaryDef(
		weightStep(10),
		pauseStep(10*time.Minute),
		analysisStep(Analysis{Window: Duration(time.Minute), Intervals: 3, FailureLimit: 2,
			MaxMeanLatency: Duration(50 * time.Millisecond), MinRequests: 10}),
		weightStep(100),
	)
	a := newNode(t, "a", store, counters, clock, true, def)
	b := newNode(t, "b", store, counters, clock, false, def)

	a.Reconcile()
	expect(t, a, PhasePaused, 1, 10)
	clock.Advance(6 * time.Minute)
	a.Reconcile()

	a.leader.Store(false)
	b.leader.Store(true)
	clock.Advance(3 * time.Minute)
	a.Reconcile()
	b.Reconcile()
	expect(t, b, PhasePaused, 1, 10)
	clock.Advance(time.Minute) // 10 minutes after a began the pause
	b.Reconcile()
	expect(t, b, PhaseProgressing, 2, 10)

	writes := store.writes()
	b.leader.Store(false)
	clock.Advance(time.Hour)
	b.Reconcile()
	a.Reconcile()
	if store.writes() != writes {
		t.Fatal("a node wrote while no node was the leader")
	}

	// a leads and opens a window; then b leads without a noticing, and judges a bad one.
	a.leader.Store(true)
	a.Reconcile()
	a.leader.Store(false)
	b.leader.Store(true)
	b.Reconcile()
	counters.serve(model, "2", 100, 0, 80*time.Millisecond)
	clock.Advance(time.Minute)
	b.Reconcile()
	if st := expect(t, b, PhaseProgressing, 2, 10); st.Failed != 1 || st.By != "b" {
		t.Fatalf("after b's bad window: %+v", st)
	}

	b.leader.Store(false)
	writes = store.writes()
	// Had a judged its old window it would have seen b's bad traffic and aborted here.
	a.leader.Store(true)
	a.Reconcile()
	if st := expect(t, a, PhaseProgressing, 2, 10); st.Failed != 1 || store.writes() != writes {
		t.Fatalf("a judged a stale window: %+v", st)
	}
	counters.serve(model, "2", 100, 0, 10*time.Millisecond)
	clock.Advance(time.Minute)
	a.Reconcile()
	if st := expect(t, a, PhaseProgressing, 2, 10); st.Passed != 1 || st.Failed != 1 {
		t.Fatalf("after a's good window: %+v", st)
	}
	counters.serve(model, "2", 100, 0, 70*time.Millisecond)
	clock.Advance(time.Minute)
	a.Reconcile()
	st := expect(t, a, PhaseAborted, 2, 0)
	if st.Failed != 2 || !strings.Contains(st.Reason, "mean latency 70ms > 50ms") {
		t.Errorf("state %+v", st)
	}
}

// Blue-green switches to 100% at once, verifies after the switch, and rolls back by Abort or
// by a failed analysis.
func TestBlueGreen(t *testing.T) {
	verify := analysisStep(Analysis{Window: Duration(time.Minute), MaxErrorRate: ptr(0.01), MinRequests: 10})
	bg := func(steps ...Step) Definition {
		return Definition{Model: model, Strategy: StrategyBlueGreen, Stable: "blue", Canary: "green", Steps: steps}
	}

	t.Run("switch and rollback", func(t *testing.T) {
		clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
		n := newNode(t, "a", store, counters, clock, true, bg(verify))
		n.Reconcile()
		expect(t, n, PhaseProgressing, 1, 100)
		counters.serve(model, "green", 500, 1, time.Millisecond)
		clock.Advance(time.Minute)
		n.Reconcile()
		expect(t, n, PhaseCompleted, 2, 100)
		if got, ok := n.VersionWeights(model); !ok || len(got) != 1 || got[0] != (VersionWeight{"green", 100}) {
			t.Errorf("VersionWeights = %v %v", got, ok)
		}
		if err := n.Abort(model, "rollback"); err != nil {
			t.Fatal(err)
		}
		expect(t, n, PhaseAborted, 2, 0)
		if got, _ := n.VersionWeights(model); len(got) != 1 || got[0] != (VersionWeight{"blue", 100}) {
			t.Errorf("VersionWeights after rollback = %v", got)
		}
		gen := n.state(t, model).Generation
		if err := n.Abort(model, "again"); err != nil || n.state(t, model).Generation != gen {
			t.Errorf("second Abort: err %v, generation %d → %d", err, gen, n.state(t, model).Generation)
		}
	})

	t.Run("failed verification rolls back", func(t *testing.T) {
		clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
		n := newNode(t, "a", store, counters, clock, true, bg(verify))
		n.Reconcile()
		counters.serve(model, "green", 500, 50, time.Millisecond)
		clock.Advance(time.Minute)
		n.Reconcile()
		expect(t, n, PhaseAborted, 1, 0)
	})

	t.Run("no steps", func(t *testing.T) {
		clock, counters, store := newFakeClock(), newFakeCounters(), newMemStore()
		n := newNode(t, "a", store, counters, clock, true, bg())
		n.Reconcile()
		expect(t, n, PhaseCompleted, 1, 100)
	})
}

// A changed definition restarts the rollout under the next generation, and that record
// replaces the old one on a node that still has the old definition.
func TestNewerDefinitionReplacesRecord(t *testing.T) {
	clock, counters := newFakeClock(), newFakeCounters()
	storeA, storeB := newMemStore(), newMemStore()
	old := canaryDef(weightStep(30), pauseStep(0))
	a := newNode(t, "a", storeA, counters, clock, true, old)
	b := newNode(t, "b", storeB, counters, clock, false, old)
	a.Reconcile()
	gossip(storeA, storeB)
	b.Reconcile()
	before := expect(t, b, PhasePaused, 1, 30)

	newer := old
	newer.Canary = "3"
	newer.Steps = []Step{weightStep(5), pauseStep(0)}
	if err := a.SetDefinitions([]Definition{newer}); err != nil {
		t.Fatal(err)
	}
	a.Reconcile()
	gossip(storeA, storeB)
	b.Reconcile()
	st := expect(t, b, PhasePaused, 1, 5)
	wantHash, _ := newer.Hash()
	if st.Canary != "3" || st.DefinitionHash != wantHash || st.Generation != before.Generation+1 {
		t.Errorf("b has %+v, want canary 3, hash %s, generation %d", st, wantHash, before.Generation+1)
	}
	// b's stale gossip cannot bring the old definition back.
	gossip(storeB, storeA)
	a.Reconcile()
	expect(t, a, PhasePaused, 1, 5)

	// Hand-written garbage with a higher generation wins the store's merge but is not used.
	bad := storeA.Records(RecordKind)[0]
	bad.Generation++
	bad.Data = []byte(`{"v":1,"model":"resnet"`)
	storeA.PutRecord(bad)
	a.Reconcile()
	if _, _, _, ok := a.Weights(model); ok {
		t.Error("Weights from an undecodable record")
	}
	if err := a.Start(model); err != nil { // the way out: a newer generation
		t.Fatal(err)
	}
	expect(t, a, PhasePaused, 1, 5)

	// An invalid set of definitions changes nothing.
	if err := a.SetDefinitions([]Definition{newer, newer}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate definitions: %v", err)
	}
	a.Reconcile()
	expect(t, a, PhasePaused, 1, 5)
}

// Run reconciles on its ticker in fake time and returns nil when cancelled.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, counters := newMemStore(), newFakeCounters()
		c, err := New(Config{Node: "a", Store: store, Counters: counters, Leader: LeaderFunc(func() bool { return true }),
			Interval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetDefinitions([]Definition{canaryDef(weightStep(50), pauseStep(30*time.Second))}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		synctest.Wait()
		if _, _, w, ok := c.Weights(model); !ok || w != 50 {
			t.Fatalf("after the first tick: weight %v ok %v", w, ok)
		}
		time.Sleep(29 * time.Second) // fake time inside the bubble
		synctest.Wait()
		if _, _, w, _ := c.Weights(model); w != 50 {
			t.Fatalf("weight %v before the pause ended", w)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if st := c.Status(); len(st) != 1 || st[0].Phase != PhaseCompleted {
			t.Fatalf("status %+v, want completed", st)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	})
}

// A record that arrives by gossip steers Weights once Refresh (or Status) runs, without
// waiting for the next Reconcile.
func TestRefreshFollowsGossip(t *testing.T) {
	clock, counters := newFakeClock(), newFakeCounters()
	storeA, storeB := newMemStore(), newMemStore()
	def := canaryDef(weightStep(25), pauseStep(0))
	a := newNode(t, "a", storeA, counters, clock, true, def)
	b := newNode(t, "b", storeB, counters, clock, false, def)
	a.Reconcile()
	gossip(storeA, storeB)
	b.Reconcile()
	expect(t, b, PhasePaused, 1, 25)

	if err := a.Abort(model, "bad canary"); err != nil {
		t.Fatal(err)
	}
	gossip(storeA, storeB)
	if _, _, w, _ := b.Weights(model); w != 25 {
		t.Fatalf("Weights before any refresh = %v, want the old 25", w)
	}
	b.Refresh()
	if _, _, w, ok := b.Weights(model); !ok || w != 0 {
		t.Fatalf("Weights after Refresh = %v %v, want 0 (aborted)", w, ok)
	}

	if err := a.Start(model); err != nil {
		t.Fatal(err)
	}
	gossip(storeA, storeB)
	if st := b.state(t, model); st.Phase != PhasePaused {
		t.Fatalf("Status after restart: %s", st.Phase)
	}
	if _, _, w, _ := b.Weights(model); w != 25 {
		t.Fatalf("Weights after Status = %v, want 25: what Status reports must be in force", w)
	}
}
