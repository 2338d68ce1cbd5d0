package rollout

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestEvaluate(t *testing.T) {
	ms := time.Millisecond
	buckets := func(counts ...uint64) []Bucket {
		bounds := []time.Duration{10 * ms, 50 * ms, 100 * ms}
		out := make([]Bucket, len(counts))
		for i, c := range counts {
			out[i] = Bucket{bounds[i], c}
		}
		return out
	}
	start := Counts{Requests: 1000, Errors: 10, LatencyCount: 990, LatencySum: 990 * 20 * ms, Buckets: buckets(500, 900, 990)}
	plus := func(reqs, errs uint64, each time.Duration, b ...uint64) Counts {
		c := start
		c.Requests += reqs
		c.Errors += errs
		c.LatencyCount += reqs - errs
		c.LatencySum += time.Duration(reqs-errs) * each
		c.Buckets = buckets(b...)
		for i := range c.Buckets {
			c.Buckets[i].Count += start.Buckets[i].Count
		}
		return c
	}
	rate := Analysis{MaxErrorRate: ptr(0.05), MinRequests: 50}
	mean := Analysis{MaxMeanLatency: Duration(30 * ms), MinRequests: 50}
	p99 := Analysis{MaxP99Latency: Duration(80 * ms), MinRequests: 50}

	tests := []struct {
		name   string
		a      Analysis
		end    Counts
		want   verdict
		detail string
	}{
		{"pass", rate, plus(100, 5, 20*ms, 0, 95, 95), pass, "100 requests, error rate 0.0500"},
		{"error rate over", rate, plus(100, 6, 20*ms, 0, 94, 94), fail, "error rate 0.0600 > 0.05 over 100 requests"},
		{"zero tolerance", Analysis{MaxErrorRate: ptr(0.0)}, plus(100, 1, ms), fail, "error rate 0.0100 > 0"},
		{"too little traffic", rate, plus(49, 49, 0), inconclusive, "49 requests, fewer than the 50 needed"},
		{"no traffic with min 0", Analysis{MaxErrorRate: ptr(0.1)}, start, inconclusive, "0 requests, fewer than the 1 needed"},
		{"reset", rate, Counts{Requests: 5}, inconclusive, "reset"},
		{"more errors than requests", rate, Counts{Requests: 1100, Errors: 200, LatencyCount: 990, LatencySum: start.LatencySum}, inconclusive, "inconsistent"},
		{"mean under", mean, plus(100, 0, 30*ms), pass, ""},
		{"mean over", mean, plus(100, 0, 31*ms), fail, "mean latency 31ms > 30ms"},
		{"all errors: latency not judged", mean, plus(100, 100, 0), pass, ""},
		// 100 new: 0 ≤10ms, 98 ≤50ms, 100 ≤100ms: rank 99 lies halfway into (50ms, 100ms].
		{"p99 interpolated, under", Analysis{MaxP99Latency: Duration(76 * ms), MinRequests: 50}, plus(100, 0, 40*ms, 0, 98, 100), pass, ""},
		{"p99 interpolated, over", Analysis{MaxP99Latency: Duration(74 * ms), MinRequests: 50}, plus(100, 0, 40*ms, 0, 98, 100), fail, "p99 latency 75ms > 74ms"},
		{"p99 beyond the largest bucket", p99, plus(100, 0, 40*ms, 0, 50, 98), fail, "beyond the largest bucket"},
		{"p99 without a histogram", p99, func() Counts { c := plus(100, 0, 40*ms); c.Buckets = nil; return c }(), inconclusive, "no latency histogram"},
		{"p99 with changed buckets", p99, func() Counts { c := plus(100, 0, 40*ms, 0, 98, 100); c.Buckets[1].UpperBound = 60 * ms; return c }(), inconclusive, "changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := evaluate(tt.a, start, tt.end)
			if r.verdict != tt.want || !strings.Contains(r.detail, tt.detail) {
				t.Errorf("evaluate = %s %q, want %s %q", r.verdict, r.detail, tt.want, tt.detail)
			}
		})
	}
}

func TestQuantileInfinite(t *testing.T) {
	end := Counts{LatencyCount: 10, Buckets: []Bucket{{time.Second, 0}}}
	q, err := quantile(0.99, Counts{Buckets: []Bucket{{time.Second, 0}}}, end)
	if err != nil || q != math.MaxInt64 {
		t.Errorf("quantile = %v %v, want infinite", q, err)
	}
}
