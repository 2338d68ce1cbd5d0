package tracing_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/route"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tracing"
	"github.com/inferd/inferd/tracing/span"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// memory is an in-memory exporter that keeps its spans when a generation shuts down (the
// SDK's resets itself on Shutdown).
type memory struct{ *tracetest.InMemoryExporter }

func (memory) Shutdown(context.Context) error { return nil }

// newTracing returns tracing on at ratio, exporting to mem.
func newTracing(t *testing.T, ratio float64, node string) (*tracing.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	mem := tracetest.NewInMemoryExporter()
	tr := tracing.New(quiet, tracing.Options{
		Getenv:   func(string) string { return "" },
		Exporter: func(tracing.Settings) (sdktrace.SpanExporter, error) { return memory{mem}, nil },
	})
	if err := tr.Apply(tracing.Settings{Endpoint: "http://collector.invalid:4318", Protocol: "http", SamplingRatio: ratio, Node: node, Version: "test"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close(context.Background()) })
	return tr, mem
}

// mlpServer serves the generated MLP through the real engine, scheduler and API; modelTOML
// is its model.toml.
func mlpServer(t *testing.T, modelTOML string) *api.Server {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "mlp/1/model.onnx", testmodels.MLP())
	testutil.WriteFile(t, dir, "mlp/model.toml", []byte(modelTOML))
	rt, err := ort.New(ort.RuntimeOptions{}, quiet)
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	repo := models.New(dir, rt, models.Defaults{Instances: 1, Cores: 2}, quiet)
	if err := repo.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	sched := scheduler.New(quiet)
	srv := api.New(repo, sched, api.Options{Name: "inferd", Version: "test", Settings: func() *api.Settings { return &api.Settings{MaxRequestBytes: 1 << 20} }}, quiet)
	srv.SetPhase(api.PhaseServing)
	t.Cleanup(func() {
		_ = sched.Close(context.Background())
		repo.Close(context.Background())
		rt.Close()
	})
	return srv
}

const oneRow = `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`

// traceparent is a sampled W3C traceparent of trace n, from a client span of its own.
func traceparent(n int) (header string, tid trace.TraceID, parent trace.SpanID) {
	header = fmt.Sprintf("00-%032x-%016x-01", n+0x1000, n+0x2000)
	tid, _ = trace.TraceIDFromHex(fmt.Sprintf("%032x", n+0x1000))
	parent, _ = trace.SpanIDFromHex(fmt.Sprintf("%016x", n+0x2000))
	return header, tid, parent
}

