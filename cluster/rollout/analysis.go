package rollout

import (
	"fmt"
	"math"
	"time"
)

// Counters gives a model version's cumulative request counters; an analysis window is the
// difference between two snapshots. inferd's scheduler statistics map onto it as Requests =
// success + fail, Errors = fail, LatencyCount = success, LatencySum = success time.
//
// Snapshot is called with the Controller's lock held: it must be safe for concurrent use, must
// not block, and must not call the Controller.
type Counters interface {
	// Snapshot returns the counters of the version, or false when it has none (not loaded).
	Snapshot(model, version string) (Counts, bool)
}

// Counts are cumulative counters since some start (a process start, say). They only grow; a
// decrease means they were reset and makes a window inconclusive.
type Counts struct {
	Requests uint64 // finished requests, failed or not
	Errors   uint64 // failed requests (server-side failures, not refused bad input)
	// LatencyCount requests have a latency in LatencySum and Buckets (inferd: the successes).
	LatencyCount uint64
	LatencySum   time.Duration
	// Buckets is an optional cumulative histogram of those latencies, ascending by bound;
	// needed for max_p99_latency. Requests above the last bound are LatencyCount minus the
	// last bucket's Count.
	Buckets []Bucket
}

// Bucket counts the requests with latency at most UpperBound.
type Bucket struct {
	UpperBound time.Duration
	Count      uint64
}

// verdict is an analysis window's outcome.
type verdict int

const (
	inconclusive verdict = iota
	pass
	fail
)

func (v verdict) String() string {
	switch v {
	case pass:
		return "pass"
	case fail:
		return "fail"
	}
	return "inconclusive"
}

// result is a judged window; detail says why, for logs and State.Reason.
type result struct {
	verdict verdict
	detail  string
}

// evaluate judges the canary's traffic between two snapshots against a's thresholds.
func evaluate(a Analysis, start, end Counts) result {
	if end.Requests < start.Requests || end.Errors < start.Errors || end.LatencyCount < start.LatencyCount || end.LatencySum < start.LatencySum {
		return result{inconclusive, "counters went backwards (reset)"}
	}
	reqs, errs := end.Requests-start.Requests, end.Errors-start.Errors
	if errs > reqs {
		return result{inconclusive, fmt.Sprintf("inconsistent counters: %d errors in %d requests", errs, reqs)}
	}
	need := uint64(max(a.MinRequests, 1))
	if reqs < need {
		return result{inconclusive, fmt.Sprintf("%d requests, fewer than the %d needed", reqs, need)}
	}
	latN := end.LatencyCount - start.LatencyCount
	var p99 time.Duration
	if a.MaxP99Latency > 0 && latN > 0 {
		q, err := quantile(0.99, start, end)
		if err != nil {
			return result{inconclusive, "p99: " + err.Error()}
		}
		p99 = q
	}
	rate := float64(errs) / float64(reqs)
	if a.MaxErrorRate != nil && rate > *a.MaxErrorRate {
		return result{fail, fmt.Sprintf("error rate %.4f > %v over %d requests", rate, *a.MaxErrorRate, reqs)}
	}
	if a.MaxMeanLatency > 0 && latN > 0 {
		mean := (end.LatencySum - start.LatencySum) / time.Duration(latN)
		if mean > time.Duration(a.MaxMeanLatency) {
			return result{fail, fmt.Sprintf("mean latency %v > %v over %d requests", mean, a.MaxMeanLatency, latN)}
		}
	}
	if a.MaxP99Latency > 0 && latN > 0 && p99 > time.Duration(a.MaxP99Latency) {
		shown := p99.String()
		if p99 == math.MaxInt64 {
			shown = "beyond the largest bucket"
		}
		return result{fail, fmt.Sprintf("p99 latency %s > %v over %d requests", shown, a.MaxP99Latency, latN)}
	}
	return result{pass, fmt.Sprintf("%d requests, error rate %.4f", reqs, rate)}
}

// quantile estimates the q-quantile of the latencies between two snapshots the way Prometheus'
// histogram_quantile does: linear within the bucket holding the rank. A rank beyond the last
// finite bucket gives math.MaxInt64 (infinite), so a threshold is never passed on a guess.
func quantile(q float64, start, end Counts) (time.Duration, error) {
	if len(end.Buckets) == 0 {
		return 0, fmt.Errorf("the counters carry no latency histogram")
	}
	if len(start.Buckets) != len(end.Buckets) {
		return 0, fmt.Errorf("histogram buckets changed during the window")
	}
	total := end.LatencyCount - start.LatencyCount
	rank := q * float64(total)
	var prevBound time.Duration
	var prevCount uint64
	for i, b := range end.Buckets {
		s := start.Buckets[i]
		if s.UpperBound != b.UpperBound || b.Count < s.Count || b.UpperBound <= prevBound {
			return 0, fmt.Errorf("histogram buckets changed or are malformed")
		}
		c := b.Count - s.Count
		if c < prevCount || c > total {
			return 0, fmt.Errorf("histogram counts are not cumulative")
		}
		if float64(c) >= rank && c > prevCount {
			frac := (rank - float64(prevCount)) / float64(c-prevCount)
			return prevBound + time.Duration(frac*float64(b.UpperBound-prevBound)), nil
		}
		prevBound, prevCount = b.UpperBound, c
	}
	return math.MaxInt64, nil
}
