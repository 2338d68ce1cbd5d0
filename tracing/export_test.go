package tracing_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/tracing"
)

// otlpCollector is an OTLP/HTTP receiver: it decodes every export and keeps, per span, its
// name and its resource's attributes.
type otlpCollector struct {
	srv *httptest.Server

	mu    sync.Mutex
	paths []string
	spans []exported
}

type exported struct {
	name     string
	resource map[string]string
}

func newOTLPCollector(t *testing.T) *otlpCollector {
	c := &otlpCollector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.paths = append(c.paths, r.URL.Path)
		for _, rs := range req.ResourceSpans {
			res := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				res[kv.Key] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, exported{name: s.Name, resource: res})
				}
			}
		}
		c.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *otlpCollector) received() ([]exported, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]exported(nil), c.spans...), append([]string(nil), c.paths...)
}

// TestOTLPExportAndReload exports over real OTLP/HTTP to a receiver that decodes the protobuf,
// with the configured service name and resource attributes and the node's, then reconfigures
// to another collector under a base path: the next request's spans go there, none to the first.
func TestOTLPExportAndReload(t *testing.T) {
	a, b := newOTLPCollector(t), newOTLPCollector(t)
	env := map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "10", "OTEL_RESOURCE_ATTRIBUTES": "rack=from-env,zone=z1"}
	tr := tracing.New(quiet, tracing.Options{Getenv: func(k string) string { return env[k] }})
	defer tr.Close(t.Context())
	h := tr.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	serve := func() {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v2/models/mlp/infer", nil))
	}
	if err := tr.Apply(tracing.Settings{Endpoint: a.srv.URL, Protocol: "http", SamplingRatio: 1, ServiceName: "edge-a",
		ResourceAttributes: []string{"rack=r1"}, Node: "n1", Version: "v9"}); err != nil {
		t.Fatal(err)
	}
	serve()
	testutil.WaitFor(t, 10*time.Second, "a span at collector a", func() bool { s, _ := a.received(); return len(s) > 0 })
	spans, paths := a.received()
	want := map[string]string{"service.name": "edge-a", "service.version": "v9", "inferd.node": "n1", "host.name": "n1", "rack": "r1", "zone": "z1"}
	for k, v := range want {
		if got := spans[0].resource[k]; got != v {
			t.Errorf("resource %s = %q, want %q (all: %v)", k, got, v, spans[0].resource)
		}
	}
	if spans[0].name != "POST /v2/models/{model}/infer" || paths[0] != "/v1/traces" {
		t.Errorf("span %q at %s", spans[0].name, paths[0])
	}

	if err := tr.Apply(tracing.Settings{Endpoint: b.srv.URL + "/otlp/", Protocol: "http", SamplingRatio: 1, Node: "n1", Version: "v9"}); err != nil {
		t.Fatal(err)
	}
	serve()
	testutil.WaitFor(t, 10*time.Second, "a span at collector b", func() bool { s, _ := b.received(); return len(s) > 0 })
	spansB, pathsB := b.received()
	if pathsB[0] != "/otlp/v1/traces" || spansB[0].resource["service.name"] != "inferd" {
		t.Errorf("collector b: path %s, service.name %q", pathsB[0], spansB[0].resource["service.name"])
	}
	if s, _ := a.received(); len(s) != 1 {
		t.Errorf("collector a got %d spans, want only the first request's", len(s))
	}
	if n := tr.Counters().Exported.Load(); n != 2 {
		t.Errorf("%d spans counted as exported, want 2", n)
	}
}
