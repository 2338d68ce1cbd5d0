package metrics

import (
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// ModelPlacement is where one ready model version runs, at the moment of a scrape.
type ModelPlacement struct {
	Model, Version string
	// Provider is the execution provider its sessions actually run on.
	Provider string
	// GPUs are the GPU indices its instances run on (none on the CPU).
	GPUs []int
	// Fallback is true when it asked for a GPU and runs on the CPU instead.
	Fallback bool
}

// Placements is the collector of inferd_model_execution_provider_info, read from the model
// repository at scrape time, so that a dashboard or an alert sees which execution provider each
// model version really runs on, and which ones fell back to the CPU.
type Placements struct {
	source func() []ModelPlacement
	desc   *prometheus.Desc
}

// NewPlacements returns a collector over source, called once per scrape (it must be safe for
// concurrent use).
func NewPlacements(source func() []ModelPlacement) *Placements {
	return &Placements{
		source: source,
		desc: prometheus.NewDesc("inferd_model_execution_provider_info",
			"A metric with a constant 1 value for each ready model version, labelled with the execution provider it runs on, its GPUs (comma-separated NVML indices) and whether it fell back to the CPU from a GPU it asked for.",
			[]string{"model", "version", "execution_provider", "gpus", "cpu_fallback"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Placements) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *Placements) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.source() {
		gpus := slices.Compact(slices.Sorted(slices.Values(p.GPUs)))
		ids := make([]string, len(gpus))
		for i, g := range gpus {
			ids[i] = strconv.Itoa(g)
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1,
			p.Model, p.Version, p.Provider, strings.Join(ids, ","), strconv.FormatBool(p.Fallback))
	}
}
