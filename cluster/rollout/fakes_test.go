package rollout

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferd/inferd/cluster"
)

// memStore is one node's view of the gossiped records: it keeps the winner per key, as
// package cluster does. sync plays gossip between two views.
type memStore struct {
	mu   sync.Mutex
	recs map[[2]string]cluster.Record
	puts int
}

func newMemStore() *memStore { return &memStore{recs: map[[2]string]cluster.Record{}} }

func (s *memStore) PutRecord(r cluster.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	id := [2]string{r.Kind, r.Key}
	if old, ok := s.recs[id]; ok && !wins(r, old) {
		return
	}
	r.Data = slices.Clone(r.Data)
	s.recs[id] = r
}

func (s *memStore) Records(kind string) []cluster.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []cluster.Record
	for id, r := range s.recs {
		if id[0] == kind {
			out = append(out, r)
		}
	}
	return out
}

func (s *memStore) writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

// gossip delivers every record of from to to.
func gossip(from, to *memStore) {
	for _, r := range from.Records(RecordKind) {
		to.PutRecord(r)
	}
}

// fakeCounters are cumulative counters per model version that a test adds traffic to.
type fakeCounters struct {
	mu sync.Mutex
	c  map[[2]string]Counts
}

func newFakeCounters() *fakeCounters { return &fakeCounters{c: map[[2]string]Counts{}} }

func (f *fakeCounters) Snapshot(model, version string) (Counts, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.c[[2]string{model, version}]
	c.Buckets = slices.Clone(c.Buckets)
	return c, ok
}

// serve records n requests of which errs failed; the others took lat each.
func (f *fakeCounters) serve(model, version string, n, errs int, lat time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := [2]string{model, version}
	c := f.c[id]
	c.Requests += uint64(n)
	c.Errors += uint64(errs)
	ok := uint64(n - errs)
	c.LatencyCount += ok
	c.LatencySum += time.Duration(ok) * lat
	f.c[id] = c
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// node is one daemon's controller in a test cluster.
type node struct {
	*Controller
	store  *memStore
	leader atomic.Bool
}

func newNode(t *testing.T, name string, store *memStore, counters Counters, clock *fakeClock, leader bool, defs ...Definition) *node {
	t.Helper()
	n := &node{store: store}
	n.leader.Store(leader)
	c, err := New(Config{
		Node: name, Store: store, Counters: counters, Leader: LeaderFunc(n.leader.Load),
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name),
		Now:    clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetDefinitions(defs); err != nil {
		t.Fatal(err)
	}
	n.Controller = c
	return n
}

// state returns the node's converged state of model, failing the test if there is none.
func (n *node) state(t *testing.T, model string) State {
	t.Helper()
	for _, s := range n.Status() {
		if s.Model == model {
			return s
		}
	}
	t.Fatalf("node %s: no rollout state for %q", n.node, model)
	return State{}
}

func ptr[T any](v T) *T { return &v }

func weightStep(w float64) Step      { return Step{SetWeight: ptr(w)} }
func pauseStep(d time.Duration) Step { return Step{Pause: &Pause{Duration: Duration(d)}} }
func analysisStep(a Analysis) Step   { return Step{Analysis: &a} }
