// Package metrics owns inferd's Prometheus registry and the metrics that more than one part of
// the daemon updates: build info, configuration reloads and model loads, with the Go runtime
// and process collectors. Names follow inferd_<subsystem>_<name>_<unit>; counters end in
// _total. It holds no global state: the daemon creates one Metrics and hands it around.
package metrics

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the daemon's registry and its shared metrics.
type Metrics struct {
	Registry *prometheus.Registry

	// ConfigReloads counts configuration reloads by result: "applied", "unchanged" or "failed".
	ConfigReloads *prometheus.CounterVec
	// ConfigLastReloadSuccessful is 1 when the last reload applied (or found nothing to do),
	// 0 when it failed and the previous configuration stays in force.
	ConfigLastReloadSuccessful prometheus.Gauge
	// ConfigLastReloadTimestamp is when the last reload attempt finished, in Unix seconds.
	ConfigLastReloadTimestamp prometheus.Gauge
	// ModelLoads counts load attempts of model versions by model and result ("success",
	// "failure"). A failed load of a new generation leaves the previous one serving.
	ModelLoads *prometheus.CounterVec
}

// New registers the shared metrics, inferd_build_info, and the Go and process collectors.
func New(version string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inferd_config_reloads_total",
			Help: "Configuration reloads (SIGHUP or a change of the file), by result: applied, unchanged or failed.",
		}, []string{"result"}),
		ConfigLastReloadSuccessful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inferd_config_last_reload_successful",
			Help: "1 if the last configuration reload succeeded, 0 if it failed and the previous configuration stays in force.",
		}),
		ConfigLastReloadTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inferd_config_last_reload_timestamp_seconds",
			Help: "When the last configuration reload attempt finished, in Unix seconds.",
		}),
		ModelLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inferd_model_loads_total",
			Help: "Load attempts of model versions, by model and result (success or failure).",
		}, []string{"model", "result"}),
	}
	m.ConfigLastReloadSuccessful.Set(1)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "inferd_build_info",
		Help:        "A metric with a constant 1 value labelled by the version and Go toolchain inferd was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.ConfigReloads, m.ConfigLastReloadSuccessful, m.ConfigLastReloadTimestamp, m.ModelLoads, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
