// Package span starts the child spans of a traced request (decode, queue, encode, a forward
// to a peer) and carries the W3C trace context onto outgoing requests. The tracing package
// puts the request's tracer into its context when it starts the server span; here every
// function first asks whether the request is traced (its span is recording), so that a
// request that is not traced, or a daemon with tracing off, pays a context lookup and nothing
// else: no allocation, no lock. It knows nothing of inferd's configuration or exporters.
package span

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

type tracerKey struct{}

// WithTracer returns ctx carrying t, the tracer of the request's spans (the tracing package
// calls it with the server span).
func WithTracer(ctx context.Context, t trace.Tracer) context.Context {
	return context.WithValue(ctx, tracerKey{}, t)
}

// Tracer is the tracer WithTracer put into ctx.
func Tracer(ctx context.Context) (trace.Tracer, bool) {
	t, ok := ctx.Value(tracerKey{}).(trace.Tracer)
	return t, ok
}

// Traced reports whether the request of ctx is traced: its span records.
func Traced(ctx context.Context) bool { return trace.SpanFromContext(ctx).IsRecording() }

// Start starts a child span of ctx's span when the request is traced; otherwise it returns
// ctx and a non-recording span, so that End and SetAttributes do nothing. Callers
// guard attribute building with IsRecording, which is what keeps an untraced request free of
// allocations.
func Start(ctx context.Context, name string) (context.Context, trace.Span) {
	return start(ctx, name, trace.SpanKindInternal)
}

// StartClient is Start for a span of a call to another service (a forward to a peer).
func StartClient(ctx context.Context, name string) (context.Context, trace.Span) {
	return start(ctx, name, trace.SpanKindClient)
}

func start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, parent
	}
	t, ok := Tracer(ctx)
	if !ok {
		// A recording span that is not ours: hand back one that does nothing, never the
		// parent, which the caller would end.
		return ctx, trace.SpanFromContext(context.Background())
	}
	return t.Start(ctx, name, trace.WithSpanKind(kind))
}

// Inject writes ctx's trace context (traceparent, tracestate) into h, replacing what h had,
// when ctx has one: a request through two nodes is then one trace. Without one, h is left as
// it is, so a traceparent passes through a node that does not trace.
func Inject(ctx context.Context, h http.Header) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
	}
}
