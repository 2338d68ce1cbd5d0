package scheduler_test

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// named is a target that belongs to a model version (a scheduler.Series).
type named struct {
	*target
	model, version string
}

func (n *named) Series() (string, string) { return n.model, n.version }

// bucket returns the index of the latency bucket whose upper bound is le.
func bucket(t *testing.T, le time.Duration) int {
	t.Helper()
	for i, b := range scheduler.LatencyBuckets() {
		if b == le {
			return i
		}
	}
	t.Fatalf("no bucket with bound %s", le)
	return -1
}

// only reports whether h holds n observations, all in the bucket bounded by le.
func only(t *testing.T, h scheduler.Histogram, le time.Duration, n uint64) bool {
	t.Helper()
	want := scheduler.Histogram{Count: n}
	want.Counts[bucket(t, le)] = n
	h.Sum = 0
	return h == want
}

func TestLatencyBuckets(t *testing.T) {
	b := scheduler.LatencyBuckets()
	if b[0] != 50*time.Microsecond || b[len(b)-1] != 10*time.Second {
		t.Errorf("buckets from %s to %s, want 50µs to 10s", b[0], b[len(b)-1])
	}
	for i := 1; i < len(b); i++ {
		if b[i] <= b[i-1] {
			t.Fatalf("buckets not ascending at %d: %v", i, b)
		}
	}
	b[0] = 0
	if scheduler.LatencyBuckets()[0] == 0 {
		t.Error("LatencyBuckets hands out its table")
	}
}

// TestHistogramsAndBatchSizes runs one batch of three requests on a model that computes for
// 2ms, on synctest's clock: every duration is exact, so every histogram bucket is known.
func TestHistogramsAndBatchSizes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 4, MaxQueueDelay: time.Millisecond})
		rt.Register("m", sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
			time.Sleep(2 * time.Millisecond) // the model's compute time on the bubble's clock
			return m.run(in)
		})
		reopen(t, rt, tg)
		start := time.Now()
		var results []<-chan outcome
		for i := range 3 {
			results = append(results, send(s, tg, start, rows(float32(i))))
			synctest.Wait()
		}
		for _, r := range results {
			if o := <-r; o.err != nil || o.when != 3*time.Millisecond {
				t.Fatalf("request: %v at %s, want success at 3ms", o.err, o.when)
			}
		}
		st := s.Stats(tg)
		if !only(t, st.QueueDuration, time.Millisecond, 3) || st.QueueDuration.Sum != 3*time.Millisecond {
			t.Errorf("queue histogram %+v, want 3 in le=1ms", st.QueueDuration)
		}
		if !only(t, st.RequestDuration, 5*time.Millisecond, 3) || st.RequestDuration.Sum != 9*time.Millisecond {
			t.Errorf("request histogram %+v, want 3 in le=5ms summing 9ms", st.RequestDuration)
		}
		if !only(t, st.ComputeDuration, 2500*time.Microsecond, 1) || st.ComputeDuration.Sum != 2*time.Millisecond {
			t.Errorf("compute histogram %+v, want 1 execution in le=2.5ms", st.ComputeDuration)
		}
		if len(st.Batches) != 1 || st.Batches[0].BatchSize != 3 || st.Batches[0].ComputeInfer.Count != 1 {
			t.Errorf("batches %+v, want one execution of 3 rows", st.Batches)
		}
		if st.Outcomes[scheduler.OutcomeSuccess] != 3 || st.InFlight != 0 || st.Pending != 0 {
			t.Errorf("outcomes %v in flight %d pending %d", st.Outcomes, st.InFlight, st.Pending)
		}
	})
}

