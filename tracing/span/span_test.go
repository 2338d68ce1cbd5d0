package span

import (
	"context"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestStart: a traced context gets a child span of the kind asked for; a context without a
// span, or with a recording span of another tracer provider, gets a span that does nothing
// (ending it leaves the parent running).
func TestStart(t *testing.T) {
	mem := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(mem))
	defer tp.Shutdown(context.Background())
	ctx, parent := tp.Tracer("test").Start(context.Background(), "server")

	if _, sp := Start(context.Background(), "decode"); sp.IsRecording() {
		t.Error("a span started without a traced parent records")
	}
	_, foreign := Start(ctx, "decode")
	foreign.End()
	if !parent.IsRecording() {
		t.Fatal("ending the span Start returned for a foreign parent ended the parent")
	}

	ctx = WithTracer(ctx, tp.Tracer("test"))
	if !Traced(ctx) {
		t.Error("Traced is false for a recording span")
	}
	_, child := StartClient(ctx, "forward")
	h := http.Header{"Traceparent": {"00-11111111111111111111111111111111-2222222222222222-01"}}
	Inject(trace.ContextWithSpan(ctx, child), h)
	child.End()
	parent.End()
	spans := mem.GetSpans()
	if len(spans) != 2 || spans[0].Name != "forward" || spans[0].SpanKind != trace.SpanKindClient || spans[0].Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("spans %+v", spans)
	}
	want := "00-" + spans[0].SpanContext.TraceID().String() + "-" + spans[0].SpanContext.SpanID().String() + "-01"
	if got := h.Get("Traceparent"); got != want {
		t.Errorf("injected traceparent %q, want %q (the client span's, over the client's)", got, want)
	}

	kept := http.Header{"Traceparent": {"00-11111111111111111111111111111111-2222222222222222-01"}}
	Inject(context.Background(), kept)
	if kept.Get("Traceparent") != "00-11111111111111111111111111111111-2222222222222222-01" {
		t.Errorf("Inject without a trace context changed the header to %q", kept.Get("Traceparent"))
	}
}
