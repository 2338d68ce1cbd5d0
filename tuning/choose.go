package tuning

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Limits bound the choice for one model version.
type Limits struct {
	// Cores is how many cores the version may keep busy (the node's budget, or max_cores).
	Cores int
	// MaxBatch is the largest batch (max_batch_size); 1 without batching.
	MaxBatch int
	// InFlight is how many rows the load keeps in flight at most: instances × batch target
	// never exceeds it, since batches that the load cannot fill only leave instances idle.
	// 0 means MaxBatch.
	InFlight int
	// LatencyBudget bounds a request's time in the server: a batch target whose run, plus the
	// run ahead of it, would take longer is not chosen. 0 means none.
	LatencyBudget time.Duration
	// MinInstances and MaxInstances bound the instance count (0: no bound).
	MinInstances, MaxInstances int
	// Instances and Threads pin that dimension (model.toml set it); 0 leaves it to the tuner.
	Instances, Threads int
}

// Decision is the configuration chosen from a profile.
type Decision struct {
	Candidate
	// BatchTarget is the batch size the batcher aims for with the load the decision was made
	// for.
	BatchTarget int `json:"batch_target"`
	// RowsPerSecond is the profile's throughput at that target.
	RowsPerSecond float64 `json:"rows_per_second"`
	// Service is the profile's time of one run at the target.
	Service time.Duration `json:"service_ns"`
	// Reason says why, in a sentence for the log and the config endpoint.
	Reason string `json:"reason"`
}

// ErrNoCandidate: no measured candidate fits the limits.
var ErrNoCandidate = errors.New("no calibrated configuration fits the limits")

// nearBest is how close to the best throughput a cheaper configuration must come to be
// preferred: measurements on a shared machine differ by a few percent from run to run, and
// fewer cores and fewer instances leave room for other models and memory.
const nearBest = 0.97

// nearSame is how close to a candidate's best throughput a smaller batch must come to be
// preferred: a curve that no longer gains from rows (a convolution's) runs its smallest batch,
// one that still gains (a GEMM's) runs at the load's share of rows per instance.
const nearSame = 0.995

// Choose picks, from the usable curves of p that fit l, the candidate and batch target with
// the most rows per second; among those within nearBest of it, the one with the fewest cores,
// then the fewest instances, then the smallest batch (the least latency).
func Choose(p Profile, l Limits) (Decision, error) {
	inFlight := l.InFlight
	if inFlight <= 0 {
		inFlight = max(l.MaxBatch, 1)
	}
	type option struct {
		curve Curve
		batch int
		rps   float64
	}
	var opts []option
	var why []string
	for _, c := range p.Curves {
		if !c.Usable() {
			continue
		}
		if reason := l.excludes(c.Candidate); reason != "" {
			why = append(why, c.Candidate.String()+": "+reason)
			continue
		}
		// The batches this candidate can run at with the load: up to the in-flight rows spread
		// over its instances, within the latency budget; instances beyond what the load fills
		// at a batch size stay idle.
		top := min(max(inFlight/c.Instances, 1), max(l.MaxBatch, 1))
		for top > 1 && l.LatencyBudget > 0 && 2*c.Service(top) > l.LatencyBudget {
			top--
		}
		if l.LatencyBudget > 0 && 2*c.Service(top) > l.LatencyBudget { // even one row
			why = append(why, fmt.Sprintf("%s: one row takes %s, over half the latency budget %s", c.Candidate, c.Service(1), l.LatencyBudget))
			continue
		}
		rate := func(b int) float64 {
			busy := min(c.Instances, (inFlight+b-1)/b)
			return c.RowsPerSecond(b) * float64(busy) / float64(c.Instances)
		}
		// The load's rows split into cohorts, at least one per instance: batches of
		// ceil(rows / cohorts) (a batch of 63 out of 64 would leave a cohort of 1). The smallest
		// that comes within nearSame of the candidate's best: a larger one only adds latency.
		var sizes []int
		for m := c.Instances; ; m++ {
			b := min((inFlight+m-1)/m, top)
			if len(sizes) == 0 || b < sizes[len(sizes)-1] {
				sizes = append(sizes, b)
			}
			if b == 1 {
				break
			}
		}
		peak := 0.0
		for _, b := range sizes {
			peak = max(peak, rate(b))
		}
		b := sizes[0]
		for _, s := range sizes {
			if rate(s) >= nearSame*peak {
				b = s
			}
		}
		opts = append(opts, option{curve: c, batch: b, rps: rate(b)})
	}
	if len(opts) == 0 {
		if len(why) == 0 {
			why = append(why, "no candidate was measured")
		}
		return Decision{}, fmt.Errorf("%w (%v)", ErrNoCandidate, why)
	}
	best := slices.MaxFunc(opts, func(a, b option) int { return cmp.Compare(a.rps, b.rps) })
	near := slices.DeleteFunc(slices.Clone(opts), func(o option) bool { return o.rps < nearBest*best.rps })
	pick := slices.MinFunc(near, func(a, b option) int {
		if d := a.curve.Cores() - b.curve.Cores(); d != 0 {
			return d
		}
		if d := a.curve.Instances - b.curve.Instances; d != 0 {
			return d
		}
		return a.batch - b.batch
	})
	d := Decision{Candidate: pick.curve.Candidate, BatchTarget: pick.batch, RowsPerSecond: pick.rps, Service: pick.curve.Service(pick.batch)}
	d.Reason = fmt.Sprintf("%s at batch %d: %.0f rows/s measured (%s per run) for %d rows in flight", d.Candidate, d.BatchTarget, d.RowsPerSecond, d.Service.Round(time.Microsecond), inFlight)
	if pick.curve.Candidate != best.curve.Candidate || pick.batch != best.batch {
		d.Reason += fmt.Sprintf("; %s at batch %d measured %.0f rows/s, within %.0f%%, with more cores or instances", best.curve.Candidate, best.batch, best.rps, 100*(1-nearBest))
	}
	return d, nil
}

