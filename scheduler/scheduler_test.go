package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var sig = engine.Signature{
	Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, -1}}},
	Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1, -1}}},
}

// model is a fake model that negates its input and records the batches it ran.
type model struct {
	mu      sync.Mutex
	batches [][]float32 // the input of each run
}

func (m *model) run(in []tensor.Tensor) ([]tensor.Tensor, error) {
	v := in[0].Float32s()
	m.mu.Lock()
	m.batches = append(m.batches, slices.Clone(v))
	m.mu.Unlock()
	for i := range v {
		v[i] = -v[i]
	}
	return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, v)}, nil
}

func (m *model) ran() [][]float32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.batches)
}

type target struct {
	sessions []engine.Session
	policy   scheduler.Policy
	retired  bool
}

func (t *target) Instances() []engine.Session { return t.sessions }
func (t *target) Policy() scheduler.Policy    { return t.policy }
func (t *target) Retired() bool               { return t.retired }

// setup opens n instances of a negating fake model with the given policy. Call it inside the
// synctest bubble.
func setup(t *testing.T, n int, p scheduler.Policy) (*enginetest.Runtime, *model, *target, *scheduler.Scheduler) {
	t.Helper()
	rt := enginetest.New()
	m := &model{}
	rt.Register("m", sig, m.run)
	tg := &target{policy: p}
	for range n {
		s, err := rt.Open(context.Background(), "m", engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg.sessions = append(tg.sessions, s)
	}
	s := scheduler.New(quiet)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return rt, m, tg, s
}

// rows builds a request of len(values) rows of width 1.
func rows(values ...float32) *scheduler.Request {
	return &scheduler.Request{Inputs: []tensor.Tensor{tensor.FromFloat32s("x", []int64{int64(len(values)), 1}, values)}}
}

type outcome struct {
	out  []float32
	err  error
	when time.Duration // since the test started, on the bubble's clock
}

// send starts Infer in a goroutine and returns where its outcome will arrive.
func send(s *scheduler.Scheduler, tg *target, start time.Time, req *scheduler.Request) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		out, err := s.Infer(context.Background(), tg, req)
		o := outcome{err: err, when: time.Since(start)}
		if err == nil {
			o.out = out[0].Float32s()
		}
		ch <- o
	}()
	return ch
}

func TestBatchFormsBySize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 4, MaxQueueDelay: time.Second})
		start := time.Now()
		var results []<-chan outcome
		for i := range 4 {
			results = append(results, send(s, tg, start, rows(float32(i+1))))
			synctest.Wait() // keep arrival order deterministic
		}
		for i, r := range results {
			o := <-r
			if o.err != nil || !slices.Equal(o.out, []float32{-float32(i + 1)}) {
				t.Fatalf("request %d: %v %v", i, o.out, o.err)
			}
			if o.when != 0 {
				t.Errorf("request %d finished after %s: a full batch must not wait for the delay", i, o.when)
			}
		}
		if got := m.ran(); len(got) != 1 || !slices.Equal(got[0], []float32{1, 2, 3, 4}) {
			t.Fatalf("batches %v, want one [1 2 3 4]", got)
		}
		st := s.Stats(tg)
		if st.ExecutionCount != 1 || st.InferenceCount != 4 || st.Success.Count != 4 || len(st.Batches) != 1 || st.Batches[0].BatchSize != 4 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestBatchFormsByDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 8, MaxQueueDelay: 10 * time.Millisecond})
		start := time.Now()
		a := send(s, tg, start, rows(1, 2))
		time.Sleep(4 * time.Millisecond) // advances the bubble's clock
		b := send(s, tg, start, rows(3))
		for _, r := range []<-chan outcome{a, b} {
			o := <-r
			if o.err != nil || o.when != 10*time.Millisecond {
				t.Errorf("finished at %s (%v), want 10ms: the delay counts from the oldest request", o.when, o.err)
			}
		}
		if got := m.ran(); len(got) != 1 || !slices.Equal(got[0], []float32{1, 2, 3}) {
			t.Fatalf("batches %v", got)
		}
	})
}

func TestPreferredBatchSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 8, PreferredBatchSizes: []int{3}, MaxQueueDelay: time.Second})
		start := time.Now()
		a := send(s, tg, start, rows(1, 2))
		synctest.Wait()
		b := send(s, tg, start, rows(3))
		for _, r := range []<-chan outcome{a, b} {
			if o := <-r; o.err != nil || o.when != 0 {
				t.Errorf("finished at %s (%v), want at once on reaching a preferred size", o.when, o.err)
			}
		}
		if got := m.ran(); len(got) != 1 || len(got[0]) != 3 {
			t.Fatalf("batches %v", got)
		}
	})
}

