package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// ModelState is the state of one model version at the moment of a scrape. Version is empty for
// a model that failed as a whole (an invalid model.toml, no version directory).
type ModelState struct {
	Model, Version, State string
}

// ModelStates is the collector of inferd_model_state, read from the model repository at scrape
// time: one series per model version and possible state, 1 for the state it is in and 0 for
// the others (as node_exporter's node_systemd_unit_state), so that an alert can ask for the
// versions that are not ready.
type ModelStates struct {
	states []string
	source func() []ModelState
	desc   *prometheus.Desc
}

// NewModelStates returns a collector over source, called once per scrape (it must be safe for
// concurrent use). states lists every state a version can be in; a version in a state not
// listed still reports it.
func NewModelStates(states []string, source func() []ModelState) *ModelStates {
	return &ModelStates{
		states: slices.Clone(states),
		source: source,
		desc: prometheus.NewDesc("inferd_model_state",
			"State of each model version: 1 for the state it is in, 0 for the others. The reason of a failure is in /v2/repository/index and /health.",
			[]string{"model", "version", "state"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ModelStates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ModelStates) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.source() {
		for _, s := range c.states {
			v := 0.0
			if s == m.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, m.Model, m.Version, s)
		}
		if !slices.Contains(c.states, m.State) {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, m.Model, m.Version, m.State)
		}
	}
}

// WorkerState is one model version's worker process at the moment of a scrape.
type WorkerState struct {
	Model, Version string
	// RSS is the worker's resident memory in bytes.
	RSS uint64
}

// Workers is the collector of inferd_worker_resident_memory_bytes, read at scrape time: one
// series per model version whose worker runs (isolation = "process").
type Workers struct {
	source func() []WorkerState
	desc   *prometheus.Desc
}

// NewWorkers returns a collector over source, called once per scrape (it must be safe for
// concurrent use).
func NewWorkers(source func() []WorkerState) *Workers {
	return &Workers{source: source, desc: prometheus.NewDesc("inferd_worker_resident_memory_bytes",
		"Resident memory of each model version's worker process, in bytes (the daemon's own is process_resident_memory_bytes).",
		[]string{"model", "version"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *Workers) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Workers) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.source() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(w.RSS), w.Model, w.Version)
	}
}

// TuningState is how one ready model version is served at the moment of a scrape.
type TuningState struct {
	Model, Version string
	Instances      int
	IntraOpThreads int
	// BatchTarget is the tuned batcher's target now; 0 for a version served as written.
	BatchTarget int
}

// Tuning is the collector of inferd_model_instances, inferd_model_intra_op_threads and
// inferd_model_batch_target, read at scrape time: what calibration chose for each ready version
// (docs/tuning.md) and the batch size its batcher aims for with the load it sees.
type Tuning struct {
	source                     func() []TuningState
	instances, threads, target *prometheus.Desc
}

// NewTuning returns a collector over source, called once per scrape (it must be safe for
// concurrent use).
func NewTuning(source func() []TuningState) *Tuning {
	labels := []string{"model", "version"}
	return &Tuning{
		source:    source,
		instances: prometheus.NewDesc("inferd_model_instances", "Instances (ONNX Runtime sessions) of each ready model version.", labels, nil),
		threads:   prometheus.NewDesc("inferd_model_intra_op_threads", "Intra-op threads of each instance of each ready model version.", labels, nil),
		target: prometheus.NewDesc("inferd_model_batch_target",
			"Rows per batch the tuned batcher of each calibrated model version aims for now: the rows in flight spread over its instances.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Tuning) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.threads
	ch <- c.target
}

// Collect implements prometheus.Collector.
func (c *Tuning) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.source() {
		ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(t.Instances), t.Model, t.Version)
		ch <- prometheus.MustNewConstMetric(c.threads, prometheus.GaugeValue, float64(t.IntraOpThreads), t.Model, t.Version)
		if t.BatchTarget > 0 {
			ch <- prometheus.MustNewConstMetric(c.target, prometheus.GaugeValue, float64(t.BatchTarget), t.Model, t.Version)
		}
	}
}
