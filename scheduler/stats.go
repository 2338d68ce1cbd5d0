package scheduler

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

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
}

// Stats accumulates a queue's statistics.
type Stats struct {
	mu      sync.Mutex
	s       Snapshot
	batches map[int]*BatchStats
}

func newStats() *Stats { return &Stats{batches: map[int]*BatchStats{}} }

func (st *Stats) fail(n int) {
	st.mu.Lock()
	st.s.Fail.Count += uint64(n)
	st.mu.Unlock()
}

// record accounts for one executed batch: start → computed (inputs gathered) → ran (session
// returned) → end (outputs split).
func (st *Stats) record(batch []*pending, start, computed, ran, end time.Time, err error) {
	in, infer, out := computed.Sub(start), ran.Sub(computed), end.Sub(ran)
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
		return
	}
	for _, p := range batch {
		st.s.Success.add(1, end.Sub(p.arrived))
		st.s.Queue.add(1, start.Sub(p.arrived))
	}
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