func TestRequestsThatDoNotFitOrDifferAreNotMixed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 4, MaxQueueDelay: 5 * time.Millisecond})
		start := time.Now()
		a := send(s, tg, start, rows(1, 2, 3))
		synctest.Wait()
		b := send(s, tg, start, rows(4, 5)) // 3 + 2 rows > 4
		synctest.Wait()
		wide := &scheduler.Request{Inputs: []tensor.Tensor{tensor.FromFloat32s("x", []int64{1, 2}, []float32{7, 8})}}
		c := send(s, tg, start, wide) // other non-batch dimension
		for _, r := range []<-chan outcome{a, b, c} {
			if o := <-r; o.err != nil {
				t.Fatal(o.err)
			}
		}
		got := m.ran()
		want := [][]float32{{1, 2, 3}, {4, 5}, {7, 8}}
		if len(got) != 3 {
			t.Fatalf("batches %v, want %v", got, want)
		}
		for _, w := range want {
			if !slices.ContainsFunc(got, func(g []float32) bool { return slices.Equal(g, w) }) {
				t.Errorf("batches %v lack %v", got, w)
			}
		}
	})
}

func TestEachRequestGetsItsRows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, tg, s := setup(t, 2, scheduler.Policy{MaxBatchSize: 16, MaxQueueDelay: time.Millisecond})
		start := time.Now()
		var results []<-chan outcome
		var inputs [][]float32
		for i := range 20 {
			in := make([]float32, i%3+1)
			for j := range in {
				in[j] = float32(100*i + j)
			}
			inputs = append(inputs, in)
			results = append(results, send(s, tg, start, rows(in...)))
		}
		for i, r := range results {
			o := <-r
			if o.err != nil || len(o.out) != len(inputs[i]) {
				t.Fatalf("request %d: %v %v", i, o.out, o.err)
			}
			for j := range o.out {
				if o.out[j] != -inputs[i][j] {
					t.Fatalf("request %d got %v for input %v", i, o.out, inputs[i])
				}
			}
		}
	})
}

func TestPriorityOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, m, tg, s := setup(t, 1, scheduler.Policy{PriorityLevels: 3, DefaultPriority: 2})
		gate := rt.Hold()
		start := time.Now()
		first := send(s, tg, start, rows(0))
		<-gate.Entered() // the only instance is busy
		low, mid, high := rows(3), rows(2), rows(1)
		low.Priority, high.Priority = 3, 1 // mid takes the default, 2
		var results []<-chan outcome
		for _, r := range []*scheduler.Request{low, mid, high} {
			results = append(results, send(s, tg, start, r))
			synctest.Wait()
		}
		gate.Release()
		for _, r := range append(results, first) {
			if o := <-r; o.err != nil {
				t.Fatal(o.err)
			}
		}
		got := m.ran()
		want := [][]float32{{0}, {1}, {2}, {3}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("run order %v, want %v (highest priority first)", got, want)
		}
		bad := rows(1)
		bad.Priority = 4
		if _, err := s.Infer(context.Background(), tg, bad); !errors.Is(err, scheduler.ErrInvalidRequest) {
			t.Errorf("priority 4 of 3: %v", err)
		}
	})
}

func TestTimeoutCancellationAndQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, m, tg, s := setup(t, 1, scheduler.Policy{MaxQueueSize: 2, DefaultTimeout: time.Hour})
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

		// Two are waiting: the queue is full.
		if _, err := s.Infer(context.Background(), tg, rows(3)); !errors.Is(err, scheduler.ErrQueueFull) {
			t.Fatalf("third waiting request: %v", err)
		}
		cancel()
		if err := <-left; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled request: %v", err)
		}
		o := <-expired
		if !errors.Is(o.err, scheduler.ErrTimeout) || o.when != 5*time.Millisecond {
			t.Fatalf("timed request: %v at %s, want ErrTimeout at 5ms", o.err, o.when)
		}
		gate.Release()
		if o := <-busy; o.err != nil {
			t.Fatal(o.err)
		}
		if got := m.ran(); len(got) != 1 {
			t.Fatalf("ran %v: the timed-out, cancelled and refused requests must not run", got)
		}
		if st := s.Stats(tg); st.Fail.Count != 3 || st.Success.Count != 1 {
			t.Errorf("stats success %d fail %d, want 1 and 3", st.Success.Count, st.Fail.Count)
		}
	})
}

func TestCloseDrainsQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 2, MaxQueueDelay: time.Hour})
		gate := rt.Hold()
		start := time.Now()
		var results []<-chan outcome
		for i := range 5 {
			results = append(results, send(s, tg, start, rows(float32(i))))
			synctest.Wait()
		}
		<-gate.Entered()
		closed := make(chan error, 1)
		go func() { closed <- s.Close(context.Background()) }()
		synctest.Wait()
		if _, err := s.Infer(context.Background(), tg, rows(9)); !errors.Is(err, scheduler.ErrStopped) {
			t.Fatalf("request during drain: %v", err)
		}
		gate.Release()
		for i, r := range results {
			if o := <-r; o.err != nil || o.out[0] != -float32(i) {
				t.Fatalf("queued request %d during drain: %v %v", i, o.out, o.err)
			}
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
		// The drain does not wait an hour for the last, partial batch.
		if n := len(m.ran()); n != 3 {
			t.Errorf("%d runs, want 3 (2+2+1)", n)
		}
	})
}

func TestCloseTimesOutThenCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, _, tg, s := setup(t, 1, scheduler.Policy{})
		gate := rt.Hold()
		defer gate.Release()
		r := send(s, tg, time.Now(), rows(1))
		<-gate.Entered()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close with a stuck run: %v", err)
		}
		// The stuck run is cancelled, so its caller hears back.
		if o := <-r; !errors.Is(o.err, context.Canceled) {
			t.Fatalf("stuck run after a timed-out drain: %v", o.err)
		}
	})
}

func TestAdaptiveDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, m, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 8, MaxQueueDelay: 100 * time.Millisecond, AdaptiveDelay: true})
		start := time.Now()
		// A lone client never waits for the delay.
		for i := range 3 {
			if o := <-send(s, tg, start, rows(float32(i))); o.err != nil || o.when != 0 {
				t.Fatalf("lone request %d finished at %s (%v), want at once", i, o.when, o.err)
			}
		}
		// Four in the system (one running, three waiting): the next batch waits for a fourth.
		gate := rt.Hold()
		r1 := send(s, tg, start, rows(10))
		<-gate.Entered()
		var waiting []<-chan outcome
		for i := range 3 {
			waiting = append(waiting, send(s, tg, start, rows(float32(20+i))))
			synctest.Wait()
		}
		gate.Release()
		if o := <-r1; o.err != nil {
			t.Fatal(o.err)
		}
		synctest.Wait()
		if n := len(m.ran()); n != 4 {
			t.Fatalf("%d runs: the three waiting requests must wait for the fourth the load predicts", n)
		}
		time.Sleep(10 * time.Millisecond)
		waiting = append(waiting, send(s, tg, start, rows(23)))
		for _, r := range waiting {
			if o := <-r; o.err != nil || o.when != 10*time.Millisecond {
				t.Fatalf("finished at %s (%v), want at 10ms when the fourth arrived", o.when, o.err)
			}
		}
		got := m.ran()
		if last := got[len(got)-1]; !slices.Equal(last, []float32{20, 21, 22, 23}) {
			t.Fatalf("last batch %v, want [20 21 22 23]", last)
		}
		// The load has dropped, but the prediction still expects four rows: the next lone
		// request waits the full delay, once; the one after runs at once.
		now := time.Since(start)
		if o := <-send(s, tg, start, rows(30)); o.err != nil || o.when != now+100*time.Millisecond {
			t.Fatalf("first lone request after the crowd finished at %s (%v), want %s", o.when, o.err, now+100*time.Millisecond)
		}
		if o := <-send(s, tg, start, rows(31)); o.err != nil || o.when != now+100*time.Millisecond {
			t.Fatalf("second lone request finished at %s (%v), want at once (%s)", o.when, o.err, now+100*time.Millisecond)
		}
	})
}

