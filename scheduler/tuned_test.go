package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// The tuned batcher, driven by closed-loop clients against a fake model that takes the time a
// service-time curve says (exact under synctest): deterministic policy tests, no timing of the
// machine.

// curves: one run of b rows on one instance.
var (
	// gemm: a fixed cost and a cost per row, 12× cheaper per row at 64 rows than at 1
	gemmCurve = func(b int) time.Duration { return 1354*time.Microsecond + time.Duration(b)*100*time.Microsecond }
	// conv: no gain from batching
	convCurve = func(b int) time.Duration { return time.Duration(b) * 2 * time.Millisecond }
	// gpu: flat until 32 rows
	gpuCurve = func(b int) time.Duration { return 5 * time.Millisecond * time.Duration(max(b, 32)) / 32 }
)

func serviceTimes(curve func(int) time.Duration, maxBatch int) []time.Duration {
	out := make([]time.Duration, maxBatch)
	for b := range out {
		out[b] = curve(b + 1)
	}
	return out
}

// load is what a closed-loop run measured.
type load struct {
	rows     int
	batches  []int // size of every batch run
	seconds  float64
	p50, p99 time.Duration
	busy     []time.Duration // per instance: time spent running
}

func (l load) rowsPerSecond() float64 { return float64(l.rows) / l.seconds }

func (l load) meanBatch() float64 {
	sum := 0
	for _, b := range l.batches {
		sum += b
	}
	return float64(sum) / float64(max(len(l.batches), 1))
}

// closedLoop runs clients that each send one row, wait for the answer, spend think (the
// round trip a real client adds) and send the next, for d after a warmup of d/4, against n
// instances of a model taking curve(rows) per run, batched by p.
func closedLoop(t *testing.T, n, clients int, think, d time.Duration, curve func(int) time.Duration, p scheduler.Policy) load {
	t.Helper()
	rt := enginetest.New()
	var mu sync.Mutex
	var l load
	measuring := false
	busy := map[int]time.Duration{}
	rt.Register("m", sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
		b := int(in[0].Shape[0])
		time.Sleep(curve(b))
		mu.Lock()
		if measuring {
			l.batches = append(l.batches, b)
		}
		mu.Unlock()
		return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, in[0].Float32s())}, nil
	})
	tg := &target{policy: p}
	for i := range n {
		s, err := rt.Open(context.Background(), "m", engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg.sessions = append(tg.sessions, timedSession{Session: s, id: i, busy: busy, mu: &mu, measuring: &measuring})
	}
	s := scheduler.New(quiet)
	defer s.Close(context.Background())
	ctx, cancel := context.WithCancel(t.Context())
	var latencies []time.Duration
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				if _, err := s.Infer(ctx, tg, rows(float32(c))); err != nil {
					if ctx.Err() == nil {
						t.Errorf("client %d: %v", c, err)
					}
					return
				}
				mu.Lock()
				if measuring {
					l.rows++
					latencies = append(latencies, time.Since(t0))
				}
				mu.Unlock()
				time.Sleep(think)
			}
		})
	}
	time.Sleep(d / 4)
	mu.Lock()
	measuring = true
	mu.Unlock()
	start := time.Now()
	time.Sleep(d)
	mu.Lock()
	measuring = false
	l.seconds = time.Since(start).Seconds()
	mu.Unlock()
	cancel()
	wg.Wait()
	slices.Sort(latencies)
	if len(latencies) > 0 {
		l.p50, l.p99 = latencies[len(latencies)/2], latencies[len(latencies)*99/100]
	}
	for i := range n {
		l.busy = append(l.busy, busy[i])
	}
	return l
}

// timedSession adds up the time each instance spends running while measuring.
type timedSession struct {
	engine.Session
	id        int
	mu        *sync.Mutex
	busy      map[int]time.Duration
	measuring *bool
}

func (s timedSession) Run(ctx context.Context, in []tensor.Tensor, names []string) ([]tensor.Tensor, error) {
	t0 := time.Now()
	out, err := s.Session.Run(ctx, in, names)
	s.mu.Lock()
	if *s.measuring {
		s.busy[s.id] += time.Since(t0)
	}
	s.mu.Unlock()
	return out, err
}

func tuned(curve func(int) time.Duration) scheduler.Policy {
	return scheduler.Policy{MaxBatchSize: 64, ServiceTimes: serviceTimes(curve, 64)}
}

func (l load) String() string {
	return fmt.Sprintf("%.0f rows/s, mean batch %.1f over %d batches, p50 %s p99 %s, busy %v", l.rowsPerSecond(), l.meanBatch(), len(l.batches), l.p50, l.p99, l.busy)
}

