package scheduler

import (
	"time"
)

// The tuned batcher: the dispatch rule of a queue whose policy carries calibrated service
// times (Policy.ServiceTimes).
//
// With c rows in flight and n instances, batches of about c/n keep every instance busy, each
// cohort of clients gathering its next batch while the others run; one full batch leaves the
// other instances idle, and many small ones pay the per-run cost over and over. So a forming
// batch is dispatched
//   - at the target, ceil(c/n) rows (within the latency budget), c being the most rows seen in
//     flight over the last few dispatches;
//   - when no more rows can come (the rows in flight are all waiting or running already);
//   - when waiting longer no longer pays: a batch of r rows now gives r/S(r) rows per second,
//     the target after waiting w gives b/(w + S(b)); the wait pays while w < b·S(r)/r − S(b),
//     measured from the oldest request's arrival;
//   - at max_queue_delay when model.toml sets it, and never later than one run of a full batch.

// peakWindow is how many dispatches the in-flight estimate looks back over, per instance: a
// cohort's peak is seen once per cycle of every instance.
const peakWindow = 2

// notePeakLocked records the rows in flight seen up to a dispatch.
func (q *queue) notePeakLocked() {
	n := peakWindow*q.activeLocked() + 1
	if len(q.peaks) < n {
		q.peaks = append(q.peaks, q.peak)
		return
	}
	q.peaks[q.peakAt] = q.peak
	q.peakAt = (q.peakAt + 1) % n
}

// inFlightLocked estimates the rows the load keeps in flight.
func (q *queue) inFlightLocked() int64 {
	c := q.peak
	for _, p := range q.peaks {
		c = max(c, p)
	}
	return c
}

// service is the calibrated time of one run of rows rows.
func (q *queue) service(rows int64) time.Duration {
	st := q.policy.ServiceTimes
	switch {
	case rows < 1:
		return st[0]
	case rows > int64(len(st)):
		return st[len(st)-1] * time.Duration(rows) / time.Duration(len(st))
	}
	return st[rows-1]
}

// batchTargetLocked is the batch size aimed for now, up to limit (q.limit).
func (q *queue) batchTargetLocked(limit int64) int64 {
	n := int64(q.activeLocked())
	return min(max((q.inFlightLocked()+n-1)/n, 1), limit)
}

// batchLimit is the most rows one batch may hold: max_batch_size, and with calibrated service
// times and a latency budget the largest batch whose run and the run ahead of it fit the budget
// (at least 1). The policy does not change in a queue's life: startQueue computes it once.
func (q *queue) batchLimit() int64 {
	b := int64(q.policy.MaxBatchSize)
	if q.policy.ServiceTimes == nil || q.policy.LatencyBudget <= 0 {
		return b
	}
	for b > 1 && 2*q.service(b) > q.policy.LatencyBudget {
		b--
	}
	return b
}

// tunedReadyLocked applies the tuned rule to a forming batch of rows rows whose oldest request
// arrived at head, not full and not at a preferred size: ready, or when to look again.
func (q *queue) tunedReadyLocked(now, head time.Time, rows, limit int64) (ready bool, wake time.Time) {
	target := q.batchTargetLocked(limit)
	if rows >= target || rows >= q.inFlightLocked()-q.running {
		return true, time.Time{}
	}
	// Waiting pays while w < target·S(rows)/rows − S(target).
	pays := time.Duration(float64(target)*float64(q.service(rows))/float64(rows)) - q.service(target)
	bound := q.service(limit)
	if d := q.policy.MaxQueueDelay; d > 0 {
		bound = d
	}
	if budget := q.policy.LatencyBudget; budget > 0 {
		bound = min(bound, max(budget-2*q.service(target), 0))
	}
	deadline := head.Add(max(min(pays, bound), 0))
	if !now.Before(deadline) {
		return true, time.Time{}
	}
	return false, deadline
}
