package metrics

import "github.com/prometheus/client_golang/prometheus"

// TracingStats are the tracing exporter's span counts, read at scrape time.
type TracingStats struct {
	Exported uint64
	// Dropped spans by reason: the export queue was full (collector down or slow), an export
	// failed or timed out, or the queue was still full when tracing shut down or was replaced.
	DroppedQueueFull, DroppedExportFailed, DroppedShutdown uint64
}

// Tracing collects TracingStats: inferd_tracing_spans_exported_total and
// inferd_tracing_spans_dropped_total{reason}.
type Tracing struct {
	read              func() TracingStats
	exported, dropped *prometheus.Desc
}

// NewTracing returns the tracing collector; read must not block.
func NewTracing(read func() TracingStats) *Tracing {
	return &Tracing{
		read: read,
		exported: prometheus.NewDesc("inferd_tracing_spans_exported_total",
			"Trace spans the OTLP collector accepted.", nil, nil),
		dropped: prometheus.NewDesc("inferd_tracing_spans_dropped_total",
			"Trace spans dropped, by reason: queue_full (the collector is down or slow and the export queue is full), export_failed (the collector refused a batch or did not answer in time), shutdown (still queued when tracing stopped or was reconfigured).",
			[]string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Tracing) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.exported
	ch <- c.dropped
}

// Collect implements prometheus.Collector.
func (c *Tracing) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	ch <- prometheus.MustNewConstMetric(c.exported, prometheus.CounterValue, float64(s.Exported))
	for _, d := range []struct {
		reason string
		n      uint64
	}{{"queue_full", s.DroppedQueueFull}, {"export_failed", s.DroppedExportFailed}, {"shutdown", s.DroppedShutdown}} {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(d.n), d.reason)
	}
}