// 64 clients on two instances of a GEMM-like model: cohorts of about 32, one per instance,
// both instances busy nearly all the time; the adaptive batcher of before puts all 64 in one
// batch on one instance and leaves the other idle.
func TestTunedBatcherKeepsCohortsApart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const think = 500 * time.Microsecond
		got := closedLoop(t, 2, 64, think, 2*time.Second, gemmCurve, tuned(gemmCurve))
		old := closedLoop(t, 2, 64, think, 2*time.Second, gemmCurve, scheduler.Policy{MaxBatchSize: 64, MaxQueueDelay: 10 * time.Millisecond, AdaptiveDelay: true})
		t.Logf("tuned: %s", got)
		t.Logf("adaptive, 10 ms: %s", old)
		// the most two instances can do at 32 rows each, with the clients' round trip
		ideal := 64 / (gemmCurve(32) + think).Seconds()
		if got.rowsPerSecond() < 0.9*ideal {
			t.Errorf("tuned: %.0f rows/s, under 0.9 of %.0f", got.rowsPerSecond(), ideal)
		}
		// not one batch of 64, nor many small ones
		if mb := got.meanBatch(); mb < 16 || mb > 33 {
			t.Errorf("tuned: mean batch %.1f, want 16 to 32 (64 clients over 2 instances)", mb)
		}
		for i, b := range got.busy {
			if frac := b.Seconds() / got.seconds; frac < 0.85 {
				t.Errorf("instance %d busy %.0f%% of the time", i, 100*frac)
			}
		}
		if got.rowsPerSecond() <= old.rowsPerSecond() {
			t.Errorf("tuned %.0f rows/s is no better than the adaptive batcher's %.0f", got.rowsPerSecond(), old.rowsPerSecond())
		}
	})
}

// A model that gains nothing from batching runs small batches on every instance.
func TestTunedBatcherDoesNotWaitWithoutGain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := closedLoop(t, 2, 64, 500*time.Microsecond, 2*time.Second, convCurve, tuned(convCurve))
		t.Logf("conv: %s", got)
		ideal := 2 / convCurve(1).Seconds()
		if got.rowsPerSecond() < 0.95*ideal {
			t.Errorf("%.0f rows/s, under 0.95 of %.0f", got.rowsPerSecond(), ideal)
		}
		for i, b := range got.busy {
			if frac := b.Seconds() / got.seconds; frac < 0.95 {
				t.Errorf("instance %d busy %.0f%% of the time", i, 100*frac)
			}
		}
	})
}

// A lone client is never held back: its request runs alone, at once.
func TestTunedBatcherServesALoneClientAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for name, curve := range map[string]func(int) time.Duration{"gemm": gemmCurve, "gpu": gpuCurve} {
			got := closedLoop(t, 2, 1, 500*time.Microsecond, time.Second, curve, tuned(curve))
			if got.p99 != curve(1) || got.meanBatch() != 1 {
				t.Errorf("%s, one client: p99 %s (a run takes %s), mean batch %.1f", name, got.p99, curve(1), got.meanBatch())
			}
		}
	})
}

// A flat curve (a GPU's) pays for waiting: batches fill towards the rows in flight.
func TestTunedBatcherFillsAFlatCurve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		got := closedLoop(t, 1, 32, 500*time.Microsecond, 2*time.Second, gpuCurve, tuned(gpuCurve))
		t.Logf("gpu-like: %s", got)
		if mb := got.meanBatch(); mb < 28 {
			t.Errorf("mean batch %.1f, want near 32", mb)
		}
	})
}

// With a latency budget, no batch is larger than the budget allows (its run and the one ahead
// of it within the budget), and a load the budget can carry keeps it at the 99th percentile.
func TestTunedBatcherKeepsTheLatencyBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := tuned(gemmCurve)
		p.LatencyBudget = 5 * time.Millisecond
		// 2 × S(b) ≤ 5 ms: S(b) = 1.354 ms + 0.1 ms × b, so b ≤ 11; 16 clients on two
		// instances fit
		got := closedLoop(t, 2, 16, 500*time.Microsecond, 2*time.Second, gemmCurve, p)
		t.Logf("gemm, 5 ms budget, 16 clients: %s", got)
		if got.p99 > p.LatencyBudget {
			t.Errorf("p99 %s over the budget", got.p99)
		}
		// 64 clients are more than the budget can carry (Little's law: 64 ÷ 8,965 rows/s is
		// 7 ms): the batches still keep to 11 rows
		got = closedLoop(t, 2, 64, 500*time.Microsecond, 2*time.Second, gemmCurve, p)
		t.Logf("gemm, 5 ms budget, 64 clients: %s", got)
		if big := slices.Max(got.batches); big > 11 {
			t.Errorf("a batch of %d rows: over the 11 whose run fits half the budget", big)
		}
	})
}

// Two models of two threads each on a budget of two cores: their runs never overlap, and both
// are served.
func TestCoreBudgetAcrossModels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := enginetest.New()
		var mu sync.Mutex
		running, most := 0, 0
		rt.Register("m", sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
			mu.Lock()
			running += 2
			most = max(most, running)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running -= 2
			mu.Unlock()
			return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, in[0].Float32s())}, nil
		})
		s := scheduler.New(quiet)
		defer s.Close(context.Background())
		s.SetCores(2)
		var targets []*target
		for range 2 {
			tg := &target{policy: scheduler.Policy{Threads: 2}}
			for range 2 {
				sess, err := rt.Open(context.Background(), "m", engine.Options{})
				if err != nil {
					t.Fatal(err)
				}
				tg.sessions = append(tg.sessions, sess)
			}
			targets = append(targets, tg)
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				if _, err := s.Infer(t.Context(), targets[i%2], rows(float32(i))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if most > 2 {
			t.Errorf("%d threads ran at once on a budget of 2 cores", most)
		}
		if rt.Runs() != 16 {
			t.Errorf("%d runs, want 16", rt.Runs())
		}
	})
}
