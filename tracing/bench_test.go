package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tracing"
	"github.com/inferd/inferd/tracing/span"
)

// BenchmarkRequestSpans is the cost of tracing one inference request as inferd traces it: the
// server span, decode, the scheduler's queue and batch hooks, encode, exported over real
// OTLP/HTTP to a receiver in this process that discards what it reads. cpu-µs/op is the
// process's CPU time (every goroutine: the request, the export, the receiver) per request,
// which is what tracing takes from a busy server; compare with "off".
func BenchmarkRequestSpans(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer sink.Close()
	for _, c := range []struct {
		name  string
		on    bool
		ratio float64
	}{{"off", false, 0}, {"on", true, 1}, {"ratio0", true, 0}} {
		b.Run(c.name, func(b *testing.B) {
			tr := tracing.New(quiet, tracing.Options{Getenv: func(string) string { return "" }})
			if c.on {
				if err := tr.Apply(tracing.Settings{Endpoint: sink.URL, Protocol: "http", SamplingRatio: c.ratio, Node: "n", Version: "v"}); err != nil {
					b.Fatal(err)
				}
			}
			h := tr.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := r.Context()
				_, decode := span.Start(ctx, "decode")
				decode.End()
				if qt := tracing.Queue(ctx); qt != nil {
					now := time.Now()
					bt := qt.StartBatch(scheduler.BatchInfo{Model: "mlp", Version: "1", Requests: 1, Rows: 1}, []scheduler.Trace{qt})
					qt.Waited(now, now, bt)
					bt.End(nil)
				}
				tracing.SetVersion(ctx, "1")
				_, encode := span.Start(ctx, "encode")
				w.WriteHeader(http.StatusOK)
				encode.End()
			}))
			req := httptest.NewRequest(http.MethodPost, "/v2/models/mlp/infer", nil)
			w := httptest.NewRecorder()
			start := cpuTime()
			b.ResetTimer()
			for range b.N {
				h.ServeHTTP(w, req)
			}
			_ = tr.Close(context.Background())
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
