package tuning

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Service-time curves of the three kinds of model the scheduler must serve well, for one
// instance of t threads with every core of the machine to itself.
var (
	// gemm gains 12× per row from batching (rows of 64 against rows of 1) and scales with
	// threads at 80%.
	gemm = func(t, b int) time.Duration {
		return threadScaled(t, 0.8, 1354*time.Microsecond+time.Duration(b)*100*time.Microsecond)
	}
	// conv gains nothing from batching and little from a second thread.
	conv = func(t, b int) time.Duration { return threadScaled(t, 0.6, time.Duration(b)*2*time.Millisecond) }
	// gpu takes as long for 32 rows as for 1, then grows linearly.
	gpu = func(_, b int) time.Duration { return 5 * time.Millisecond * time.Duration(max(b, 32)) / 32 }
)

func threadScaled(t int, efficiency float64, d time.Duration) time.Duration {
	if t <= 1 {
		return d
	}
	return time.Duration(float64(d) / (float64(t) * efficiency))
}

// curveOf measures f exactly at the given candidate and batch sizes.
func curveOf(f func(t, b int) time.Duration, c Candidate, batches []int) Curve {
	cv := Curve{Candidate: c}
	for _, b := range batches {
		cv.Points = append(cv.Points, Point{Batch: b, Service: f(c.Threads, b)})
	}
	return cv
}

func profileOf(f func(t, b int) time.Duration, cores, maxBatch int) Profile {
	var p Profile
	for _, c := range Candidates(Limits{Cores: cores}) {
		p.Curves = append(p.Curves, curveOf(f, c, BatchSizes(maxBatch)))
	}
	return p
}

func TestServiceInterpolates(t *testing.T) {
	c := Curve{Candidate: Candidate{1, 1}, Points: []Point{{1, 10 * time.Millisecond}, {4, 16 * time.Millisecond}, {8, 24 * time.Millisecond}}}
	for _, tc := range []struct {
		batch int
		want  time.Duration
	}{
		{1, 10 * time.Millisecond},
		{2, 12 * time.Millisecond},
		{6, 20 * time.Millisecond},
		{8, 24 * time.Millisecond},
		{16, 40 * time.Millisecond}, // 2 ms per row beyond the last point
		{0, 0},
	} {
		if got := c.Service(tc.batch); got != tc.want {
			t.Errorf("Service(%d) = %s, want %s", tc.batch, got, tc.want)
		}
	}
	if got, want := c.RowsPerSecond(8), 8/0.024; got != want {
		t.Errorf("RowsPerSecond(8) = %v, want %v", got, want)
	}
	if got := (Curve{Err: "x"}).Service(4); got != 0 {
		t.Errorf("an unusable curve's service = %s", got)
	}
}

