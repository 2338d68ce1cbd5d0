package scheduler_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// Instances that follow the load, under synctest: clients in closed loops against a fake model
// whose runs take what a service-time curve says, and a target that opens and closes sessions
// when the scheduler asks.

// scalable is a target whose instance count the scheduler may change.
type scalable struct {
	target
	rt *enginetest.Runtime

	mu     sync.Mutex
	grown  int           // calls of Grow
	shrunk int           // sessions closed by Shrink
	open   int           // sessions open now
	hold   chan struct{} // when set, Grow waits for it
	fail   error         // when set, Grow fails with it
}

func (t *scalable) Grow(ctx context.Context) (engine.Session, error) {
	t.mu.Lock()
	t.grown++
	hold, fail := t.hold, t.fail
	t.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if fail != nil {
		return nil, fail
	}
	s, err := t.rt.Open(context.WithoutCancel(ctx), "m", engine.Options{})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.open++
	t.mu.Unlock()
	return s, nil
}

func (t *scalable) Shrink(s engine.Session) {
	_ = s.Close()
	t.mu.Lock()
	t.shrunk++
	t.open--
	t.mu.Unlock()
}

func (t *scalable) counts() (grown, shrunk, open int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.grown, t.shrunk, t.open
}

// newScalable registers a model taking curve(rows) per run and opens n instances of it.
func newScalable(t *testing.T, n int, curve func(int) time.Duration, p scheduler.Policy) *scalable {
	t.Helper()
	rt := enginetest.New()
	rt.Register("m", sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) {
		time.Sleep(curve(int(in[0].Shape[0])))
		return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, in[0].Float32s())}, nil
	})
	tg := &scalable{target: target{policy: p}, rt: rt, open: n}
	for range n {
		s, err := rt.Open(context.Background(), "m", engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		tg.sessions = append(tg.sessions, s)
	}
	return tg
}

// clients runs k closed-loop clients (one row each, think between requests) against tg until
// the returned stop is called; stop returns how many requests succeeded.
func clients(t *testing.T, s *scheduler.Scheduler, tg scheduler.Target, k int, think time.Duration) (stop func() int) {
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	done := 0
	var wg sync.WaitGroup
	for c := range k {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := s.Infer(ctx, tg, rows(float32(c))); err != nil {
					if ctx.Err() == nil {
						t.Errorf("client %d: %v", c, err)
					}
					return
				}
				mu.Lock()
				done++
				mu.Unlock()
				time.Sleep(think)
			}
		})
	}
	return func() int {
		cancel()
		wg.Wait()
		return done
	}
}

// waitInstances polls, every 100 ms of the bubble's time, until tg has want instances, and
// returns how long that took; it gives up after limit.
func waitInstances(t *testing.T, s *scheduler.Scheduler, tg scheduler.Target, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for s.Stats(tg).Instances != want {
		if time.Since(start) > limit {
			t.Fatalf("still %d instances after %s, want %d", s.Stats(tg).Instances, limit, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

func scaling(curve func(int) time.Duration, period time.Duration) scheduler.Policy {
	p := tuned(curve)
	p.ScaleDownAfter = period
	return p
}

// 64 clients keep both instances of a GEMM-like model; when they drop to one, the second
// instance is closed after the quiet period, and when 64 come back it is opened again.
func TestInstancesFollowTheLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = 5 * time.Second
		tg := newScalable(t, 2, gemmCurve, scaling(gemmCurve, period))
		s := scheduler.New(quiet)
		defer s.Close(context.Background())

		stop := clients(t, s, tg, 64, 500*time.Microsecond)
		time.Sleep(3 * period)
		stop()
		if n := s.Stats(tg).Instances; n != 2 {
			t.Fatalf("64 clients: %d instances, want the 2 calibrated", n)
		}
		if _, shrunk, _ := tg.counts(); shrunk != 0 {
			t.Fatalf("64 clients: %d instances closed", shrunk)
		}

		stop = clients(t, s, tg, 1, 500*time.Microsecond)
		took := waitInstances(t, s, tg, 1, 3*period)
		t.Logf("one client: down to 1 instance after %s", took)
		if took < period || took > period+3*time.Second {
			t.Errorf("scaled down after %s, want the quiet period %s (plus at most three windows)", took, period)
		}
		time.Sleep(3 * period) // one client never asks for the second instance back
		stop()
		if grown, shrunk, open := tg.counts(); grown != 0 || shrunk != 1 || open != 1 {
			t.Errorf("one client: %d grown, %d closed, %d open; want 0, 1, 1", grown, shrunk, open)
		}

		stop = clients(t, s, tg, 64, 500*time.Microsecond)
		took = waitInstances(t, s, tg, 2, 3*period)
		t.Logf("64 clients again: back to 2 instances after %s", took)
		if took > 3*time.Second {
			t.Errorf("scaled up after %s, want within three windows", took)
		}
		stop()
		if grown, _, open := tg.counts(); grown != 1 || open != 2 {
			t.Errorf("64 clients again: %d grown, %d open; want 1, 2", grown, open)
		}
	})
}

// The throughput comes back with the instance: after the load returns, two instances serve
// what two calibrated ones did before the dip, near what two cohorts of 32 can do.
func TestScaledUpInstancesServeAsBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = 2 * time.Second
		tg := newScalable(t, 2, gemmCurve, scaling(gemmCurve, period))
		s := scheduler.New(quiet)
		defer s.Close(context.Background())
		measure := func() float64 {
			stop := clients(t, s, tg, 64, 500*time.Microsecond)
			time.Sleep(time.Second) // settle
			start := s.Stats(tg).InferenceCount
			time.Sleep(4 * time.Second)
			rate := float64(s.Stats(tg).InferenceCount-start) / 4
			stop()
			return rate
		}
		first := measure()
		time.Sleep(3 * period) // idle: down to one instance
		if n := s.Stats(tg).Instances; n != 1 {
			t.Fatalf("idle for %s: %d instances, want 1", 3*period, n)
		}
		stop := clients(t, s, tg, 64, 500*time.Microsecond)
		waitInstances(t, s, tg, 2, 3*time.Second)
		stop()
		again := measure()
		t.Logf("64 clients: %.0f rows/s calibrated, %.0f after scaling down and up", first, again)
		// the most two instances can do at 32 rows each, with the clients' round trip; the
		// calibrated count reaches 0.9 of it (TestTunedBatcherKeepsCohortsApart)
		ideal := 64 / (gemmCurve(32) + 500*time.Microsecond).Seconds()
		if again < 0.9*ideal {
			t.Errorf("%.0f rows/s after scaling up, under 0.9 of the %.0f two instances can do", again, ideal)
		}
	})
}

