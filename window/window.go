// Package window turns the scheduler's cumulative per-model-version statistics into rates
// and latency percentiles over a recent window (the last minute), and into a short per-second
// history for charts. It costs one copy of the counters per sample: the daemon observes
// scheduler.Totals once a second, the package keeps a ring of those cumulative samples per
// series, and a window's figures are differences between two samples — quantiles come from
// the differences of the latency histogram's buckets, interpolated as Prometheus'
// histogram_quantile does. Observe takes the time it is given, so tests feed it fixed times;
// Run is the owner's once-an-interval loop around it.
package window

import (
	"cmp"
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/scheduler"
)

// Options size a Window.
type Options struct {
	// Span is the window the rates and percentiles cover (60s when zero).
	Span time.Duration
	// History is how many per-interval points each series keeps for charts (900 when zero:
	// 15 minutes at one sample a second).
	History int
}

// Window holds the recent samples of every model version. It is safe for concurrent use.
type Window struct {
	span    time.Duration
	history int
	bounds  []time.Duration

	mu     sync.Mutex
	series map[key]*series
}

type key struct{ model, version string }

// sample is a series' cumulative counters at one moment.
type sample struct {
	at       time.Time
	requests uint64 // every request the scheduler admitted that ended, whatever the outcome
	errors   uint64 // server errors, timeouts and full queues: the node's fault
	rows     uint64
	execs    uint64
	buckets  [len(scheduler.Histogram{}.Counts)]uint64 // per bucket, not cumulative
	pending  int
	inFlight int
}

// Point is one interval of a series' history: what happened between two samples.
type Point struct {
	At                time.Time `json:"t"`
	RequestsPerSecond float64   `json:"rps"`
	ErrorsPerSecond   float64   `json:"eps"`
	// P50 and P99 are in milliseconds; nil when no request succeeded in the interval.
	P50 *float64 `json:"p50_ms"`
	P99 *float64 `json:"p99_ms"`
	// QueueDepth is the requests waiting at the end of the interval; BatchSize the mean rows
	// per execution in it (0 without executions).
	QueueDepth int     `json:"queue"`
	BatchSize  float64 `json:"batch"`
}

type series struct {
	samples []sample // ascending by time; the oldest is at most span + one interval old
	points  []Point  // ascending; at most history
	seen    time.Time
}

// New returns an empty Window.
func New(o Options) *Window {
	if o.Span <= 0 {
		o.Span = time.Minute
	}
	if o.History <= 0 {
		o.History = 900
	}
	return &Window{span: o.Span, history: o.History, bounds: scheduler.LatencyBuckets(), series: map[key]*series{}}
}

// Span is the window Rates covers.
func (w *Window) Span() time.Duration { return w.span }

// Observe records the cumulative totals of every series at time at. Times must not go
// backwards; an observation at or before the previous one is ignored. A series absent from
// the totals for longer than the window and the history is dropped.
func (w *Window) Observe(at time.Time, totals []scheduler.SeriesSnapshot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range totals {
		k := key{t.Model, t.Version}
		s := w.series[k]
		if s == nil {
			s = &series{}
			w.series[k] = s
		}
		cur := toSample(at, &t.Snapshot)
		if n := len(s.samples); n > 0 {
			prev := s.samples[n-1]
			if !at.After(prev.at) {
				continue
			}
			if cur.requests < prev.requests {
				// A series whose counts went down was reset (a new scheduler): start again.
				s.samples = s.samples[:0]
			} else {
				s.points = append(s.points, w.point(prev, cur))
				if len(s.points) > w.history {
					s.points = slices.Delete(s.points, 0, len(s.points)-w.history)
				}
			}
		}
		s.samples = append(s.samples, cur)
		s.seen = at
		// Keep one sample at or before at - span, so that a full window is always covered.
		cut := 0
		for i := range s.samples {
			if !s.samples[i].at.After(at.Add(-w.span)) {
				cut = i
			}
		}
		s.samples = slices.Delete(s.samples, 0, cut)
	}
	keep := w.span + time.Duration(w.history)*time.Second
	for k, s := range w.series {
		if at.Sub(s.seen) > keep {
			delete(w.series, k)
		}
	}
}

func toSample(at time.Time, s *scheduler.Snapshot) sample {
	o := s.Outcomes
	out := sample{at: at, rows: s.InferenceCount, execs: s.ExecutionCount, pending: s.Pending, inFlight: s.InFlight,
		buckets: s.RequestDuration.Counts,
		errors:  o[scheduler.OutcomeServerError] + o[scheduler.OutcomeTimeout] + o[scheduler.OutcomeQueueFull]}
	for _, n := range o {
		out.requests += n
	}
	return out
}

