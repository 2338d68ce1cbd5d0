package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// TestTraceContext: a record logged with a traced request's context carries its trace_id and
// span_id; one logged without, or through WithAttrs and WithGroup, keeps its own attributes.
func TestTraceContext(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(TraceContext(slog.NewJSONHandler(&buf, nil))).With("component", "api")
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))

	log.ErrorContext(ctx, "inference failed", "model", "mlp")
	log.Info("no request")
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("%d lines: %s", len(lines), buf.String())
	}
	var traced, plain map[string]any
	if err := json.Unmarshal(lines[0], &traced); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(lines[1], &plain); err != nil {
		t.Fatal(err)
	}
	if traced["trace_id"] != tid.String() || traced["span_id"] != sid.String() || traced["model"] != "mlp" || traced["component"] != "api" {
		t.Errorf("traced line %v", traced)
	}
	if _, ok := plain["trace_id"]; ok {
		t.Errorf("a line without a span has a trace_id: %v", plain)
	}
}
