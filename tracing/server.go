package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/cluster/route"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tracing/span"
)

// Names of the attributes inferd puts on its spans (docs/tracing.md).
const (
	AttrProtocol     = "inferd.protocol"
	AttrModel        = "inferd.model"
	AttrVersion      = "inferd.model.version"
	AttrServedBy     = "inferd.served_by"
	AttrForwardedBy  = "inferd.forwarded_by"
	AttrBatchReqs    = "inferd.batch.requests"
	AttrBatchRows    = "inferd.batch.rows"
	AttrInstance     = "inferd.instance"
	AttrPeer         = "inferd.peer"
	AttrRequestBytes = "http.request.body.size"
	AttrRespBytes    = "http.response.body.size"
	AttrStatus       = "http.response.status_code"
	AttrGRPCStatus   = "rpc.grpc.status_code"
)

// Headers that name nodes on a routed request (cluster/route's defaults).
const (
	headerServedBy    = "Inferd-Served-By"
	headerForwardedBy = "Inferd-Forwarded-By"
)

var propagator = propagation.TraceContext{}

// begin holds the generation in force for one request; nil when tracing is off.
func (t *Tracing) begin() *generation {
	for {
		g := t.cur.Load()
		if g == nil || g.hold() {
			return g
		}
	}
}

// startServer starts the server span of an inference request on g, the parent read from
// carrier: a sampled traceparent is always traced, and one that says not sampled is not.
func (g *generation) startServer(ctx context.Context, carrier propagation.TextMapCarrier, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx = propagator.Extract(ctx, carrier)
	ctx, sp := g.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return span.WithTracer(ctx, g.tracer), sp
}

// Wrap traces the inference requests (POST .../infer) that next serves: a server span per
// request, with the model, the version the API resolved, the status, the bytes each way and
// the node that served it. Other requests, and every request while tracing is off, go to
// next untouched.
func (t *Tracing) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !t.Enabled() {
			next.ServeHTTP(w, r)
			return
		}
		model, route, ok := inferRoute(r.URL.EscapedPath())
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		g := t.begin()
		if g == nil {
			next.ServeHTTP(w, r)
			return
		}
		defer g.release()
		ctx, sp := g.startServer(r.Context(), propagation.HeaderCarrier(r.Header), "POST "+route,
			attribute.String(AttrProtocol, "http"), attribute.String(AttrModel, model),
			attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path),
			attribute.String("http.route", route))
		defer sp.End()
		if !sp.IsRecording() {
			// Not sampled: its context still goes to peers (sampled=0), nothing is recorded.
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		if r.ContentLength >= 0 {
			sp.SetAttributes(attribute.Int64(AttrRequestBytes, r.ContentLength))
		}
		if by := r.Header.Get(headerForwardedBy); by != "" {
			sp.SetAttributes(attribute.String(AttrForwardedBy, by))
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r.WithContext(ctx))
		code := rec.code()
		sp.SetAttributes(attribute.Int(AttrStatus, code), attribute.Int64(AttrRespBytes, rec.bytes))
		if by := w.Header().Get(headerServedBy); by != "" {
			sp.SetAttributes(attribute.String(AttrServedBy, by))
		}
		if code >= 500 {
			sp.SetStatus(codes.Error, http.StatusText(code))
		}
	})
}

// inferRoute is the model of an inference path (cluster/route's parsing, escapes and all) and
// its route template, a span name of bounded cardinality.
func inferRoute(escaped string) (model, tmpl string, ok bool) {
	model, version, ok := route.ParseInferPath(escaped)
	switch {
	case !ok:
		return "", "", false
	case version != "":
		return model, "/v2/models/{model}/versions/{version}/infer", true
	}
	return model, "/v2/models/{model}/infer", true
}

// recorder remembers the status and size of a traced response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush passes a flush on (http.ResponseController also finds it through Unwrap).
func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// StartRPC starts the server span of one gRPC inference request (a unary call, or one request
// of a stream), its parent read from the call's metadata; end closes it with the request's
// error. end is nil when tracing is off.
func (t *Tracing) StartRPC(ctx context.Context, method, model string) (_ context.Context, end func(err error)) {
	if !t.Enabled() {
		return ctx, nil
	}
	g := t.begin()
	if g == nil {
		return ctx, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ctx, sp := g.startServer(ctx, mdCarrier(md), "inference.GRPCInferenceService/"+method,
		attribute.String(AttrProtocol, "grpc"), attribute.String(AttrModel, model),
		attribute.String("rpc.system", "grpc"), attribute.String("rpc.method", method))
	return ctx, func(err error) {
		defer g.release()
		if sp.IsRecording() {
			code := status.Code(err)
			sp.SetAttributes(attribute.Int(AttrGRPCStatus, int(code)))
			if err != nil {
				sp.SetStatus(codes.Error, code.String())
			}
		}
		sp.End()
	}
}

// mdCarrier reads a trace context from gRPC metadata (keys are lower case there).
type mdCarrier metadata.MD

func (c mdCarrier) Get(key string) string {
	if vs := metadata.MD(c).Get(key); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// SetVersion records on the request's span the model version that served it.
func SetVersion(ctx context.Context, version string) {
	if sp := trace.SpanFromContext(ctx); sp.IsRecording() {
		sp.SetAttributes(attribute.String(AttrVersion, version))
	}
}

// Queue returns the scheduler's hook (scheduler.Request.Trace) for the request of ctx: the
// queue wait and the batch run as spans; nil when the request is not traced.
func Queue(ctx context.Context) scheduler.Trace {
	sp := trace.SpanFromContext(ctx)
	if !sp.IsRecording() {
		return nil
	}
	t, ok := span.Tracer(ctx)
	if !ok {
		return nil
	}
	return &requestTrace{sc: sp.SpanContext(), tracer: t}
}
