package config

import (
	"net/url"
	"strings"
)

// Tracing configures OpenTelemetry tracing of inference requests (docs/tracing.md). Every key
// changes live: a reload swaps the exporter while the requests already traced finish on the
// old one.
type Tracing struct {
	Endpoint           string   `toml:"endpoint" doc:"OTLP collector base URL, http://collector:4318 for OTLP/HTTP (/v1/traces is appended) or http://collector:4317 for gRPC; empty = tracing off"`
	Protocol           string   `toml:"protocol" check:"oneof=http|grpc" doc:"OTLP transport: http (OTLP/HTTP protobuf) or grpc"`
	SamplingRatio      float64  `toml:"sampling_ratio" check:"min=0" doc:"share (0 to 1) of requests traced that arrive without a sampled traceparent; one with a sampled traceparent is always traced"`
	ServiceName        string   `toml:"service_name" doc:"service.name of the spans; empty = OTEL_SERVICE_NAME, else inferd"`
	ResourceAttributes []string `toml:"resource_attributes" doc:"extra resource attributes as key=value strings (over OTEL_RESOURCE_ATTRIBUTES); service.version and the node name are always set"`
}

// tracingChecks are the [tracing] rules a tag cannot express.
func tracingChecks(c *Config, bad func(key, format string, args ...any)) {
	t := c.Tracing
	if t.SamplingRatio > 1 {
		bad("tracing.sampling_ratio", "%v is more than 1: a share of the requests", t.SamplingRatio)
	}
	if t.Endpoint != "" {
		u, err := url.Parse(t.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			bad("tracing.endpoint", "%q is not an http:// or https:// URL such as http://collector:4318", t.Endpoint)
		}
	}
	for _, kv := range t.ResourceAttributes {
		if k, _, ok := strings.Cut(kv, "="); !ok || strings.TrimSpace(k) == "" {
			bad("tracing.resource_attributes", "%q is not key=value", kv)
		}
	}
}

// defaultTracing is off (no endpoint); once an endpoint is set, every request is traced.
func defaultTracing() Tracing { return Tracing{Protocol: "http", SamplingRatio: 1} }
