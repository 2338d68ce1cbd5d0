package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeSample is what the node collector reports, read at scrape time.
type NodeSample struct {
	// Ready is what GET /ready says.
	Ready bool
	// Members counts the cluster's members as this node sees them (itself included), by
	// liveness; nil outside a cluster.
	Members map[string]int
	// Rollouts are the rollouts this node has converged on.
	Rollouts []RolloutSample
	// CertificateNotAfter is when the listener's TLS certificate expires; zero without TLS.
	CertificateNotAfter time.Time
}

// RolloutSample is one model's rollout.
type RolloutSample struct {
	Model, Phase string
	// CanaryWeight is the canary's share of traffic, in percent.
	CanaryWeight float64
}

// RolloutPhases are the values of inferd_rollout_phase's phase label, each reported for every
// rollout (1 for the one it is in), so that an alert can tell "not aborted" from "absent".
var RolloutPhases = []string{"progressing", "paused", "promoted", "aborted", "completed"}

// MemberLiveness are the values of inferd_cluster_members' liveness label, each reported.
var MemberLiveness = []string{"alive", "suspect", "dead", "left"}

// Node is the collector of the node's readiness, its view of the cluster, its rollouts and
// its certificate's expiry: what the shipped alerts need beyond the inference metrics.
type Node struct {
	source                        func() NodeSample
	ready, members, phase, weight *prometheus.Desc
	certExpiry                    *prometheus.Desc
}

// NewNode returns a collector over source, called once per scrape (it must be safe for
// concurrent use and must not block).
func NewNode(source func() NodeSample) *Node {
	return &Node{
		source: source,
		ready:  prometheus.NewDesc("inferd_ready", "1 while the node is ready (GET /ready answers 200), 0 while it starts or stops.", nil, nil),
		members: prometheus.NewDesc("inferd_cluster_members",
			"Members of the cluster as this node sees them, itself included, by liveness (alive, suspect, dead, left); absent outside a cluster.",
			[]string{"liveness"}, nil),
		phase: prometheus.NewDesc("inferd_rollout_phase",
			"1 for the phase each model's rollout is in, 0 for the others (progressing, paused, promoted, aborted, completed).",
			[]string{"model", "phase"}, nil),
		weight: prometheus.NewDesc("inferd_rollout_canary_weight_percent", "The canary version's share of a model's traffic under its rollout, in percent.",
			[]string{"model"}, nil),
		certExpiry: prometheus.NewDesc("inferd_tls_certificate_expiry_timestamp_seconds",
			"When the HTTP listener's TLS certificate expires (its NotAfter, Unix seconds); absent without TLS.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Node) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ready
	ch <- c.members
	ch <- c.phase
	ch <- c.weight
	ch <- c.certExpiry
}

// Collect implements prometheus.Collector.
func (c *Node) Collect(ch chan<- prometheus.Metric) {
	s := c.source()
	ready := 0.0
	if s.Ready {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready)
	if s.Members != nil {
		for _, l := range MemberLiveness {
			ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(s.Members[l]), l)
		}
	}
	for _, r := range s.Rollouts {
		for _, p := range RolloutPhases {
			v := 0.0
			if p == r.Phase {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, v, r.Model, p)
		}
		ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, r.CanaryWeight, r.Model)
	}
	if !s.CertificateNotAfter.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.certExpiry, prometheus.GaugeValue, float64(s.CertificateNotAfter.Unix()))
	}
}
