package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/inferd/inferd/scheduler"
)

// requestTrace is a traced request's scheduler.Trace: its queue wait becomes a "queue" span
// under the request's span, linked to the batch it ran in; the first traced request of a
// batch starts the batch's "batch" span, a child of its own request span, linked to every
// traced request of the batch.
type requestTrace struct {
	sc     trace.SpanContext // the request's server span
	tracer trace.Tracer
}

func (r *requestTrace) parent() context.Context {
	return trace.ContextWithSpanContext(context.Background(), r.sc)
}

// StartBatch implements scheduler.Trace.
func (r *requestTrace) StartBatch(info scheduler.BatchInfo, traces []scheduler.Trace) scheduler.BatchTrace {
	// The first request is the parent; a link to it too would hide the parent in viewers that
	// fold links into references (Jaeger types the parent FOLLOWS_FROM then).
	links := make([]trace.Link, 0, len(traces))
	for _, t := range traces {
		if rt, ok := t.(*requestTrace); ok && rt != r {
			links = append(links, trace.Link{SpanContext: rt.sc})
		}
	}
	_, sp := r.tracer.Start(r.parent(), "batch", trace.WithLinks(links...), trace.WithAttributes(
		attribute.String(AttrModel, info.Model), attribute.String(AttrVersion, info.Version),
		attribute.Int(AttrInstance, info.Instance), attribute.Int(AttrBatchReqs, info.Requests),
		attribute.Int64(AttrBatchRows, info.Rows)))
	return batchTrace{sp}
}

// Waited implements scheduler.Trace.
func (r *requestTrace) Waited(arrived, started time.Time, b scheduler.BatchTrace) {
	opts := []trace.SpanStartOption{trace.WithTimestamp(arrived)}
	if bt, ok := b.(batchTrace); ok {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: bt.span.SpanContext()}))
	}
	_, sp := r.tracer.Start(r.parent(), "queue", opts...)
	sp.End(trace.WithTimestamp(started))
}

// batchTrace is the span of one batch's run.
type batchTrace struct{ span trace.Span }

func (b batchTrace) End(err error) {
	if err != nil {
		b.span.RecordError(err)
		b.span.SetStatus(codes.Error, err.Error())
	}
	b.span.End()
}