// reopen replaces tg's sessions with new ones of the model registered now.
func reopen(t *testing.T, rt *enginetest.Runtime, tg *target) {
	t.Helper()
	for i := range tg.sessions {
		s, err := rt.Open(context.Background(), "m", engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg.sessions[i] = s
	}
}

// TestOutcomes ends one request each way and checks that each is counted once, under its
// outcome, and that in-flight and pending follow what waits and runs.
func TestOutcomes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, _, tg, s := setup(t, 1, scheduler.Policy{MaxQueueSize: 2, PriorityLevels: 2})
		gate := rt.Hold()
		start := time.Now()
		busy := send(s, tg, start, rows(0))
		<-gate.Entered()

		timed := rows(1)
		timed.Timeout = 5 * time.Millisecond
		expired := send(s, tg, start, timed)
		ctx, cancel := context.WithCancel(context.Background())
		left := make(chan error, 1)
		go func() {
			_, err := s.Infer(ctx, tg, rows(2))
			left <- err
		}()
		synctest.Wait()
		if st := s.Stats(tg); st.Pending != 2 || st.InFlight != 3 {
			t.Errorf("pending %d in flight %d, want 2 waiting and 3 in flight", st.Pending, st.InFlight)
		}
		if _, err := s.Infer(context.Background(), tg, rows(3)); !errors.Is(err, scheduler.ErrQueueFull) {
			t.Fatalf("third waiting request: %v", err)
		}
		bad := rows(4)
		bad.Priority = 3
		if _, err := s.Infer(context.Background(), tg, bad); !errors.Is(err, scheduler.ErrInvalidRequest) {
			t.Fatalf("priority 3 of 2: %v", err)
		}
		cancel()
		if err := <-left; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled request: %v", err)
		}
		if o := <-expired; !errors.Is(o.err, scheduler.ErrTimeout) {
			t.Fatalf("timed request: %v", o.err)
		}
		gate.Release()
		if o := <-busy; o.err != nil {
			t.Fatal(o.err)
		}

		st := s.Stats(tg)
		want := [scheduler.NumOutcomes]uint64{}
		for _, o := range []scheduler.Outcome{scheduler.OutcomeSuccess, scheduler.OutcomeClientError, scheduler.OutcomeQueueFull,
			scheduler.OutcomeTimeout, scheduler.OutcomeCanceled} {
			want[o] = 1
		}
		if st.Outcomes != want {
			t.Errorf("outcomes %v, want one of each but server_error %v", st.Outcomes, want)
		}
		if st.Pending != 0 || st.InFlight != 0 {
			t.Errorf("pending %d in flight %d after every request ended", st.Pending, st.InFlight)
		}
		// The statistics extension's fail count is unchanged in meaning: queued requests that
		// did not succeed, not requests refused for their parameters.
		if st.Fail.Count != 3 || st.Success.Count != 1 {
			t.Errorf("fail %d success %d, want 3 and 1", st.Fail.Count, st.Success.Count)
		}

		// A run that fails: every request of its batch is a server error.
		rt.Register("m", sig, func([]tensor.Tensor) ([]tensor.Tensor, error) { return nil, errors.New("engine broke") })
		broken := &target{policy: tg.policy, sessions: make([]engine.Session, 1)}
		reopen(t, rt, broken)
		if _, err := s.Infer(context.Background(), broken, rows(5)); err == nil {
			t.Fatal("a failing run succeeded")
		}
		if got := s.Stats(broken).Outcomes; got != [scheduler.NumOutcomes]uint64{scheduler.OutcomeServerError: 1} {
			t.Errorf("outcomes of a failed run %v, want one server_error", got)
		}
	})
}