func TestCandidates(t *testing.T) {
	for _, tc := range []struct {
		l    Limits
		want []Candidate
	}{
		{Limits{Cores: 1}, []Candidate{{1, 1}}},
		{Limits{Cores: 2}, []Candidate{{1, 2}, {2, 1}}},
		{Limits{Cores: 6}, []Candidate{{1, 6}, {6, 1}, {2, 3}, {4, 1}}},
		{Limits{Cores: 8}, []Candidate{{1, 8}, {8, 1}, {2, 4}, {4, 2}}},
		{Limits{Cores: 8, MaxInstances: 2}, []Candidate{{1, 8}, {2, 4}}},
		{Limits{Cores: 8, MinInstances: 4}, []Candidate{{8, 1}, {4, 2}}},
		{Limits{Cores: 8, Instances: 3}, []Candidate{{3, 2}}},
		{Limits{Cores: 8, Threads: 2}, []Candidate{{1, 2}, {2, 2}, {4, 2}}},
		{Limits{Cores: 2, Instances: 4, Threads: 2}, []Candidate{{4, 2}}}, // pinned: as written
	} {
		if got := Candidates(tc.l); !slices.Equal(got, tc.want) {
			t.Errorf("Candidates(%+v) = %v, want %v", tc.l, got, tc.want)
		}
	}
}

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     Profile
		l     Limits
		want  Candidate
		batch int
	}{
		// 64 rows in flight: two single-thread instances at 32 each beat one two-thread
		// instance at 64 (threads scale at 80%), and no instance idles.
		{"gemm at 64 in flight", profileOf(gemm, 2, 64), Limits{Cores: 2, MaxBatch: 64, InFlight: 64}, Candidate{2, 1}, 32},
		// one request in flight: a second instance would idle, two threads make it faster
		{"gemm at 1 in flight", profileOf(gemm, 2, 64), Limits{Cores: 2, MaxBatch: 64, InFlight: 1}, Candidate{1, 2}, 1},
		// the load is unknown at load time: max_batch_size rows in flight
		{"gemm by default", profileOf(gemm, 2, 64), Limits{Cores: 2, MaxBatch: 64}, Candidate{2, 1}, 32},
		// no gain from batching: the smallest batch, on single-thread instances
		{"conv at 64 in flight", profileOf(conv, 2, 64), Limits{Cores: 2, MaxBatch: 64, InFlight: 64}, Candidate{2, 1}, 1},
		// flat until 32: batches of 32, and on 4 cores four instances
		{"gpu-like at 128 in flight", profileOf(gpu, 4, 64), Limits{Cores: 4, MaxBatch: 64, InFlight: 128}, Candidate{4, 1}, 32},
		// 2 × S(b) ≤ 5 ms: on one thread S(b) = 1.354 ms + 0.1 ms × b, so b ≤ 11 (8,965
		// rows/s on two instances); on two threads S(b) is that ÷ 1.6, so b ≤ 26 (10,521)
		{"gemm in a latency budget", profileOf(gemm, 2, 64), Limits{Cores: 2, MaxBatch: 64, InFlight: 64, LatencyBudget: 5 * time.Millisecond}, Candidate{1, 2}, 26},
		// a core cap: one core
		{"gemm on one core", profileOf(gemm, 2, 64), Limits{Cores: 1, MaxBatch: 64, InFlight: 64}, Candidate{1, 1}, 64},
		// pinned instances
		{"gemm pinned to one instance", profileOf(gemm, 2, 64), Limits{Cores: 2, MaxBatch: 64, InFlight: 64, Instances: 1}, Candidate{1, 2}, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// a profile of a capped machine still holds the other curves; add the 1×1 one
			tc.p.Curves = append(tc.p.Curves, curveOf(gemmOrSame(tc.name, tc.p), Candidate{1, 1}, BatchSizes(64)))
			d, err := Choose(tc.p, tc.l)
			if err != nil {
				t.Fatal(err)
			}
			if d.Candidate != tc.want || d.BatchTarget != tc.batch {
				t.Errorf("chose %s at batch %d, want %s at %d (%s)", d.Candidate, d.BatchTarget, tc.want, tc.batch, d.Reason)
			}
			t.Log(d.Reason)
		})
	}
}

// gemmOrSame is the curve function the named case was built from.
func gemmOrSame(name string, _ Profile) func(t, b int) time.Duration {
	switch {
	case len(name) >= 4 && name[:4] == "conv":
		return conv
	case len(name) >= 3 && name[:3] == "gpu":
		return gpu
	}
	return gemm
}

func TestChooseRefuses(t *testing.T) {
	p := profileOf(gemm, 2, 64)
	if _, err := Choose(p, Limits{Cores: 2, MaxBatch: 64, LatencyBudget: time.Millisecond}); !errors.Is(err, ErrNoCandidate) {
		t.Errorf("a budget under one row's run: %v, want ErrNoCandidate", err)
	}
	broken := Profile{Curves: []Curve{{Candidate: Candidate{1, 2}, Err: "out of memory"}}}
	if _, err := Choose(broken, Limits{Cores: 2, MaxBatch: 64}); !errors.Is(err, ErrNoCandidate) {
		t.Errorf("only unusable curves: %v, want ErrNoCandidate", err)
	}
	// an unusable curve is passed over for a usable one
	p.Curves[1].Points, p.Curves[1].Err = nil, "run at batch 64: out of memory"
	d, err := Choose(p, Limits{Cores: 2, MaxBatch: 64})
	if err != nil || d.Candidate != (Candidate{1, 2}) {
		t.Errorf("with 2×1 unusable: %v, %v", d, err)
	}
}

// fakeSession runs in the time its model's curve says, slowed down when more threads run at
// once than the machine has cores (under synctest, time.Sleep is exact).
type fakeSession struct {
	threads int
	curve   func(t, b int) time.Duration
	machine *fakeMachine
	failAt  int // batch size at which Run fails; 0: never
}

