package window_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/window"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// bucketOf is the index of the latency bucket whose upper bound is ub.
func bucketOf(t *testing.T, ub time.Duration) int {
	t.Helper()
	for i, b := range scheduler.LatencyBuckets() {
		if b == ub {
			return i
		}
	}
	t.Fatalf("no bucket bound %v", ub)
	return -1
}

// totals is one series' cumulative counters: ok successes in the bucket of upper bound ub,
// errs server errors, slow successes above every bound.
type totals struct {
	ok, errs, slow uint64
	ub             time.Duration
	rows, execs    uint64
	pending        int
}

func snap(t *testing.T, model, version string, c totals) scheduler.SeriesSnapshot {
	t.Helper()
	s := scheduler.SeriesSnapshot{Model: model, Version: version}
	s.Outcomes[scheduler.OutcomeSuccess] = c.ok + c.slow
	s.Outcomes[scheduler.OutcomeServerError] = c.errs
	if c.ok > 0 {
		s.RequestDuration.Counts[bucketOf(t, c.ub)] = c.ok
	}
	s.RequestDuration.Counts[len(s.RequestDuration.Counts)-1] = c.slow
	s.InferenceCount, s.ExecutionCount, s.Pending = c.rows, c.execs, c.pending
	return s
}

func TestRatesOverTheWindow(t *testing.T) {
	w := window.New(window.Options{Span: time.Minute})
	if _, ok := w.Rates("m", "1"); ok {
		t.Fatal("rates of a series never observed")
	}
	obs := func(sec int, c totals) {
		w.Observe(t0.Add(time.Duration(sec)*time.Second), []scheduler.SeriesSnapshot{snap(t, "m", "1", c)})
	}
	obs(0, totals{ub: time.Millisecond})
	r, ok := w.Rates("m", "1")
	if !ok || r.Span != 0 || r.RequestsPerSecond != 0 || r.OK {
		t.Fatalf("one sample: %+v %v", r, ok)
	}
	obs(30, totals{ok: 300, ub: 2500 * time.Microsecond, rows: 600, execs: 150, pending: 3})
	r, _ = w.Rates("m", "1")
	if r.Span != 30*time.Second || r.RequestsPerSecond != 10 || r.Requests != 300 || r.BatchSize != 4 || r.QueueDepth != 3 {
		t.Errorf("after 30s: %+v", r)
	}
	// All 300 in (1ms, 2.5ms]: the median is the bucket's middle, p99 near its top.
	if !r.OK || r.P50 != 1750*time.Microsecond || r.P99 != 2485*time.Microsecond {
		t.Errorf("percentiles of one bucket: p50 %v p99 %v", r.P50, r.P99)
	}
	obs(60, totals{ok: 600, errs: 60, ub: 2500 * time.Microsecond, rows: 1200, execs: 300})
	obs(90, totals{ok: 600, errs: 120, slow: 600, ub: 2500 * time.Microsecond, rows: 1200, execs: 300})
	// The window is 30s..90s: 1320 requests at 90s less 300 at 30s, 120 of them errors.
	r, _ = w.Rates("m", "1")
	if r.Span != time.Minute || r.Requests != 1020 || r.RequestsPerSecond != 17 || r.Errors != 120 || r.ErrorsPerSecond != 2 {
		t.Errorf("after 90s: %+v", r)
	}
	// 300 fast and 600 slow successes in the window: p50 and p99 are past every bound.
	last := scheduler.LatencyBuckets()[len(scheduler.LatencyBuckets())-1]
	if r.P50 != last || r.P99 != last {
		t.Errorf("slow window: p50 %v p99 %v, want %v", r.P50, r.P99, last)
	}
	if r.BatchSize != 4 {
		t.Errorf("batch size: %v, want 600 rows / 150 executions", r.BatchSize)
	}
}