func post(t *testing.T, url, tp string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(oneRow))
	if err != nil {
		t.Error(err)
		return nil
	}
	if tp != "" {
		req.Header.Set("traceparent", tp)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
	return resp
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func byName(spans tracetest.SpanStubs, tid trace.TraceID, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.SpanContext.TraceID() == tid && s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// TestSpanTreeAndBatchLinks sends four requests, each with its client's traceparent, that the
// model's preferred batch size of 4 runs as one batch, and checks each request's tree
// (server span under the client's span; decode, queue, encode under it), the attributes, and
// the links between the queue spans and the one batch span.
func TestSpanTreeAndBatchLinks(t *testing.T) {
	tr, mem := newTracing(t, 1, "node-1")
	srv := mlpServer(t, "max_batch_size = 8\n[dynamic_batching]\npreferred_batch_sizes = [4]\nmax_queue_delay = \"30s\"\nadaptive_delay = false\n")
	hs := httptest.NewServer(tr.Wrap(srv))
	defer hs.Close()

	const n = 4
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp, _, _ := traceparent(i)
			post(t, hs.URL+"/v2/models/mlp/infer", tp)
		}()
	}
	wg.Wait()
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := mem.GetSpans()

	var batches []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "batch" {
			batches = append(batches, s)
		}
	}
	if len(batches) != 1 {
		t.Fatalf("%d batch spans, want 1 (the preferred batch of 4)", len(batches))
	}
	b := batches[0]
	if got := attr(b, tracing.AttrBatchReqs).AsInt64(); got != n {
		t.Errorf("batch span: %d requests, want %d", got, n)
	}
	if attr(b, tracing.AttrBatchRows).AsInt64() != n || attr(b, tracing.AttrInstance).AsInt64() != 0 ||
		attr(b, tracing.AttrModel).AsString() != "mlp" || attr(b, tracing.AttrVersion).AsString() != "1" {
		t.Errorf("batch span attributes %v", b.Attributes)
	}
	// The batch's parent is one request's span, and it links the others'.
	if len(b.Links) != n-1 {
		t.Errorf("batch span has %d links, want one per request but its parent (%d)", len(b.Links), n-1)
	}
	linked := map[trace.SpanID]bool{b.Parent.SpanID(): true}
	for _, l := range b.Links {
		linked[l.SpanContext.SpanID()] = true
	}
	for i := range n {
		_, tid, client := traceparent(i)
		servers := byName(spans, tid, "POST /v2/models/{model}/infer")
		if len(servers) != 1 {
			t.Fatalf("trace %d: %d server spans, want 1", i, len(servers))
		}
		s := servers[0]
		if s.Parent.SpanID() != client || !s.Parent.IsRemote() || s.SpanKind != trace.SpanKindServer {
			t.Errorf("trace %d: server span's parent %v (remote %v), kind %v; want the client's span %v", i, s.Parent.SpanID(), s.Parent.IsRemote(), s.SpanKind, client)
		}
		for key, want := range map[string]string{tracing.AttrModel: "mlp", tracing.AttrVersion: "1", tracing.AttrProtocol: "http"} {
			if got := attr(s, key).AsString(); got != want {
				t.Errorf("trace %d: server span %s = %q, want %q", i, key, got, want)
			}
		}
		if attr(s, tracing.AttrStatus).AsInt64() != 200 || attr(s, tracing.AttrRespBytes).AsInt64() <= 0 ||
			attr(s, tracing.AttrRequestBytes).AsInt64() != int64(len(oneRow)) {
			t.Errorf("trace %d: server span status/bytes %v", i, s.Attributes)
		}
		if s.Resource.Set().Len() == 0 {
			t.Errorf("trace %d: no resource", i)
		} else if v, _ := s.Resource.Set().Value("inferd.node"); v.AsString() != "node-1" {
			t.Errorf("trace %d: resource inferd.node = %q", i, v.AsString())
		}
		if !linked[s.SpanContext.SpanID()] {
			t.Errorf("trace %d: the request's span is neither the batch span's parent nor linked from it", i)
		}
		for _, name := range []string{"decode", "queue", "encode"} {
			kids := byName(spans, tid, name)
			if len(kids) != 1 || kids[0].Parent.SpanID() != s.SpanContext.SpanID() {
				t.Errorf("trace %d: %d %q spans, want 1 under the server span", i, len(kids), name)
			}
		}
		if q := byName(spans, tid, "queue"); len(q) == 1 {
			if len(q[0].Links) != 1 || q[0].Links[0].SpanContext.SpanID() != b.SpanContext.SpanID() {
				t.Errorf("trace %d: queue span links %v, want the batch span", i, q[0].Links)
			}
		}
	}
	if len(linked) != n {
		t.Errorf("the batch span's parent and links name %d distinct spans, want the %d requests'", len(linked), n)
	}
}

// TestSampling: at ratio 0 a request without a traceparent, or with one that says not
// sampled, is not traced, and one with a sampled traceparent is.
func TestSampling(t *testing.T) {
	tr, mem := newTracing(t, 0, "node-1")
	hs := httptest.NewServer(tr.Wrap(mlpServer(t, "max_batch_size = 8\n")))
	defer hs.Close()
	post(t, hs.URL+"/v2/models/mlp/infer", "")
	post(t, hs.URL+"/v2/models/mlp/infer", fmt.Sprintf("00-%032x-%016x-00", 0x77, 0x88))
	tp, tid, _ := traceparent(9)
	post(t, hs.URL+"/v2/models/mlp/infer", tp)
	_ = tr.Close(context.Background())
	for _, s := range mem.GetSpans() {
		if s.SpanContext.TraceID() != tid {
			t.Errorf("span %q of trace %v recorded; only the sampled parent's trace should be", s.Name, s.SpanContext.TraceID())
		}
	}
	if len(byName(mem.GetSpans(), tid, "batch")) != 1 {
		t.Errorf("the request with a sampled traceparent was not traced: %d spans", len(mem.GetSpans()))
	}
}