// excludes says why candidate c is outside l, or "".
func (l Limits) excludes(c Candidate) string {
	switch {
	case l.Cores > 0 && c.Cores() > l.Cores && l.Instances == 0 && l.Threads == 0:
		// what model.toml pins is served as written, even over the cores (Candidates)
		return fmt.Sprintf("needs %d cores, %d allowed", c.Cores(), l.Cores)
	case l.Instances > 0 && c.Instances != l.Instances:
		return fmt.Sprintf("instance.count is %d", l.Instances)
	case l.Threads > 0 && c.Threads != l.Threads:
		return fmt.Sprintf("instance.intra_op_threads is %d", l.Threads)
	case l.MinInstances > 0 && c.Instances < l.MinInstances:
		return fmt.Sprintf("under min_instances %d", l.MinInstances)
	case l.MaxInstances > 0 && c.Instances > l.MaxInstances:
		return fmt.Sprintf("over max_instances %d", l.MaxInstances)
	}
	return ""
}

// Candidates lists the configurations worth calibrating within l, in the order to measure them:
// for each instance count n (powers of two up to the cores, and the cores), n instances of
// cores/n threads, the two ends first (one instance with every core, one single-thread instance
// per core), so that a calibration cut short still has both kinds of curve. A dimension that
// model.toml pins is kept as written (and may then ask for more than the cores: the operator
// said so); min_instances and max_instances bound the count.
func Candidates(l Limits) []Candidate {
	cores := max(l.Cores, 1)
	var counts []int
	for n := 1; n <= cores; n *= 2 {
		counts = append(counts, n)
	}
	if counts[len(counts)-1] != cores {
		counts = append(counts, cores)
	}
	if len(counts) > 2 {
		counts = append([]int{counts[0], counts[len(counts)-1]}, counts[1:len(counts)-1]...)
	}
	if l.Instances > 0 {
		counts = []int{l.Instances}
	}
	var out []Candidate
	for _, n := range counts {
		c := Candidate{Instances: n, Threads: max(cores/n, 1)}
		if l.Threads > 0 {
			c.Threads = l.Threads
		}
		if l.Instances == 0 {
			if (l.MinInstances > 0 && n < l.MinInstances) || (l.MaxInstances > 0 && n > l.MaxInstances) {
				continue
			}
			if n > 1 && c.Cores() > cores {
				continue // pinned threads: fewer instances fit
			}
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// BatchSizes lists the batch sizes to measure up to maxBatch: powers of two and maxBatch.
func BatchSizes(maxBatch int) []int {
	maxBatch = max(maxBatch, 1)
	var out []int
	for b := 1; b < maxBatch; b *= 2 {
		out = append(out, b)
	}
	return append(out, maxBatch)
}
