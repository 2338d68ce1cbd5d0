package scheduler

import (
	"context"
	"time"

	"github.com/inferd/inferd/engine"
)

// Instances that follow the load: what a horizontal autoscaler does, inside one queue.
//
// A queue whose target implements Scaler and whose policy carries calibrated service times and
// a ScaleDownAfter starts with the instances its target opened (the count calibration chose for
// a full load) and, once per scaleWindow, works out from the service times how many instances
// the rows in flight over that window keep busy: the fewest, between MinInstances and that
// starting count, whose throughput comes within nearBest of the most any count gives at that
// load (the rule tuning.Choose applies at calibration). Below it, one instance is opened at once
// (the cohorts of clients then spread over one more); above it for ScaleDownAfter without a
// break, one is closed and its memory goes back, and the quiet period starts again for the
// next. The instance that goes is an idle one where there is one, else the last, once its run
// ends; the queue never closes its last instance, so requests that wait always have one.

// Scaler is implemented by targets whose instance count may follow the load.
type Scaler interface {
	// Grow opens one more instance like the target's others.
	Grow(ctx context.Context) (engine.Session, error)
	// Shrink closes an instance the scheduler no longer runs on, releasing what it holds.
	Shrink(engine.Session)
}

// scaleWindow is how often a scaling queue looks at its load: the rows in flight are the most
// seen during one window.
const scaleWindow = time.Second

// nearBest is how close to the most rows per second a smaller instance count must come to be
// enough (tuning.Choose's rule): a second instance that adds 2% is not worth its memory.
const nearBest = 0.97

// scaling is a queue's autoscaling state, guarded by queue.mu.
type scaling struct {
	scaler   Scaler // nil: the instance count stays
	min, max int    // bounds on the instance count
	quiet    time.Duration
	timer    *time.Timer
	ctx      context.Context // ends when the queue closes: a Grow in progress gives up
	cancel   context.CancelFunc

	retiring int       // instances told to go, whose workers have not exited yet
	growing  bool      // a Grow is in progress
	peak     int64     // most rows in flight during the current window
	lowSince time.Time // since when fewer instances would do; zero while they would not
	// blocked: no Grow before then (one failed; it is not retried every window)
	blocked time.Time
}

// startScaling turns autoscaling on for q when its target and policy allow it.
func (q *queue) startScaling(t Target) {
	sc, ok := t.(Scaler)
	p := q.policy
	if !ok || p.ServiceTimes == nil || p.ScaleDownAfter <= 0 {
		return
	}
	n := len(q.instances)
	q.scale = scaling{scaler: sc, min: min(max(p.MinInstances, 1), n), max: n, quiet: p.ScaleDownAfter}
	q.scale.ctx, q.scale.cancel = context.WithCancel(context.Background())
	q.scale.timer = time.AfterFunc(scaleWindow, q.scaleTick)
}

// activeLocked is how many instances take batches: those not told to go.
func (q *queue) activeLocked() int { return len(q.instances) - q.scale.retiring }

// scaleTick is one window's look at the load.
func (q *queue) scaleTick() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return
	}
	defer q.scale.timer.Reset(scaleWindow)
	s := &q.scale
	rows := s.peak
	s.peak = q.rows + q.running
	active := q.activeLocked()
	want := q.instancesFor(rows)
	now := time.Now()
	switch {
	case want > active && !s.growing && now.After(s.blocked):
		s.lowSince = time.Time{}
		s.growing = true
		q.log.Info("adding an instance", "instances", active+1, "rows_in_flight", rows,
			"rows_per_second_now", int(q.rowsPerSecond(active, rows)), "rows_per_second_then", int(q.rowsPerSecond(active+1, rows)))
		go q.grow()
	case want >= active:
		s.lowSince = time.Time{}
	case s.lowSince.IsZero():
		s.lowSince = now
	case now.Sub(s.lowSince) >= s.quiet:
		s.lowSince = now // the next one goes after another quiet period
		q.log.Info("removing an instance", "instances", active-1, "rows_in_flight", rows, "quiet_for", s.quiet)
		q.retireLocked()
	}
}

// noteInFlightLocked records the rows in flight for the scaling window.
func (q *queue) noteInFlightLocked() {
	q.scale.peak = max(q.scale.peak, q.rows+q.running)
}

// instancesFor is how many instances a load of rows rows in flight keeps busy enough: the
// fewest between the bounds within nearBest of the most rows per second.
func (q *queue) instancesFor(rows int64) int {
	s := &q.scale
	best := 0.0
	for m := s.min; m <= s.max; m++ {
		best = max(best, q.rowsPerSecond(m, rows))
	}
	for m := s.min; m <= s.max; m++ {
		if q.rowsPerSecond(m, rows) >= nearBest*best {
			return m
		}
	}
	return s.max
}

// rowsPerSecond is what m instances serve, by the service times, with rows rows in flight
// split into batches of ceil(rows/m) (within the batch limit): the instances that get a batch
// each run one per service time.
func (q *queue) rowsPerSecond(m int, rows int64) float64 {
	if rows <= 0 {
		return 0
	}
	b := min((rows+int64(m)-1)/int64(m), max(q.limit, 1))
	busy := min(int64(m), (rows+b-1)/b)
	return float64(busy*b) / q.service(b).Seconds()
}

// retireLocked tells one instance to go: an idle one if any (the last), else the last; its
// worker exits once it is free and closes it (retire).
func (q *queue) retireLocked() {
	var pick *instance
	for i := len(q.instances) - 1; i >= 0; i-- {
		inst := q.instances[i]
		if inst.retiring {
			continue
		}
		if pick == nil {
			pick = inst
		}
		if !inst.busy {
			pick = inst
			break
		}
	}
	if pick == nil {
		return
	}
	pick.retiring = true
	q.scale.retiring++
	q.resetPeaksLocked()
	q.changedLocked() // its worker, if waiting, wakes and goes
}

// retire removes inst, whose worker has exited, and closes its session.
func (q *queue) retire(inst *instance) {
	q.mu.Lock()
	for i, x := range q.instances {
		if x == inst {
			q.instances = append(q.instances[:i:i], q.instances[i+1:]...)
			break
		}
	}
	q.scale.retiring--
	q.mu.Unlock()
	q.scale.scaler.Shrink(inst.sess)
}

// grow opens one more instance and starts its worker; a queue closed meanwhile closes it again.
func (q *queue) grow() {
	sess, err := q.scale.scaler.Grow(q.scale.ctx)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.scale.growing = false
	if err != nil {
		if !q.closing {
			q.log.Warn("instance not added", "err", err, "retry_after", q.scale.quiet)
			q.scale.blocked = time.Now().Add(q.scale.quiet)
		}
		return
	}
	if q.closing {
		go q.scale.scaler.Shrink(sess)
		return
	}
	q.startWorkerLocked(&instance{sess: sess, ctx: newRunContext()})
	q.resetPeaksLocked()
	q.changedLocked()
}

// stopScalingLocked ends autoscaling when the queue closes.
func (q *queue) stopScalingLocked() {
	if q.scale.timer != nil {
		q.scale.timer.Stop()
		q.scale.cancel()
	}
}

// resetPeaksLocked forgets the in-flight estimate's ring (batch.go), whose length follows the
// instance count.
func (q *queue) resetPeaksLocked() {
	q.peaks, q.peakAt = q.peaks[:0], 0
}