// TestForwardIsOneTrace routes a request through node A's router to node B, each traced on
// its own provider: B's server span is a child of A's client span, which is a child of A's
// server span, under the client's; one trace.
func TestForwardIsOneTrace(t *testing.T) {
	trA, memA := newTracing(t, 1, "a")
	trB, memB := newTracing(t, 1, "b")
	b := httptest.NewServer(trB.Wrap(mlpServer(t, "max_batch_size = 8\n")))
	defer b.Close()
	members := staticMembers{
		{Name: "a", Local: true, HTTPAddr: "127.0.0.1:1", Serving: cluster.ServingReady, Liveness: cluster.LivenessAlive},
		{Name: "b", HTTPAddr: strings.TrimPrefix(b.URL, "http://"), Serving: cluster.ServingReady, Liveness: cluster.LivenessAlive,
			Catalog: cluster.Catalog{Generation: 1, Models: []cluster.CatalogVersion{{Model: "mlp", Version: "1", State: "ready"}}}},
	}
	rt := route.New(http.NotFoundHandler(), members, nil, route.Options{Node: "a"}, quiet)
	defer rt.Close()
	a := httptest.NewServer(trA.Wrap(rt))
	defer a.Close()

	tp, tid, client := traceparent(42)
	resp := post(t, a.URL+"/v2/models/mlp/infer", tp)
	if resp != nil && resp.Header.Get("Inferd-Served-By") != "b" {
		t.Fatalf("served by %q, want b", resp.Header.Get("Inferd-Served-By"))
	}
	_ = trA.Close(context.Background())
	_ = trB.Close(context.Background())
	spansA, spansB := memA.GetSpans(), memB.GetSpans()
	serverA := byName(spansA, tid, "POST /v2/models/{model}/infer")
	fwd := byName(spansA, tid, "forward")
	serverB := byName(spansB, tid, "POST /v2/models/{model}/infer")
	if len(serverA) != 1 || len(fwd) != 1 || len(serverB) != 1 {
		t.Fatalf("trace %v: %d server spans on a, %d forward spans, %d server spans on b; want 1 each", tid, len(serverA), len(fwd), len(serverB))
	}
	if serverA[0].Parent.SpanID() != client {
		t.Errorf("a's server span's parent is %v, want the client's span %v", serverA[0].Parent.SpanID(), client)
	}
	if fwd[0].Parent.SpanID() != serverA[0].SpanContext.SpanID() || fwd[0].SpanKind != trace.SpanKindClient {
		t.Errorf("forward span: parent %v kind %v, want a client span under a's server span", fwd[0].Parent.SpanID(), fwd[0].SpanKind)
	}
	if attr(fwd[0], "inferd.peer").AsString() != "b" || attr(fwd[0], "http.request.resend_count").AsInt64() != 0 ||
		attr(fwd[0], "http.response.status_code").AsInt64() != 200 {
		t.Errorf("forward span attributes %v", fwd[0].Attributes)
	}
	if serverB[0].Parent.SpanID() != fwd[0].SpanContext.SpanID() || !serverB[0].Parent.IsRemote() {
		t.Errorf("b's server span's parent is %v, want a's forward span %v", serverB[0].Parent.SpanID(), fwd[0].SpanContext.SpanID())
	}
	if attr(serverA[0], tracing.AttrServedBy).AsString() != "b" || attr(serverB[0], tracing.AttrForwardedBy).AsString() != "a" {
		t.Errorf("served_by on a %q, forwarded_by on b %q", attr(serverA[0], tracing.AttrServedBy).AsString(), attr(serverB[0], tracing.AttrForwardedBy).AsString())
	}
	if len(byName(spansB, tid, "batch")) != 1 {
		t.Errorf("b ran no traced batch")
	}
}

type staticMembers []cluster.Member

func (m staticMembers) Members() []cluster.Member { return append([]cluster.Member(nil), m...) }

// TestOffCostsNothing: with tracing off, the middleware, child spans and the scheduler hook
// allocate nothing per request.
func TestOffCostsNothing(t *testing.T) {
	tr := tracing.New(quiet, tracing.Options{})
	h := tr.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	req := httptest.NewRequest(http.MethodPost, "/v2/models/mlp/infer", bytes.NewReader(nil))
	req.Header.Set("traceparent", "00-00000000000000000000000000001000-0000000000002000-01")
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, req) }); n != 0 {
		t.Errorf("the middleware allocates %v times per request with tracing off", n)
	}
	ctx := req.Context()
	if n := testing.AllocsPerRun(100, func() {
		if tracing.Queue(ctx) != nil {
			t.Error("an untraced request got a queue trace")
		}
		tracing.SetVersion(ctx, "1")
		_, sp := span.Start(ctx, "decode")
		sp.End()
		_, sp = span.StartClient(ctx, "forward")
		sp.End()
	}); n != 0 {
		t.Errorf("the request hooks allocate %v times with tracing off", n)
	}
	if tr.Enabled() {
		t.Error("tracing on without an endpoint")
	}
}

// waitSpans polls until mem holds n spans.
func waitSpans(t *testing.T, mem *tracetest.InMemoryExporter, n int) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%d exported spans", n), func() bool { return len(mem.GetSpans()) >= n })
}

