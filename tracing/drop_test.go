package tracing_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/inferd/inferd/tracing"
	"github.com/inferd/inferd/tracing/span"
)

// silentCollector accepts connections and never answers: a collector that hangs.
func silentCollector(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestDropsWhenTheCollectorNeverAnswers traces requests while the collector (real OTLP/HTTP
// and OTLP/gRPC exporters, a listener that never answers) hangs: every request is served,
// the spans that do not fit the queue are counted as dropped, those of batches that time out
// too, and neither goroutines nor the heap grow from one round of requests to the next.
func TestDropsWhenTheCollectorNeverAnswers(t *testing.T) {
	for _, protocol := range []string{"http", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			env := map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
				"OTEL_BSP_EXPORT_TIMEOUT": "50", "OTEL_BSP_SCHEDULE_DELAY": "5"}
			tr := tracing.New(quiet, tracing.Options{Getenv: func(k string) string { return env[k] }})
			if err := tr.Apply(tracing.Settings{Endpoint: "http://" + silentCollector(t), Protocol: protocol, SamplingRatio: 1, Node: "n", Version: "test"}); err != nil {
				t.Fatal(err)
			}
			defer tr.Close(context.Background())
			h := tr.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, sp := span.Start(r.Context(), "decode")
				sp.End()
			}))
			round := func(n int) {
				for range n {
					w := httptest.NewRecorder()
					h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v2/models/mlp/infer", nil))
					if w.Code != http.StatusOK {
						t.Fatalf("status %d", w.Code)
					}
				}
			}
			measure := func() (int, uint64) {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return runtime.NumGoroutine(), ms.HeapAlloc
			}
			round(2000)
			g1, h1 := measure()
			round(8000)
			g2, h2 := measure()
			cnt := tr.Counters()
			if cnt.DroppedQueueFull.Load() == 0 {
				t.Errorf("no span dropped for a full queue after 10000 requests (2 spans each) against a queue of 64")
			}
			if cnt.Exported.Load() != 0 {
				t.Errorf("%d spans exported to a collector that never answers", cnt.Exported.Load())
			}
			if g2 > g1+4 {
				t.Errorf("goroutines grew from %d to %d while the collector hung", g1, g2)
			}
			if h2 > h1+8<<20 {
				t.Errorf("heap grew from %d to %d bytes while the collector hung", h1, h2)
			}
			if st, ok := tr.State(); !ok || st.Dropped == 0 {
				t.Errorf("state %+v", st)
			}
		})
	}
}

// TestGRPCMetadataParent: a gRPC request's server span takes its parent from the call's
// traceparent metadata.
func TestGRPCMetadataParent(t *testing.T) {
	tr, mem := newTracing(t, 0, "n")
	tp, tid, client := traceparent(7)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", tp))
	ctx, end := tr.StartRPC(ctx, "ModelInfer", "mlp")
	if end == nil {
		t.Fatal("StartRPC did not trace")
	}
	_, child := span.Start(ctx, "decode")
	child.End()
	end(nil)
	_ = tr.Close(context.Background())
	servers := byName(mem.GetSpans(), tid, "inference.GRPCInferenceService/ModelInfer")
	if len(servers) != 1 || servers[0].Parent.SpanID() != client || attr(servers[0], tracing.AttrProtocol).AsString() != "grpc" {
		t.Fatalf("server spans %+v, want one under the client's span %v", servers, client)
	}
	if d := byName(mem.GetSpans(), tid, "decode"); len(d) != 1 || d[0].Parent.SpanID() != servers[0].SpanContext.SpanID() {
		t.Errorf("decode spans %v", d)
	}
}

// TestReloadKeepsInFlightSpans swaps the configuration while a request is traced: the
// request's spans, started on the old generation, still reach its exporter.
func TestReloadKeepsInFlightSpans(t *testing.T) {
	tr, mem := newTracing(t, 1, "n")
	started, finish := make(chan struct{}), make(chan struct{})
	h := tr.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-finish
		_, sp := span.Start(r.Context(), "encode")
		sp.End()
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v2/models/mlp/infer", nil))
	}()
	<-started
	// Tracing off, as a reload that empties tracing.endpoint does.
	if err := tr.Apply(tracing.Settings{}); err != nil {
		t.Fatal(err)
	}
	close(finish)
	<-done
	waitSpans(t, mem, 2)
}
