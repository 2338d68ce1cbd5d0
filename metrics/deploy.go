package metrics

import "github.com/prometheus/client_golang/prometheus"

// DeployStats are a node's deploy counters (cluster/deploy.Stats) at the moment of a scrape.
type DeployStats struct {
	FetchedBytes, ServedBytes    uint64
	CorruptChunks, FailedFetches uint64
}

// Deploy is the collector of the inferd_deploy_* counters, read at scrape time: bytes moved
// between peers for deployments, and chunks that failed verification (each fetched again from
// another member) or could not be fetched.
type Deploy struct {
	source                           func() DeployStats
	fetched, served, corrupt, failed *prometheus.Desc
}

// NewDeploy returns a collector over source, called once per scrape (it must be safe for
// concurrent use).
func NewDeploy(source func() DeployStats) *Deploy {
	return &Deploy{
		source:  source,
		fetched: prometheus.NewDesc("inferd_deploy_fetched_bytes_total", "Chunk bytes this node received from peers for deployments.", nil, nil),
		served:  prometheus.NewDesc("inferd_deploy_served_bytes_total", "Chunk bytes this node sent to peers for deployments.", nil, nil),
		corrupt: prometheus.NewDesc("inferd_deploy_corrupt_chunks_total", "Chunks from a peer whose sha256 did not match the manifest; each was fetched again elsewhere and never installed.", nil, nil),
		failed:  prometheus.NewDesc("inferd_deploy_failed_fetches_total", "Chunk requests to a peer that failed (connection, refusal); the chunk was asked of another holder.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Deploy) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.fetched
	ch <- c.served
	ch <- c.corrupt
	ch <- c.failed
}

// Collect implements prometheus.Collector.
func (c *Deploy) Collect(ch chan<- prometheus.Metric) {
	s := c.source()
	ch <- prometheus.MustNewConstMetric(c.fetched, prometheus.CounterValue, float64(s.FetchedBytes))
	ch <- prometheus.MustNewConstMetric(c.served, prometheus.CounterValue, float64(s.ServedBytes))
	ch <- prometheus.MustNewConstMetric(c.corrupt, prometheus.CounterValue, float64(s.CorruptChunks))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.FailedFetches))
}