// TestHostileTraceContext: a malformed traceparent, or an oversized tracestate, is ignored: the
// request is served and traced as a new trace (a root span, at ratio 1).
func TestHostileTraceContext(t *testing.T) {
	tr, mem := newTracing(t, 1, "n")
	h := tr.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	for _, hdr := range []http.Header{
		{"Traceparent": {"not-a-traceparent"}},
		{"Traceparent": {"00-00000000000000000000000000000000-0000000000000000-01"}},
		{"Traceparent": {"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		{"Traceparent": {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "Tracestate": {strings.Repeat("k=v,", 5000)}},
	} {
		mem.Reset()
		req := httptest.NewRequest(http.MethodPost, "/v2/models/mlp/infer", nil)
		req.Header = hdr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			t.Errorf("%v: status %d", hdr, w.Code)
		}
		_ = tr.Close(context.Background())
		spans := mem.GetSpans()
		if len(spans) != 1 {
			t.Fatalf("%v: %d spans", hdr, len(spans))
		}
		if hdr.Get("Tracestate") == "" && spans[0].Parent.IsValid() {
			t.Errorf("%v: the span has parent %v, want a root", hdr, spans[0].Parent)
		}
		if n := spans[0].SpanContext.TraceState().Len(); n > 32 {
			t.Errorf("%v: a trace state of %d members kept", hdr, n)
		}
		if err := tr.Apply(tracing.Settings{Endpoint: "http://collector.invalid:4318", Protocol: "http", SamplingRatio: 1, Node: "n", Version: "test"}); err != nil {
			t.Fatal(err)
		}
	}
}

type oneSplit struct{ split route.Split }

func (s oneSplit) Split(string) (route.Split, bool) { return s.split, true }

// TestForwardRetryIsAnotherClientSpan: the split sends the request to b, which answers 503;
// the router retries on c. Each try is a client span under a's server span, numbered by
// http.request.resend_count, the failed one with an error status, and c's server span is the
// second try's child.
func TestForwardRetryIsAnotherClientSpan(t *testing.T) {
	trA, memA := newTracing(t, 1, "a")
	trC, memC := newTracing(t, 1, "c")
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"queue full"}`, http.StatusServiceUnavailable)
	}))
	defer b.Close()
	c := httptest.NewServer(trC.Wrap(mlpServer(t, "max_batch_size = 8\n")))
	defer c.Close()
	catalog := cluster.Catalog{Generation: 1, Models: []cluster.CatalogVersion{{Model: "mlp", Version: "1", State: "ready"}}}
	members := staticMembers{
		{Name: "a", Local: true, HTTPAddr: "127.0.0.1:1", Serving: cluster.ServingReady, Liveness: cluster.LivenessAlive},
		{Name: "b", HTTPAddr: strings.TrimPrefix(b.URL, "http://"), Serving: cluster.ServingReady, Liveness: cluster.LivenessAlive, Catalog: catalog},
		{Name: "c", HTTPAddr: strings.TrimPrefix(c.URL, "http://"), Serving: cluster.ServingReady, Liveness: cluster.LivenessAlive, Catalog: catalog},
	}
	rt := route.New(http.NotFoundHandler(), members, oneSplit{route.Split{Targets: []route.Target{{Node: "b", Weight: 100}}}}, route.Options{Node: "a"}, quiet)
	defer rt.Close()
	a := httptest.NewServer(trA.Wrap(rt))
	defer a.Close()

	tp, tid, _ := traceparent(5)
	if resp := post(t, a.URL+"/v2/models/mlp/infer", tp); resp != nil && resp.Header.Get("Inferd-Served-By") != "c" {
		t.Fatalf("served by %q, want c after b's 503", resp.Header.Get("Inferd-Served-By"))
	}
	_ = trA.Close(context.Background())
	_ = trC.Close(context.Background())
	fwd := byName(memA.GetSpans(), tid, "forward")
	if len(fwd) != 2 {
		t.Fatalf("%d forward spans, want 2 (b, then c)", len(fwd))
	}
	slices.SortFunc(fwd, func(x, y tracetest.SpanStub) int {
		return int(attr(x, "http.request.resend_count").AsInt64() - attr(y, "http.request.resend_count").AsInt64())
	})
	server := byName(memA.GetSpans(), tid, "POST /v2/models/{model}/infer")[0]
	for i, want := range []struct {
		peer   string
		status int64
		failed bool
	}{{"b", 503, true}, {"c", 200, false}} {
		f := fwd[i]
		if attr(f, "inferd.peer").AsString() != want.peer || attr(f, "http.request.resend_count").AsInt64() != int64(i) ||
			attr(f, "http.response.status_code").AsInt64() != want.status || (f.Status.Code == codes.Error) != want.failed ||
			f.Parent.SpanID() != server.SpanContext.SpanID() {
			t.Errorf("try %d: peer %q resend_count %d status %d span status %v parent %v; want %s, %d, %d, failed %v, under a's server span",
				i, attr(f, "inferd.peer").AsString(), attr(f, "http.request.resend_count").AsInt64(), attr(f, "http.response.status_code").AsInt64(), f.Status, f.Parent.SpanID(), want.peer, i, want.status, want.failed)
		}
	}
	if sc := byName(memC.GetSpans(), tid, "POST /v2/models/{model}/infer"); len(sc) != 1 || sc[0].Parent.SpanID() != fwd[1].SpanContext.SpanID() {
		t.Errorf("c's server spans %d, parent %v; want one under the second try", len(sc), sc)
	}
}