// TestOutcomeNamesAreTheMetricLabels: the metrics collector, given the outcomes' names as the
// daemon gives them, exposes each outcome's count under its name in
// inferd_inference_requests_total, and the set of label values is the one metrics' golden
// exposition (and docs/metrics.md) shows.
func TestOutcomeNamesAreTheMetricLabels(t *testing.T) {
	names := scheduler.OutcomeNames()
	if len(names) != int(scheduler.NumOutcomes) {
		t.Fatalf("%d names for %d outcomes", len(names), scheduler.NumOutcomes)
	}
	inf := metrics.NewInference(names, func() []metrics.InferenceStats {
		st := metrics.InferenceStats{Model: "m", Version: "1", Outcomes: map[string]uint64{}}
		for o := range scheduler.NumOutcomes {
			st.Outcomes[o.String()] = uint64(o) + 1
		}
		return []metrics.InferenceStats{st}
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(inf)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exposed := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "inferd_inference_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					exposed[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	for o := range scheduler.NumOutcomes {
		if got := exposed[o.String()]; got != float64(o)+1 {
			t.Errorf("outcome %q exposed with %v, want %d", o, got, o+1)
		}
	}
	if len(exposed) != int(scheduler.NumOutcomes) {
		t.Errorf("exposed outcomes %v, want exactly %q", exposed, names)
	}

	golden, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(t), "metrics", "testdata", "exposition.golden"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^inferd_inference_requests_total\{.*outcome="([a-z_]+)"`).FindAllSubmatch(golden, -1) {
		documented[string(m[1])] = true
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	if !maps.Equal(documented, want) {
		t.Errorf("outcome names %q, but metrics' golden exposition shows %v", names, slices.Sorted(maps.Keys(documented)))
	}
}

// TestTotalsSurviveGenerations: a model version reloaded as a new target keeps counting from
// where its previous generation stopped, while and after that generation drains; targets
// without a series stay out.
func TestTotalsSurviveGenerations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, _, tg, s := setup(t, 1, scheduler.Policy{})
		old := &named{target: tg, model: "m", version: "1"}
		next := &named{target: &target{sessions: tg.sessions}, model: "m", version: "1"}
		other := &named{target: &target{sessions: tg.sessions}, model: "a", version: "2"}
		for _, tgt := range []scheduler.Target{old, old, other, tg, next} {
			if _, err := s.Infer(context.Background(), tgt, rows(1)); err != nil {
				t.Fatal(err)
			}
		}
		successes := func() map[string]uint64 {
			out := map[string]uint64{}
			for _, st := range s.Totals() {
				out[st.Model+"/"+st.Version] = st.Outcomes[scheduler.OutcomeSuccess]
			}
			return out
		}
		if got := successes(); len(got) != 2 || got["m/1"] != 3 || got["a/2"] != 1 {
			t.Fatalf("totals %v, want m/1: 3 (two generations) and a/2: 1", got)
		}
		if got := s.Totals(); got[0].Model != "a" || got[1].Model != "m" {
			t.Errorf("totals not sorted by model: %s, %s", got[0].Model, got[1].Model)
		}

		// The old generation drains a request held in the engine: it still counts meanwhile.
		gate := rt.Hold()
		held := make(chan error, 1)
		go func() { _, err := s.Infer(context.Background(), old, rows(2)); held <- err }()
		<-gate.Entered()
		forgotten := make(chan error, 1)
		go func() { forgotten <- s.Forget(context.Background(), old) }()
		synctest.Wait()
		if got := successes()["m/1"]; got != 3 {
			t.Errorf("m/1 while its old generation drains: %d successes, want 3", got)
		}
		if got := s.Totals()[1].InFlight; got != 1 {
			t.Errorf("m/1 in flight while draining: %d, want 1", got)
		}
		gate.Release()
		if err := <-held; err != nil {
			t.Fatal(err)
		}
		if err := <-forgotten; err != nil {
			t.Fatal(err)
		}
		if got := successes()["m/1"]; got != 4 {
			t.Errorf("m/1 after its old generation was forgotten: %d successes, want 4", got)
		}
		if err := s.Forget(context.Background(), next); err != nil {
			t.Fatal(err)
		}
		totals := s.Totals()
		if len(totals) != 2 || totals[1].Outcomes[scheduler.OutcomeSuccess] != 4 || totals[1].RequestDuration.Count != 4 || totals[1].InFlight != 0 {
			t.Errorf("totals once every generation is forgotten: %+v", totals)
		}
	})
}
