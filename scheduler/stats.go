package scheduler

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// latencyBounds are the upper bounds of the latency histograms' buckets, 50 µs to 10 s in
// 1-2.5-5 steps: a small model's run on a CPU takes tens of microseconds, a large batch queued
// behind others seconds. It is a table, never written.
var latencyBounds = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// LatencyBuckets returns the upper bounds of the buckets of every Histogram, ascending.
func LatencyBuckets() []time.Duration { return slices.Clone(latencyBounds[:]) }

// Histogram counts durations into the buckets of LatencyBuckets. It is a value (no pointers),
// so a Snapshot copies it without allocating.
type Histogram struct {
	// Counts[i] is the number of durations in bucket i: above LatencyBuckets()[i-1] and at
	// most LatencyBuckets()[i]. The last element counts those above every bound.
	Counts [len(latencyBounds) + 1]uint64
	Count  uint64
	Sum    time.Duration
}

func (h *Histogram) observe(d time.Duration) {
	d = max(d, 0)
	i, _ := slices.BinarySearch(latencyBounds[:], d)
	h.Counts[i]++
	h.Count++
	h.Sum += d
}

func (h *Histogram) add(o *Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Count += o.Count
	h.Sum += o.Sum
}

// Duration is a count of events and their total time, as the statistics extension reports it.
type Duration struct {
	Count uint64
	Ns    uint64
}

func (d *Duration) add(n int, t time.Duration) {
	d.Count += uint64(n)
	d.Ns += uint64(n) * uint64(max(t, 0))
}

// BatchStats are the compute times of the batches of one size.
type BatchStats struct {
	BatchSize     int
	ComputeInput  Duration
	ComputeInfer  Duration
	ComputeOutput Duration
}

// Snapshot is a model version's statistics at one moment. Per-request times (success, queue,
// compute_*) count each request once, with the compute times of the batch it ran in; batch
// stats count each execution once.
type Snapshot struct {
	LastInference  time.Time
	InferenceCount uint64 // batch rows run
	ExecutionCount uint64 // session runs
	Success        Duration
	Fail           Duration
	Queue          Duration
	ComputeInput   Duration
	ComputeInfer   Duration
	ComputeOutput  Duration
	Batches        []BatchStats // by batch size, ascending
	// Pending is the number of requests waiting in the queue now.
	Pending int

	// Outcomes counts the requests Infer admitted by how they ended; the outcomes only front
	// ends reach (not found, unavailable) stay zero.
	Outcomes [NumOutcomes]uint64
	// RequestDuration is the time from admission to outputs, of each successful request.
	RequestDuration Histogram
	// QueueDuration is the time from admission to the start of its batch, of each successful
	// request.
	QueueDuration Histogram
	// ComputeDuration is the time of each successful batch execution: gathering the inputs,
	// the session's run, splitting the outputs.
	ComputeDuration Histogram
	// InFlight is the number of requests admitted and not answered yet: waiting, or in a batch
	// that runs now.
	InFlight int
	// BatchTarget is the batch size the tuned batcher aims for now (batch.go); 0 for a policy
	// without service times.
	BatchTarget int
	// Instances is how many instances take batches now (autoscaling moves it: scale.go).
	Instances int
}

