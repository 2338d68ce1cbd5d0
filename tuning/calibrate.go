package tuning

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Opener opens one session of the version being calibrated, with threads intra-op threads,
// where the version will serve (its engine host).
type Opener func(ctx context.Context, threads int) (engine.Session, error)

// Plan is what to calibrate.
type Plan struct {
	Candidates []Candidate
	// Batches are the batch sizes to measure, ascending.
	Batches []int
	// Inputs returns inputs of the model's own shapes at batch rows.
	Inputs func(batch int) ([]tensor.Tensor, error)
	// Budget bounds the whole calibration; it is shared among the candidates not yet
	// measured, and a candidate whose share ends keeps the batch sizes measured so far.
	Budget time.Duration
	// Rounds is how many timed runs each instance makes per batch size at least, after one
	// untimed run (the first run at a new size allocates); 3 when zero.
	Rounds int
	// PointTime is how long each batch size is measured at least (more rounds for a fast
	// model, whose single runs are too short to time alone); 10 ms when zero.
	PointTime time.Duration
	// Interference is the share of each core (0 to 1) that other work takes while the
	// candidates run: serving shares the cores with the request path (HTTP, decoding, the
	// load generator on the same machine), and a candidate whose threads stall whenever one of
	// them is preempted (intra-op pools on fine-grained graphs) runs much slower then than
	// alone. Calibration keeps that share busy, in short bursts on every core, so that such a
	// candidate measures what it will serve at. 0: the candidates run alone.
	Interference float64
	// Cores is how many cores Interference loads (the usable cores).
	Cores int
}

// Pool holds the sessions a calibration opened, by thread count, for the caller to keep
// (Take) or close (Close).
type Pool struct {
	mu       sync.Mutex
	sessions map[int][]engine.Session
}

// Take removes and returns up to n sessions of threads intra-op threads.
func (p *Pool) Take(threads, n int) []engine.Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	have := p.sessions[threads]
	n = min(n, len(have))
	if n == 0 {
		return nil
	}
	out := slices.Clone(have[:n])
	p.sessions[threads] = have[n:]
	return out
}

// Close closes every session left in the pool.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ss := range p.sessions {
		for _, s := range ss {
			_ = s.Close()
		}
	}
	p.sessions = map[int][]engine.Session{}
}

// ensure opens sessions until the pool holds n of threads threads, and returns them (still in
// the pool).
func (p *Pool) ensure(ctx context.Context, open Opener, threads, n int) ([]engine.Session, error) {
	p.mu.Lock()
	if p.sessions == nil {
		p.sessions = map[int][]engine.Session{}
	}
	have := len(p.sessions[threads])
	p.mu.Unlock()
	for ; have < n; have++ {
		s, err := open(ctx, threads)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.sessions[threads] = append(p.sessions[threads], s)
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sessions[threads][:n]), nil
}

// Calibrate measures every candidate of plan in turn, within plan.Budget, and returns the
// profile (its Key left for the caller) and the sessions it opened. A candidate whose sessions
// fail to open or whose run fails is recorded with the reason (Curve.Err) and the calibration
// goes on with the next; an error is returned only when ctx ends (the load was cancelled or
// timed out), and then the pool is closed.
func Calibrate(ctx context.Context, open Opener, plan Plan, log *slog.Logger) (Profile, *Pool, error) {
	start := time.Now()
	deadline := start.Add(plan.Budget)
	rounds := cmp0(plan.Rounds, 3)
	if plan.PointTime <= 0 {
		plan.PointTime = 10 * time.Millisecond
	}
	pool := &Pool{}
	prof := Profile{Complete: true}
	if plan.Interference > 0 {
		stop := interfere(plan.Cores, plan.Interference)
		defer stop()
	}
	for i, c := range plan.Candidates {
		share := time.Until(deadline) / time.Duration(len(plan.Candidates)-i)
		curve, complete, err := measure(ctx, open, pool, c, plan, rounds, time.Now().Add(share))
		if err != nil {
			pool.Close()
			return Profile{}, nil, err
		}
		prof.Complete = prof.Complete && complete
		prof.Curves = append(prof.Curves, curve)
		if curve.Err != "" {
			log.Warn("calibration: configuration unusable", "instances", c.Instances, "intra_op_threads", c.Threads, "reason", curve.Err)
		} else {
			log.Debug("calibrated", "instances", c.Instances, "intra_op_threads", c.Threads, "points", len(curve.Points), "complete", complete)
		}
	}
	prof.Took = time.Since(start)
	return prof, pool, nil
}

// measure runs candidate c at each batch size of plan until its share of the budget ends
// (after at least the smallest size). complete reports that every size was measured.
func measure(ctx context.Context, open Opener, pool *Pool, c Candidate, plan Plan, rounds int, until time.Time) (curve Curve, complete bool, err error) {
	curve.Candidate = c
	sessions, err := pool.ensure(ctx, open, c.Threads, c.Instances)
	if err != nil {
		if ctx.Err() != nil {
			return curve, false, ctx.Err()
		}
		curve.Err = fmt.Sprintf("opening %d sessions of %d threads: %v", c.Instances, c.Threads, err)
		return curve, true, nil
	}
	for i, b := range plan.Batches {
		if i > 0 && time.Now().After(until) {
			return curve, false, nil
		}
		inputs, err := plan.Inputs(b)
		if err != nil {
			curve.Err = fmt.Sprintf("inputs at batch %d: %v", b, err)
			curve.Points = nil
			return curve, true, nil
		}
		service, err := runAll(ctx, sessions, inputs, rounds, plan.PointTime)
		if err != nil {
			if ctx.Err() != nil {
				return curve, false, ctx.Err()
			}
			curve.Err = fmt.Sprintf("run at batch %d: %v", b, err)
			curve.Points = nil
			return curve, true, nil
		}
		curve.Points = append(curve.Points, Point{Batch: b, Service: service})
	}
	return curve, true, nil
}

// runAll runs inputs on every session at once, one untimed run and then at least rounds timed
// runs each, for at least least, and returns the median of the timed runs.
func runAll(ctx context.Context, sessions []engine.Session, inputs []tensor.Tensor, rounds int, least time.Duration) (time.Duration, error) {
	times := make([][]time.Duration, len(sessions))
	errs := make([]error, len(sessions))
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Go(func() {
			var start time.Time
			for r := 0; r <= rounds || time.Since(start) < least; r++ {
				t0 := time.Now()
				if _, err := s.Run(ctx, inputs, nil); err != nil {
					errs[i] = err
					return
				}
				if r == 0 {
					start = time.Now()
				} else {
					times[i] = append(times[i], time.Since(t0))
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	all := slices.Concat(times...)
	slices.Sort(all)
	return all[len(all)/2], nil
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// interferenceBurst is the length of one burst of interference: about what the request path
// spends on one small request.
const interferenceBurst = 100 * time.Microsecond

// interfere keeps share of each of cores busy, in bursts of interferenceBurst, until stop is
// called.
func interfere(cores int, share float64) (stop func()) {
	share = min(share, 0.9)
	idle := time.Duration(float64(interferenceBurst) * (1 - share) / share)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range max(cores, 1) {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				for end := time.Now().Add(interferenceBurst); time.Now().Before(end); {
				}
				time.Sleep(idle)
			}
		})
	}
	return func() { close(done); wg.Wait() }
}
