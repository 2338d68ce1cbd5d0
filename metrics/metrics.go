// Package metrics owns inferd's Prometheus registry and the metrics that more than one part of
// the daemon updates: build info, configuration reloads and model loads, with the Go runtime
// and process collectors; and the collectors that read the inference statistics and the model
// states at scrape time (Inference, ModelStates), node_exporter style: descriptors built once,
// values read when Prometheus asks, nothing added to the request path. Names follow
// inferd_<subsystem>_<name>_<unit>, in base units (seconds); counters end in _total. Every
// metric is listed in docs/metrics.md. It imports no other inferd package (sources are plain
// functions the daemon passes in) and holds no global state: the daemon creates one Metrics
// and hands it around.
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
	// ConfigLastReloadSuccessTimestamp is when the configuration was last loaded successfully:
	// at start, or by a reload that applied or found nothing to change; in Unix seconds.
	ConfigLastReloadSuccessTimestamp prometheus.Gauge
	// ModelLoads counts load attempts of model versions by model and result ("success",
	// "failure"). A failed load of a new generation leaves the previous one serving.
	ModelLoads *prometheus.CounterVec
	// ModelLastLoadTimestamp is when a model's last load attempt with each result finished,
	// in Unix seconds.
	ModelLastLoadTimestamp *prometheus.GaugeVec
	// LimitRejections counts requests refused by a configured limit, by the limit's key
	// ("max_request_bytes", "max_elements", "read_timeout", ...).
	LimitRejections *prometheus.CounterVec
	// AuthDenied counts requests refused for their token, by reason: "missing", "invalid"
	// (401) or "scope" (403).
	AuthDenied *prometheus.CounterVec
	// SecretReloads counts re-reads of changed TLS files, by result.
	SecretReloads *prometheus.CounterVec
	// WorkerRestarts counts model worker processes that ended without being asked to, by
	// model, version and reason class (engine.ExitClasses).
	WorkerRestarts *prometheus.CounterVec
	// GRPCRequests counts answered gRPC calls by service, method and code: every unary call,
	// and every request answered on a ModelStreamInfer stream (method ModelStreamInfer).
	GRPCRequests *prometheus.CounterVec
	// GRPCRequestDuration is the time from a gRPC request's arrival to its answer, by service
	// and method, whatever its code (decoding and encoding included).
	GRPCRequestDuration *prometheus.HistogramVec
	// GRPCLimitRejections and GRPCAuthDenied are LimitRejections and AuthDenied for gRPC.
	GRPCLimitRejections *prometheus.CounterVec
	GRPCAuthDenied      *prometheus.CounterVec
}

// grpcBuckets are the bounds of inferd_grpc_request_duration_seconds: those of the inference
// duration histograms, 50µs to 10s.
func grpcBuckets() []float64 {
	return []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}
}

// BuildInfo is what inferd_build_info reports.
type BuildInfo struct {
	Version  string // inferd's version (git describe)
	Revision string // the commit it was built from
	// GoVersion is the Go toolchain; empty means this binary's (runtime.Version()).
	GoVersion string
	// ORTVersion is the version of the ONNX Runtime library loaded; empty when none is.
	ORTVersion string
}

// New registers the shared metrics, inferd_build_info, and the Go and process collectors.
func New(build BuildInfo) *Metrics {
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
		ConfigLastReloadSuccessTimestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inferd_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (at start, or by a reload that applied or found nothing to change), in Unix seconds.",
		}),
		ModelLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inferd_model_loads_total",
			Help: "Load attempts of model versions, by model and result (success or failure).",
		}, []string{"model", "result"}),
		ModelLastLoadTimestamp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inferd_model_last_load_timestamp_seconds",
			Help: "When the last load attempt of a model with this result finished, in Unix seconds.",
		}, []string{"model", "result"}),
	}
	m.LimitRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_http_limit_rejections_total",
		Help: "Requests refused because they went over a configured limit, by the limit's configuration key.",
	}, []string{"limit"})
	m.AuthDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_http_auth_denied_total",
		Help: "Requests refused for their bearer token, by reason: missing or invalid (401), scope (403).",
	}, []string{"reason"})
	m.SecretReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_secret_reloads_total",
		Help: "Re-reads of changed certificate files, by kind (tls) and result (success or failure; a failure keeps the previous ones).",
	}, []string{"kind", "result"})
	m.WorkerRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_worker_restarts_total",
		Help: "Model worker processes that ended without being asked to (and were started again, unless the version was given up), by model, version and reason: signal, oom, deadline or exit.",
	}, []string{"model", "version", "reason"})
	m.GRPCRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_grpc_requests_total",
		Help: "gRPC calls answered, by service, method and status code; each request answered on a ModelStreamInfer stream counts once.",
	}, []string{"service", "method", "code"})
	m.GRPCRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "inferd_grpc_request_duration_seconds",
		Help:    "Time from a gRPC request's arrival to its answer, by service and method, whatever its code.",
		Buckets: grpcBuckets(),
	}, []string{"service", "method"})
	m.GRPCLimitRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_grpc_limit_rejections_total",
		Help: "gRPC requests refused because they went over a configured limit, by the limit's configuration key.",
	}, []string{"limit"})
	m.GRPCAuthDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "inferd_grpc_auth_denied_total",
		Help: "gRPC calls refused for their bearer token, by reason: missing or invalid (UNAUTHENTICATED), scope (PERMISSION_DENIED).",
	}, []string{"reason"})
	reg.MustRegister(m.LimitRejections, m.AuthDenied, m.SecretReloads, m.WorkerRestarts,
		m.GRPCRequests, m.GRPCRequestDuration, m.GRPCLimitRejections, m.GRPCAuthDenied)
	m.ConfigLastReloadSuccessful.Set(1)
	if build.GoVersion == "" {
		build.GoVersion = runtime.Version()
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "inferd_build_info",
		Help: "A metric with a constant 1 value labelled by the version and revision inferd was built from, its Go toolchain and the ONNX Runtime version it loaded.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision,
			"goversion": build.GoVersion, "ort_version": build.ORTVersion},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.ConfigReloads, m.ConfigLastReloadSuccessful, m.ConfigLastReloadTimestamp,
		m.ConfigLastReloadSuccessTimestamp, m.ModelLoads, m.ModelLastLoadTimestamp, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