// add sums o into s: counts, durations and histograms add up, batch stats merge by size, the
// last inference is the later one.
func (s *Snapshot) add(o *Snapshot) {
	if o.LastInference.After(s.LastInference) {
		s.LastInference = o.LastInference
	}
	s.InferenceCount += o.InferenceCount
	s.ExecutionCount += o.ExecutionCount
	for _, p := range []struct{ dst, src *Duration }{
		{&s.Success, &o.Success}, {&s.Fail, &o.Fail}, {&s.Queue, &o.Queue},
		{&s.ComputeInput, &o.ComputeInput}, {&s.ComputeInfer, &o.ComputeInfer}, {&s.ComputeOutput, &o.ComputeOutput},
	} {
		p.dst.Count += p.src.Count
		p.dst.Ns += p.src.Ns
	}
	for _, b := range o.Batches {
		i, found := slices.BinarySearchFunc(s.Batches, b.BatchSize, func(x BatchStats, size int) int { return cmp.Compare(x.BatchSize, size) })
		if !found {
			s.Batches = slices.Insert(s.Batches, i, BatchStats{BatchSize: b.BatchSize})
		}
		d := &s.Batches[i]
		for _, p := range []struct{ dst, src *Duration }{
			{&d.ComputeInput, &b.ComputeInput}, {&d.ComputeInfer, &b.ComputeInfer}, {&d.ComputeOutput, &b.ComputeOutput},
		} {
			p.dst.Count += p.src.Count
			p.dst.Ns += p.src.Ns
		}
	}
	s.Pending += o.Pending
	s.Instances += o.Instances
	for i, n := range o.Outcomes {
		s.Outcomes[i] += n
	}
	s.RequestDuration.add(&o.RequestDuration)
	s.QueueDuration.add(&o.QueueDuration)
	s.ComputeDuration.add(&o.ComputeDuration)
	s.InFlight += o.InFlight
	s.BatchTarget = max(s.BatchTarget, o.BatchTarget)
}

// Stats accumulates a queue's statistics.
type Stats struct {
	mu      sync.Mutex
	s       Snapshot
	batches map[int]*BatchStats
}

func newStats() *Stats { return &Stats{batches: map[int]*BatchStats{}} }

// fail counts n requests that failed before they ran, and how they ended.
func (st *Stats) fail(n int, o Outcome) {
	st.mu.Lock()
	st.s.Fail.Count += uint64(n)
	st.s.Outcomes[o] += uint64(n)
	st.mu.Unlock()
}

// refuse counts a request refused before it was queued; the statistics extension does not
// count those as failures.
func (st *Stats) refuse(o Outcome) {
	st.mu.Lock()
	st.s.Outcomes[o]++
	st.mu.Unlock()
}

// record accounts for one executed batch: start → gathered (inputs concatenated) → ran
// (session returned) → end (outputs split). A failed batch counts its requests under failure.
func (st *Stats) record(batch []*pending, start, gathered, ran, end time.Time, err error, failure Outcome) {
	in, infer, out := gathered.Sub(start), ran.Sub(gathered), end.Sub(ran)
	var rows int64
	for _, p := range batch {
		rows += p.rows
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	n := len(batch)
	if err != nil {
		for _, p := range batch {
			st.s.Fail.add(1, end.Sub(p.arrived))
		}
		st.s.Outcomes[failure] += uint64(n)
		return
	}
	for _, p := range batch {
		st.s.Success.add(1, end.Sub(p.arrived))
		st.s.Queue.add(1, start.Sub(p.arrived))
		st.s.RequestDuration.observe(end.Sub(p.arrived))
		st.s.QueueDuration.observe(start.Sub(p.arrived))
	}
	st.s.Outcomes[OutcomeSuccess] += uint64(n)
	st.s.ComputeDuration.observe(end.Sub(start))
	st.s.ComputeInput.add(n, in)
	st.s.ComputeInfer.add(n, infer)
	st.s.ComputeOutput.add(n, out)
	st.s.InferenceCount += uint64(rows)
	st.s.ExecutionCount++
	st.s.LastInference = end
	b := st.batches[int(rows)]
	if b == nil {
		b = &BatchStats{BatchSize: int(rows)}
		st.batches[int(rows)] = b
	}
	b.ComputeInput.add(1, in)
	b.ComputeInfer.add(1, infer)
	b.ComputeOutput.add(1, out)
}

// Snapshot copies the statistics.
func (st *Stats) Snapshot() Snapshot {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.s
	s.Batches = make([]BatchStats, 0, len(st.batches))
	for _, b := range st.batches {
		s.Batches = append(s.Batches, *b)
	}
	slices.SortFunc(s.Batches, func(a, b BatchStats) int { return cmp.Compare(a.BatchSize, b.BatchSize) })
	return s
}