type fakeMachine struct {
	cores   int
	running atomic.Int64 // threads running now
	opened  atomic.Int64
	closed  atomic.Int64
}

func (s *fakeSession) Signature() engine.Signature { return engine.Signature{} }
func (s *fakeSession) Provider() string            { return engine.ProviderCPU }
func (s *fakeSession) Close() error                { s.machine.closed.Add(1); return nil }
func (s *fakeSession) Run(ctx context.Context, in []tensor.Tensor, _ []string) ([]tensor.Tensor, error) {
	b := int(in[0].Shape[0])
	if s.failAt > 0 && b >= s.failAt {
		return nil, fmt.Errorf("%w: out of memory", engine.ErrRun)
	}
	running := s.machine.running.Add(int64(s.threads))
	defer s.machine.running.Add(-int64(s.threads))
	d := s.curve(s.threads, b)
	if over := float64(running) / float64(s.machine.cores); over > 1 {
		d = time.Duration(float64(d) * over)
	}
	select {
	case <-time.After(d):
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func inputsOf(b int) ([]tensor.Tensor, error) {
	return []tensor.Tensor{{Name: "x", DataType: tensor.FP32, Shape: []int64{int64(b), 4}, Data: make([]byte, 16*b)}}, nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestCalibrateMeasuresEveryCandidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMachine{cores: 2}
		open := func(_ context.Context, threads int) (engine.Session, error) {
			m.opened.Add(1)
			return &fakeSession{threads: threads, curve: gemm, machine: m}, nil
		}
		plan := Plan{Candidates: Candidates(Limits{Cores: 2}), Batches: BatchSizes(64), Inputs: inputsOf, Budget: 3 * time.Second}
		start := time.Now()
		prof, pool, err := Calibrate(t.Context(), open, plan, quiet())
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if took := time.Since(start); took > plan.Budget || prof.Took != took {
			t.Errorf("took %s (profile says %s), budget %s", took, prof.Took, plan.Budget)
		}
		if !prof.Complete || len(prof.Curves) != 2 {
			t.Fatalf("profile: complete %v, %d curves", prof.Complete, len(prof.Curves))
		}
		for _, c := range prof.Curves {
			for _, p := range c.Points {
				if want := gemm(c.Threads, p.Batch); p.Service != want {
					t.Errorf("%s at batch %d: measured %s, the curve says %s", c.Candidate, p.Batch, p.Service, want)
				}
			}
		}
		// the sessions are kept for the caller: one of 2 threads, two of 1
		if got := m.opened.Load(); got != 3 {
			t.Errorf("opened %d sessions, want 3", got)
		}
		if got := len(pool.Take(1, 2)); got != 2 {
			t.Errorf("took %d single-thread sessions, want 2", got)
		}
		pool.Close()
		if got := m.closed.Load(); got != 1 {
			t.Errorf("closing the pool closed %d sessions, want the 1 not taken", got)
		}
	})
}

func TestCalibrateKeepsToItsBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMachine{cores: 8}
		slow := func(t, b int) time.Duration { return 50 * time.Millisecond * time.Duration(b) / time.Duration(t) }
		open := func(_ context.Context, threads int) (engine.Session, error) {
			return &fakeSession{threads: threads, curve: slow, machine: m}, nil
		}
		plan := Plan{Candidates: Candidates(Limits{Cores: 8}), Batches: BatchSizes(64), Inputs: inputsOf, Budget: 3 * time.Second}
		start := time.Now()
		prof, pool, err := Calibrate(t.Context(), open, plan, quiet())
		if err != nil {
			t.Fatal(err)
		}
		pool.Close()
		// A share may overrun by the one batch size in flight when it ends; never by more
		// than the slowest point (64 rows on one thread, 4 timed runs: 12.8 s here, so the
		// bound below is what keeping to the shares gives).
		if took := time.Since(start); took > plan.Budget+4*slow(1, 32) {
			t.Errorf("took %s for a budget of %s", took, plan.Budget)
		}
		if prof.Complete {
			t.Error("profile says complete, but 64 rows on one thread cannot fit the budget")
		}
		for _, c := range prof.Curves {
			if !c.Usable() || c.Points[0].Batch != 1 {
				t.Errorf("%s: %+v: every candidate should have at least batch 1", c.Candidate, c)
			}
		}
	})
}

func TestCalibrateRecordsFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMachine{cores: 2}
		open := func(_ context.Context, threads int) (engine.Session, error) {
			if threads == 2 {
				return nil, errors.New("no memory for another session")
			}
			return &fakeSession{threads: threads, curve: gemm, machine: m, failAt: 64}, nil
		}
		plan := Plan{Candidates: Candidates(Limits{Cores: 2}), Batches: BatchSizes(64), Inputs: inputsOf, Budget: 3 * time.Second}
		prof, pool, err := Calibrate(t.Context(), open, plan, quiet())
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		for _, c := range prof.Curves {
			if c.Usable() {
				t.Errorf("%s is usable: %+v", c.Candidate, c)
			}
			t.Logf("%s: %s", c.Candidate, c.Err)
		}
		if _, err := Choose(prof, Limits{Cores: 2, MaxBatch: 64}); !errors.Is(err, ErrNoCandidate) {
			t.Errorf("Choose: %v, want ErrNoCandidate", err)
		}
	})
}

func TestCalibrateStopsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &fakeMachine{cores: 2}
		open := func(_ context.Context, threads int) (engine.Session, error) {
			m.opened.Add(1)
			return &fakeSession{threads: threads, curve: gemm, machine: m}, nil
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		plan := Plan{Candidates: Candidates(Limits{Cores: 2}), Batches: BatchSizes(64), Inputs: inputsOf, Budget: 3 * time.Second}
		if _, _, err := Calibrate(ctx, open, plan, quiet()); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Calibrate: %v, want the context's error", err)
		}
		if opened, closed := m.opened.Load(), m.closed.Load(); opened != closed {
			t.Errorf("opened %d sessions, closed %d", opened, closed)
		}
	})
}

func TestStore(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(model, []byte("weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := Key(model, "max_batch_size=64", "cpu", "1.29.0")
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range [][3]string{{"max_batch_size=32", "cpu", "1.29.0"}, {"max_batch_size=64", "gpu", "1.29.0"}, {"max_batch_size=64", "cpu", "1.30.0"}} {
		if k, _ := Key(model, other[0], other[1], other[2]); k == key {
			t.Errorf("key of %v is the same", other)
		}
	}
	s := NewStore(filepath.Join(dir, "profiles"))
	if _, ok, err := s.Load(key); ok || err != nil {
		t.Fatalf("empty store: %v %v", ok, err)
	}
	p := profileOf(gemm, 2, 64)
	p.Key, p.Took, p.Complete = key, 1500*time.Millisecond, true
	if err := s.Save(p); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Load(key)
	if err != nil || !ok {
		t.Fatalf("Load: %v %v", ok, err)
	}
	if got.Key != p.Key || got.Took != p.Took || len(got.Curves) != len(p.Curves) || !slices.Equal(got.Curves[1].Points, p.Curves[1].Points) {
		t.Errorf("loaded %+v, saved %+v", got, p)
	}
	// the model file changes: another key
	if err := os.WriteFile(model, []byte("other weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	if k, _ := Key(model, "max_batch_size=64", "cpu", "1.29.0"); k == key {
		t.Error("a changed model file has the same key")
	}
	// a corrupt file is reported, not used
	if err := os.WriteFile(filepath.Join(dir, "profiles", key+".json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Load(key); ok || err == nil {
		t.Errorf("corrupt profile: ok %v, err %v", ok, err)
	}
	// no directory: nothing kept, nothing found
	var none *Store
	if err := none.Save(p); err != nil {
		t.Error(err)
	}
	if _, ok, _ := NewStore("").Load(key); ok {
		t.Error("an empty store found a profile")
	}
}

// The interference calibration adds stops with the calibration: no goroutine is left behind.
func TestInterferenceStops(t *testing.T) {
	before := runtime.NumGoroutine()
	stop := interfere(2, 0.15)
	stop()
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before, %d after", before, after)
	}
}

// What model.toml pins is served as written even when it asks for more than the cores.
func TestChooseKeepsAPinnedOversubscription(t *testing.T) {
	l := Limits{Cores: 2, MaxBatch: 8, Instances: 4, Threads: 2}
	p := Profile{Curves: []Curve{curveOf(gemm, Candidate{4, 2}, BatchSizes(8))}}
	d, err := Choose(p, l)
	if err != nil || d.Candidate != (Candidate{4, 2}) {
		t.Errorf("Choose = %v, %v; want the pinned 4×2", d, err)
	}
}
