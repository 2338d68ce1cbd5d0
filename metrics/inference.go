package metrics

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// batchBuckets are the upper bounds of inferd_inference_batch_size's buckets, in rows.
func batchBuckets() []float64 { return []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024} }

// InferenceStats is one model version's inference statistics at the moment of a scrape. Counts
// are cumulative over the daemon's life (across reloads of the version) and never decrease.
type InferenceStats struct {
	Model, Version string
	// Outcomes counts the requests that ended, by outcome (one of the names NewInference was
	// given).
	Outcomes map[string]uint64
	// RequestDuration is from admission into the queue to outputs, per successful request;
	// QueueDuration from admission to the start of its batch, per successful request;
	// ComputeDuration one batch execution (gather inputs, run, split outputs).
	RequestDuration, QueueDuration, ComputeDuration Histogram
	// BatchSizes counts executions by their batch size in rows.
	BatchSizes map[int]uint64
	// Pending requests wait in the queue; InFlight were admitted and are not answered yet
	// (waiting or running).
	Pending, InFlight int
}

// Histogram is a cumulative histogram as Prometheus exposes it.
type Histogram struct {
	Count uint64
	Sum   float64 // in seconds
	// Buckets maps each upper bound, in seconds, to the number of observations at most that
	// bound; +Inf is Count.
	Buckets map[float64]uint64
}

// Inference is the collector of the inference metrics. It reads the scheduler's statistics at
// scrape time through source, and adds the requests that ended before the scheduler saw them
// (Refused). It is safe for concurrent use.
type Inference struct {
	source   func() []InferenceStats
	outcomes []string

	requests, requestDuration, queueDuration, computeDuration, batchSize, pending, inFlight *prometheus.Desc

	mu      sync.Mutex
	refused map[refusal]uint64
}

type refusal struct{ model, version, outcome string }

// NewInference returns a collector over source, which is called once per scrape and must be
// safe for concurrent use; nil reports only refused requests. outcomes are the values of the
// outcome label (the scheduler's Outcome names: this package spells none itself); every model
// version reports each of them, zero or not, so that a rate over any exists before the first
// such request.
func NewInference(outcomes []string, source func() []InferenceStats) *Inference {
	mv := []string{"model", "version"}
	return &Inference{
		source:   source,
		outcomes: slices.Clone(outcomes),
		requests: prometheus.NewDesc("inferd_inference_requests_total",
			"Inference requests that ended, by model, version and outcome. Requests for a model that does not exist have empty model and version labels; requests that never resolved to a version have an empty version.",
			[]string{"model", "version", "outcome"}, nil),
		requestDuration: prometheus.NewDesc("inferd_inference_request_duration_seconds",
			"Time from admission into the queue to outputs, of successful inference requests.", mv, nil),
		queueDuration: prometheus.NewDesc("inferd_inference_queue_duration_seconds",
			"Time successful inference requests waited in the queue before their batch started.", mv, nil),
		computeDuration: prometheus.NewDesc("inferd_inference_compute_duration_seconds",
			"Time of each successful batch execution: gathering the inputs, the model's run, splitting the outputs.", mv, nil),
		batchSize: prometheus.NewDesc("inferd_inference_batch_size",
			"Rows (batch dimension) of each successful batch execution.", mv, nil),
		pending: prometheus.NewDesc("inferd_inference_pending_requests",
			"Inference requests waiting in the model version's queue (queue depth).", mv, nil),
		inFlight: prometheus.NewDesc("inferd_inference_in_flight_requests",
			"Inference requests admitted into the model version's queue and not answered yet: waiting or running.", mv, nil),
		refused: map[refusal]uint64{},
	}
}

// Refused counts an inference request that ended before the scheduler took it: malformed, for
// an unknown or unavailable model, refused while stopping. Callers pass an empty model for a
// model that does not exist, so that clients cannot create series at will.
func (c *Inference) Refused(model, version, outcome string) {
	c.mu.Lock()
	c.refused[refusal{model, version, outcome}]++
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *Inference) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.requestDuration, c.queueDuration, c.computeDuration, c.batchSize, c.pending, c.inFlight} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Inference) Collect(ch chan<- prometheus.Metric) {
	var stats []InferenceStats
	if c.source != nil {
		stats = c.source()
	}
	type series struct{ model, version string }
	counts := map[series]map[string]uint64{}
	byOutcome := func(s series) map[string]uint64 {
		if counts[s] == nil {
			counts[s] = make(map[string]uint64, len(c.outcomes))
			for _, o := range c.outcomes {
				counts[s][o] = 0
			}
		}
		return counts[s]
	}
	for _, st := range stats {
		of := byOutcome(series{st.Model, st.Version})
		for o, n := range st.Outcomes {
			of[o] += n
		}
		c.histogram(ch, c.requestDuration, st.RequestDuration, st)
		c.histogram(ch, c.queueDuration, st.QueueDuration, st)
		c.histogram(ch, c.computeDuration, st.ComputeDuration, st)
		c.histogram(ch, c.batchSize, batchHistogram(st.BatchSizes), st)
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending), st.Model, st.Version)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.InFlight), st.Model, st.Version)
	}
	c.mu.Lock()
	for r, n := range c.refused {
		byOutcome(series{r.model, r.version})[r.outcome] += n
	}
	c.mu.Unlock()
	for s, byOutcome := range counts {
		for o, n := range byOutcome {
			ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(n), s.model, s.version, o)
		}
	}
}

func (c *Inference) histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h Histogram, st InferenceStats) {
	ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, h.Buckets, st.Model, st.Version)
}

// batchHistogram turns executions by exact batch size into batchBuckets.
func batchHistogram(sizes map[int]uint64) Histogram {
	bounds := batchBuckets()
	h := Histogram{Buckets: make(map[float64]uint64, len(bounds))}
	for _, b := range bounds {
		h.Buckets[b] = 0
	}
	for size, n := range sizes {
		h.Count += n
		h.Sum += float64(size) * float64(n)
		if i, _ := slices.BinarySearch(bounds, float64(size)); i < len(bounds) {
			for _, b := range bounds[i:] {
				h.Buckets[b] += n
			}
		}
	}
	return h
}