// TestDirectRunHoldsItsInstance: a lone request that finds an idle instance and nothing to
// wait for runs on the caller's own goroutine. While it runs, its instance is not the worker's:
// a second request waits for it (the session never runs twice at once), and a drain waits for
// the caller's run to finish before it returns.
func TestDirectRunHoldsItsInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := enginetest.New()
		release := make(chan struct{})
		var mu sync.Mutex
		var running, most int
		var stacks []string
		rt.Register("m", sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
			buf := make([]byte, 16<<10)
			mu.Lock()
			running++
			most = max(most, running)
			stacks = append(stacks, string(buf[:runtime.Stack(buf, false)]))
			mu.Unlock()
			<-release
			mu.Lock()
			running--
			mu.Unlock()
			v := in[0].Float32s()
			for i := range v {
				v[i] = -v[i]
			}
			return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, v)}, nil
		})
		sess, err := rt.Open(context.Background(), "m", engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg := &target{sessions: []engine.Session{sess},
			policy: scheduler.Policy{MaxBatchSize: 4, MaxQueueDelay: time.Millisecond, AdaptiveDelay: true}}
		s := scheduler.New(quiet)
		start := time.Now()

		first := send(s, tg, start, rows(1))
		synctest.Wait()
		second := send(s, tg, start, rows(2))
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- s.Close(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-closed:
			t.Fatalf("the drain returned (%v) while a caller's run was in flight", err)
		default:
		}
		mu.Lock()
		if len(stacks) != 1 {
			t.Fatalf("%d runs started while the only instance was busy", len(stacks))
		}
		mu.Unlock()

		close(release)
		for i, r := range []<-chan outcome{first, second} {
			if o := <-r; o.err != nil || !slices.Equal(o.out, []float32{-float32(i + 1)}) {
				t.Errorf("request %d: %v %v", i+1, o.out, o.err)
			}
		}
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
		if most != 1 || len(stacks) != 2 {
			t.Fatalf("%d runs, at most %d at once; want 2, one at a time", len(stacks), most)
		}
		if !strings.Contains(stacks[0], "scheduler_test.send") {
			t.Errorf("the lone request did not run on its caller's goroutine:\n%s", stacks[0])
		}
		if !strings.Contains(stacks[1], "(*queue).work") {
			t.Errorf("the queued request did not run on the instance's worker:\n%s", stacks[1])
		}
	})
}

// sendCtx is send with the caller's context.
func sendCtx(ctx context.Context, s *scheduler.Scheduler, tg *target, req *scheduler.Request) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		out, err := s.Infer(ctx, tg, req)
		o := outcome{err: err}
		if err == nil {
			o.out = out[0].Float32s()
		}
		ch <- o
	}()
	return ch
}

// TestRunStopsWhenItsLastCallerLeaves: a run goes on while one caller of its batch waits, and
// stops once the last has left, freeing the instance.
func TestRunStopsWhenItsLastCallerLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, _, tg, s := setup(t, 1, scheduler.Policy{MaxBatchSize: 2, MaxQueueDelay: time.Hour})
		gate := rt.Hold()
		first, cancelFirst := context.WithCancel(context.Background())
		second, cancelSecond := context.WithCancel(context.Background())
		defer cancelFirst()
		defer cancelSecond()
		a := sendCtx(first, s, tg, rows(1))
		synctest.Wait()
		b := sendCtx(second, s, tg, rows(2))
		<-gate.Entered()
		cancelFirst()
		synctest.Wait()
		select {
		case o := <-a:
			t.Fatalf("a caller left a batch that runs on, and heard %v %v before the batch ended", o.out, o.err)
		default:
		}
		cancelSecond()
		for name, r := range map[string]<-chan outcome{"first": a, "second": b} {
			if o := <-r; !errors.Is(o.err, context.Canceled) {
				t.Errorf("%s caller: %v %v, want context.Canceled", name, o.out, o.err)
			}
		}
		if o := s.Stats(tg).Outcomes; o[scheduler.OutcomeCanceled] != 2 {
			t.Errorf("outcomes %v, want two canceled", o)
		}
		gate.Release()
		if o := <-send(s, tg, time.Now(), rows(3, 4)); o.err != nil || !slices.Equal(o.out, []float32{-3, -4}) {
			t.Errorf("request after the stopped run: %v %v", o.out, o.err)
		}
	})
}

func TestMaxRunTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, _, tg, s := setup(t, 1, scheduler.Policy{MaxRunTime: 2 * time.Second})
		gate := rt.Hold()
		start := time.Now()
		o := <-send(s, tg, start, rows(1))
		if !errors.Is(o.err, scheduler.ErrRunTimeout) || o.err.Error() != "run exceeded max_run_time 2s" {
			t.Errorf("stuck run: %v, want ErrRunTimeout saying the bound", o.err)
		}
		if o.when != 2*time.Second {
			t.Errorf("stuck run stopped after %s, want 2s", o.when)
		}
		gate.Release()
		if o := <-send(s, tg, start, rows(3)); o.err != nil || !slices.Equal(o.out, []float32{-3}) {
			t.Errorf("request after the stopped run: %v %v", o.out, o.err)
		}
		if o := s.Stats(tg).Outcomes; o[scheduler.OutcomeServerError] != 1 || o[scheduler.OutcomeSuccess] != 1 {
			t.Errorf("outcomes %v, want one server_error and one success", o)
		}
	})
}