func TestHistoryAndSeriesLifetime(t *testing.T) {
	w := window.New(window.Options{Span: 10 * time.Second, History: 3})
	for i := range 6 {
		w.Observe(t0.Add(time.Duration(i)*time.Second), []scheduler.SeriesSnapshot{
			snap(t, "a", "1", totals{ok: uint64(10 * i), ub: 5 * time.Millisecond, rows: uint64(20 * i), execs: uint64(10 * i)}),
			snap(t, "b", "2", totals{}),
		})
	}
	h := w.History("a", "1")
	if len(h) != 3 {
		t.Fatalf("history of 3 holds %d points", len(h))
	}
	for i, p := range h {
		if want := t0.Add(time.Duration(i+3) * time.Second); !p.At.Equal(want) || p.RequestsPerSecond != 10 || p.BatchSize != 2 {
			t.Errorf("point %d: %+v", i, p)
		}
		if p.P50 == nil || *p.P50 != 3.75 || p.P99 == nil || *p.P99 != 4.975 {
			t.Errorf("point %d percentiles: %v %v", i, p.P50, p.P99)
		}
	}
	if h := w.History("b", "2"); len(h) != 3 || h[0].P50 != nil || h[0].RequestsPerSecond != 0 {
		t.Errorf("an idle series: %+v", h)
	}
	// Observing the same time again changes nothing.
	w.Observe(t0.Add(5*time.Second), []scheduler.SeriesSnapshot{snap(t, "a", "1", totals{ok: 999, ub: time.Millisecond})})
	if r, _ := w.Rates("a", "1"); r.Requests != 50 {
		t.Errorf("a repeated observation counted: %+v", r)
	}
	// Counts that go down are a new scheduler: the window starts again.
	w.Observe(t0.Add(6*time.Second), []scheduler.SeriesSnapshot{snap(t, "a", "1", totals{ok: 5, ub: time.Millisecond})})
	if r, _ := w.Rates("a", "1"); r.Span != 0 || r.Requests != 0 {
		t.Errorf("after a reset: %+v", r)
	}
	if got := w.Series(); len(got) != 2 || got[0] != [2]string{"a", "1"} || got[1] != [2]string{"b", "2"} {
		t.Errorf("series %v", got)
	}
	// A series gone for longer than the window and the history is forgotten.
	w.Observe(t0.Add(30*time.Second), []scheduler.SeriesSnapshot{snap(t, "a", "1", totals{ok: 5, ub: time.Millisecond})})
	if _, ok := w.Rates("b", "2"); ok {
		t.Error("series b is kept after it disappeared")
	}
	if _, ok := w.Rates("a", "1"); !ok {
		t.Error("series a was dropped")
	}
}

func TestRunSamplesEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := window.New(window.Options{})
		var mu sync.Mutex
		var n uint64
		source := func() []scheduler.SeriesSnapshot {
			mu.Lock()
			defer mu.Unlock()
			n += 10
			return []scheduler.SeriesSnapshot{snap(t, "m", "1", totals{ok: n, ub: time.Millisecond})}
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			w.Run(ctx, time.Second, source)
			close(done)
		}()
		time.Sleep(5*time.Second + time.Millisecond) // fake time inside the bubble
		synctest.Wait()
		r, ok := w.Rates("m", "1")
		if !ok || r.Span != 5*time.Second || r.RequestsPerSecond != 10 {
			t.Errorf("after 5 ticks of a second: %+v", r)
		}
		cancel()
		<-done
	})
}

// BenchmarkObserve is the cost of one second's sample of 20 model versions, and of reading
// one version's rates: what the daemon pays for the status figures.
func BenchmarkObserve(b *testing.B) {
	w := window.New(window.Options{})
	totals := make([]scheduler.SeriesSnapshot, 20)
	for i := range totals {
		totals[i] = scheduler.SeriesSnapshot{Model: "m" + string(rune('a'+i)), Version: "1"}
	}
	at := t0
	for i := 0; b.Loop(); i++ {
		at = at.Add(time.Second)
		for j := range totals {
			totals[j].Outcomes[scheduler.OutcomeSuccess] += 100
			totals[j].RequestDuration.Counts[i%10] += 100
		}
		w.Observe(at, totals)
		_, _ = w.Rates("ma", "1")
	}
}