// Rates are a series' figures over the window.
type Rates struct {
	// Span is the time the figures cover: the window, or less while the series is younger.
	Span time.Duration
	// Requests and Errors are the counts in the span; the rates are per second of it.
	Requests, Errors                   uint64
	RequestsPerSecond, ErrorsPerSecond float64
	// P50 and P99 are the latency percentiles of the successful requests in the span; OK is
	// false when none succeeded in it.
	P50, P99 time.Duration
	OK       bool
	// BatchSize is the mean rows per execution in the span (0 without executions).
	BatchSize float64
	// QueueDepth and InFlight are from the newest sample.
	QueueDepth, InFlight int
}

// Rates returns the series' figures over the window, and false for a series never observed.
// A series observed once has a zero span and zero rates.
func (w *Window) Rates(model, version string) (Rates, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.series[key{model, version}]
	if s == nil || len(s.samples) == 0 {
		return Rates{}, false
	}
	last := s.samples[len(s.samples)-1]
	first := s.samples[0]
	for _, x := range s.samples {
		// The newest sample at or before last - span, else the oldest there is.
		if !x.at.After(last.at.Add(-w.span)) {
			first = x
		}
	}
	r := Rates{Span: last.at.Sub(first.at), QueueDepth: last.pending, InFlight: last.inFlight,
		Requests: last.requests - first.requests, Errors: last.errors - first.errors}
	if secs := r.Span.Seconds(); secs > 0 {
		r.RequestsPerSecond = float64(r.Requests) / secs
		r.ErrorsPerSecond = float64(r.Errors) / secs
	}
	if execs := last.execs - first.execs; execs > 0 {
		r.BatchSize = float64(last.rows-first.rows) / float64(execs)
	}
	delta := deltas(first, last)
	r.P50, r.OK = quantile(0.5, delta, w.bounds)
	r.P99, _ = quantile(0.99, delta, w.bounds)
	return r, true
}

// History returns a copy of the series' per-interval points, oldest first.
func (w *Window) History(model, version string) []Point {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.series[key{model, version}]
	if s == nil {
		return nil
	}
	return slices.Clone(s.points)
}

// Series lists the model versions the window holds, sorted.
func (w *Window) Series() [][2]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([][2]string, 0, len(w.series))
	for k := range w.series {
		out = append(out, [2]string{k.model, k.version})
	}
	slices.SortFunc(out, func(a, b [2]string) int {
		return cmp.Or(strings.Compare(a[0], b[0]), strings.Compare(a[1], b[1]))
	})
	return out
}

func (w *Window) point(prev, cur sample) Point {
	secs := cur.at.Sub(prev.at).Seconds()
	p := Point{At: cur.at, QueueDepth: cur.pending,
		RequestsPerSecond: float64(cur.requests-prev.requests) / secs,
		ErrorsPerSecond:   float64(cur.errors-prev.errors) / secs}
	if execs := cur.execs - prev.execs; execs > 0 {
		p.BatchSize = float64(cur.rows-prev.rows) / float64(execs)
	}
	delta := deltas(prev, cur)
	if q, ok := quantile(0.5, delta, w.bounds); ok {
		p.P50 = ms(q)
		q99, _ := quantile(0.99, delta, w.bounds)
		p.P99 = ms(q99)
	}
	return p
}

func ms(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Microsecond)) / 1000
	return &v
}

func deltas(from, to sample) []uint64 {
	out := make([]uint64, len(to.buckets))
	for i := range to.buckets {
		if to.buckets[i] >= from.buckets[i] {
			out[i] = to.buckets[i] - from.buckets[i]
		}
	}
	return out
}

// quantile estimates the q-quantile of the durations counted per bucket (counts[i] between
// bounds[i-1] and bounds[i]; the last past every bound), interpolating linearly inside the
// bucket as histogram_quantile does; a quantile in the overflow bucket is the highest bound.
// It returns false for no counts.
func quantile(q float64, counts []uint64, bounds []time.Duration) (time.Duration, bool) {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0, false
	}
	rank := q * float64(total)
	var cum float64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			if i >= len(bounds) {
				return bounds[len(bounds)-1], true
			}
			lower := time.Duration(0)
			if i > 0 {
				lower = bounds[i-1]
			}
			frac := (rank - cum) / float64(c)
			return lower + time.Duration(frac*float64(bounds[i]-lower)), true
		}
		cum += float64(c)
	}
	return bounds[len(bounds)-1], true
}

// Run observes source every interval until ctx ends. source must not block for long.
func (w *Window) Run(ctx context.Context, interval time.Duration, source func() []scheduler.SeriesSnapshot) {
	t := time.NewTicker(interval)
	defer t.Stop()
	w.Observe(time.Now(), source())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.Observe(now, source())
		}
	}
}
