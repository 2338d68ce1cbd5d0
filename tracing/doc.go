// Package tracing owns inferd's OpenTelemetry tracing: the tracer provider built from
// [tracing] (an OTLP/HTTP or OTLP/gRPC exporter, a parent-based ratio sampler, the node's
// resource), swapped on a configuration reload while the requests the old one traces finish
// on it; the export queue, bounded, which drops and counts spans rather than wait for a
// collector that is down or slow; the server span of every inference request, its parent read
// from W3C traceparent/tracestate in HTTP headers or gRPC metadata; and the scheduler's hook
// (scheduler.Trace) that turns queue waits and batch runs into spans. Child spans are started
// through tracing/span, which the front ends and the router use without knowing the
// provider. With tracing off (no endpoint) nothing here runs on the request path but one
// atomic load. It reads no configuration file: the daemon passes Settings.
package tracing