// A model that gains nothing from batching keeps every instance busy at 64 clients: none goes.
func TestScalingKeepsInstancesTheLoadNeeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = 2 * time.Second
		tg := newScalable(t, 2, convCurve, scaling(convCurve, period))
		s := scheduler.New(quiet)
		defer s.Close(context.Background())
		stop := clients(t, s, tg, 64, 500*time.Microsecond)
		time.Sleep(5 * period)
		stop()
		if grown, shrunk, _ := tg.counts(); grown != 0 || shrunk != 0 {
			t.Errorf("conv-like, 64 clients: %d grown, %d closed; want none", grown, shrunk)
		}
	})
}

// MinInstances bounds the scale-down: an idle queue keeps that many.
func TestScalingKeepsMinInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = time.Second
		p := scaling(gemmCurve, period)
		p.MinInstances = 2
		tg := newScalable(t, 3, gemmCurve, p)
		s := scheduler.New(quiet)
		defer s.Close(context.Background())
		stop := clients(t, s, tg, 1, time.Millisecond)
		time.Sleep(10 * period)
		stop()
		if n := s.Stats(tg).Instances; n != 2 {
			t.Errorf("%d instances, want min_instances 2", n)
		}
	})
}

// A Grow that fails is logged and not tried again before another quiet period; the queue goes
// on serving on the instances it has.
func TestFailedGrowBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = 4 * time.Second
		tg := newScalable(t, 2, gemmCurve, scaling(gemmCurve, period))
		s := scheduler.New(quiet)
		defer s.Close(context.Background())
		if _, err := s.Infer(t.Context(), tg, rows(1)); err != nil { // starts the queue
			t.Fatal(err)
		}
		time.Sleep(period + 3*time.Second) // idle: down to one
		waitInstances(t, s, tg, 1, time.Second)
		tg.mu.Lock()
		tg.fail = errors.New("out of memory")
		tg.mu.Unlock()
		stop := clients(t, s, tg, 64, 500*time.Microsecond)
		time.Sleep(2*period + 500*time.Millisecond)
		served := stop()
		grown, _, _ := tg.counts()
		// tries at the first window and once per quiet period after it
		if grown < 2 || grown > 3 {
			t.Errorf("%d attempts to grow over %s, want one per quiet period %s", grown, 2*period, period)
		}
		if served == 0 || s.Stats(tg).Instances != 1 {
			t.Errorf("served %d requests on %d instances", served, s.Stats(tg).Instances)
		}
	})
}

// A queue that closes while an instance is being opened closes that instance too.
func TestCloseDuringGrow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = time.Second
		tg := newScalable(t, 2, gemmCurve, scaling(gemmCurve, period))
		s := scheduler.New(quiet)
		if _, err := s.Infer(t.Context(), tg, rows(1)); err != nil { // starts the queue
			t.Fatal(err)
		}
		time.Sleep(period + 3*time.Second)
		waitInstances(t, s, tg, 1, time.Second)
		hold := make(chan struct{})
		tg.mu.Lock()
		tg.hold = hold
		tg.mu.Unlock()
		stop := clients(t, s, tg, 64, 500*time.Microsecond)
		time.Sleep(1500 * time.Millisecond) // a window has asked for an instance
		stop()
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		close(hold)
		synctest.Wait()
		// the one opened late is closed at once; the one left is the target's to close
		if grown, shrunk, open := tg.counts(); grown != 1 || shrunk != 2 || open != 1 {
			t.Errorf("%d grown, %d closed, %d open; want 1, 2, 1", grown, shrunk, open)
		}
	})
}
