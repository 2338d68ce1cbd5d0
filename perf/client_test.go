package perf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/perf"
	"github.com/inferd/inferd/tensor"
)

// fakeServer answers the KServe v2 endpoints perf uses for one model "mlp" with input "input"
// FP32 [-1,4]: metadata, infer (a fixed valid response, in binary when asked) and, when stats is
// set, statistics that grow with every request. It checks every inference request against the
// first: same body, same headers, a decodable request.
type fakeServer struct {
	stats    bool
	failEach int64 // every failEach-th request gets 503; 0 never

	infers atomic.Int64

	mu       sync.Mutex
	first    []byte
	firstHL  string
	problems []string
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v2/models/mlp":
		fmt.Fprint(w, `{"name":"mlp","versions":["1"],"platform":"onnxruntime_onnx",`+
			`"inputs":[{"name":"input","datatype":"FP32","shape":[-1,4]}],`+
			`"outputs":[{"name":"output","datatype":"FP32","shape":[-1,3]}]}`)
	case r.Method == http.MethodGet && r.URL.Path == "/v2/models/mlp/stats" && f.stats:
		// Every request: one row, one execution, 1 µs queued, 2+3+4 µs of compute.
		n := f.infers.Load()
		fmt.Fprintf(w, `{"model_stats":[{"name":"mlp","version":"1","last_inference":0,"inference_count":%d,"execution_count":%d,`+
			`"inference_stats":{"success":{"count":%[2]d,"ns":%[3]d},"fail":{"count":0,"ns":0},"queue":{"count":%[2]d,"ns":%[4]d},`+
			`"compute_input":{"count":%[2]d,"ns":%[5]d},"compute_infer":{"count":%[2]d,"ns":%[6]d},"compute_output":{"count":%[2]d,"ns":%[7]d}},`+
			`"batch_stats":[{"batch_size":1,"compute_input":{"count":%[2]d,"ns":0},"compute_infer":{"count":%[2]d,"ns":0},"compute_output":{"count":%[2]d,"ns":0}}]}]}`,
			n, n, 20000*n, 1000*n, 2000*n, 3000*n, 4000*n)
	case r.Method == http.MethodPost && r.URL.Path == "/v2/models/mlp/infer":
		f.infer(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
		w.Write(kserve.EncodeError("no such endpoint: " + r.URL.Path))
	}
}

func (f *fakeServer) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.problems) < 10 {
		f.problems = append(f.problems, fmt.Sprintf(format, args...))
	}
}

func (f *fakeServer) infer(w http.ResponseWriter, r *http.Request) {
	n := f.infers.Add(1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.problem("reading body: %v", err)
		return
	}
	hl := r.Header.Get(kserve.HeaderContentLength)
	f.mu.Lock()
	if f.first == nil {
		f.first, f.firstHL = body, hl
	}
	same := bytes.Equal(body, f.first) && hl == f.firstHL
	f.mu.Unlock()
	if !same {
		f.problem("request %d: body or %s differs from the first request's", n, kserve.HeaderContentLength)
	}
	wantType := "application/json"
	if hl != "" {
		wantType = "application/octet-stream"
	}
	if ct := r.Header.Get("Content-Type"); ct != wantType {
		f.problem("request %d: Content-Type %q, want %q", n, ct, wantType)
	}
	length, err := kserve.ParseHeaderLength(hl)
	if err != nil {
		f.problem("request %d: %v", n, err)
		return
	}
	req, err := kserve.DecodeLimited([][]byte{body}, length, kserve.Limits{})
	if err != nil {
		f.problem("request %d: %v", n, err)
		return
	}
	if len(req.Inputs) != 1 || req.Inputs[0].Tensor.Name != "input" || req.Inputs[0].Tensor.DataType != tensor.FP32 {
		f.problem("request %d: inputs %+v", n, req.Inputs)
		return
	}
	if f.failEach > 0 && n%f.failEach == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write(kserve.EncodeError("queue full"))
		return
	}
	rows := req.Inputs[0].Tensor.Shape[0]
	out := tensor.FromFloat32s("output", []int64{rows, 3}, make([]float32, 3*rows))
	resp := &kserve.InferResponse{ModelName: "mlp", ModelVersion: "1", Outputs: []tensor.Tensor{out}}
	resp.Binary = req.BinaryOutputs(resp.Outputs)
	enc, parts := kserve.ResponseParts(nil, resp)
	w.Header().Set("Content-Type", "application/json")
	if parts != nil {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set(kserve.HeaderContentLength, fmt.Sprint(len(enc)))
	}
	w.Write(enc)
	for _, p := range parts {
		w.Write(p)
	}
}

func (f *fakeServer) check(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.problems {
		t.Error("server saw:", p)
	}
}

func startFake(t *testing.T, f *fakeServer) string {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRate(t *testing.T) {
	f := &fakeServer{}
	url := startFake(t, f)
	const rate, duration = 200.0, 400 * time.Millisecond
	rep, err := perf.Run(t.Context(), perf.Config{
		URL: url, Model: "mlp", Rate: rate, MaxOutstanding: 8, Duration: duration, Warmup: 100 * time.Millisecond,
		Batch: 3, Binary: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.check(t)
	if len(rep.Steps) != 1 || rep.Mode != "rate" {
		t.Fatalf("report: mode %q, %d steps; want one rate step", rep.Mode, len(rep.Steps))
	}
	s := rep.Steps[0]
	// The pacer schedules by the clock, not by how the server keeps up: exactly rate ×
	// duration fall in the window (one more or less at its edges).
	if want := int64(rate * duration.Seconds()); s.Scheduled < want-1 || s.Scheduled > want+1 {
		t.Errorf("scheduled %d requests in the window, want %d", s.Scheduled, want)
	}
	// What completed in the window: generously near what was scheduled, never more than the
	// server saw.
	done := s.Requests + s.Errors
	if done < s.Scheduled/2 || done > s.Scheduled+int64(s.MaxOutstanding) || done > f.infers.Load() {
		t.Errorf("%d requests completed in the window, %d scheduled, server saw %d", done, s.Scheduled, f.infers.Load())
	}
	if s.Errors != 0 || s.Dropped+s.Late > s.Scheduled {
		t.Errorf("errors %d (%v), dropped %d, late %d of %d", s.Errors, s.FirstError, s.Dropped, s.Late, s.Scheduled)
	}
	if s.Latency.Samples != int(s.Requests) || s.Latency.P50 <= 0 || s.Latency.P50 > s.Latency.Max {
		t.Errorf("latency %+v for %d requests", s.Latency, s.Requests)
	}
	if s.RowsPerSec != 3*s.InferPerSec || rep.RowsPerRequest != 3 || !slices.Equal(rep.Inputs[0].Shape, []int64{3, 4}) {
		t.Errorf("rows: %v rows/s at %v infer/s, %d rows per request, inputs %+v", s.RowsPerSec, s.InferPerSec, rep.RowsPerRequest, rep.Inputs)
	}
	if f.firstHL == "" {
		t.Errorf("binary request without %s", kserve.HeaderContentLength)
	}
	if rep.ServerStats || s.Server != nil || !strings.Contains(rep.ServerStatsNote, "404") {
		t.Errorf("server without a stats endpoint: ServerStats %v, note %q, step %+v", rep.ServerStats, rep.ServerStatsNote, s.Server)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "server stats unavailable") {
		t.Errorf("table does not say the server has no stats:\n%s", table.String())
	}
}

func TestConcurrencyErrorsAndStats(t *testing.T) {
	for _, c := range []struct {
		name      string
		failEach  int64
		allFailed bool
	}{
		{"every third request fails", 3, false},
		{"every request fails", 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeServer{failEach: c.failEach, stats: true}
			url := startFake(t, f)
			levels := []int{1, 3}
			rep, err := perf.Run(t.Context(), perf.Config{
				URL: url + "/", Model: "mlp", Concurrency: levels,
				Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Data: perf.DataZero,
			})
			if err != nil {
				t.Fatal(err)
			}
			f.check(t)
			if len(rep.Steps) != len(levels) {
				t.Fatalf("%d steps, want %d", len(rep.Steps), len(levels))
			}
			if f.firstHL != "" {
				t.Errorf("JSON request sent %s %q", kserve.HeaderContentLength, f.firstHL)
			}
			for i, s := range rep.Steps {
				if s.Concurrency != levels[i] {
					t.Errorf("step %d: concurrency %d, want %d", i, s.Concurrency, levels[i])
				}
				total := s.Requests + s.Errors
				if total == 0 || s.ErrorsBy["503"] != s.Errors || len(s.ErrorsBy) != 1 || !strings.Contains(s.FirstError, "queue full") {
					t.Errorf("step %d: %d requests, %d errors %v, first %q", i, s.Requests, s.Errors, s.ErrorsBy, s.FirstError)
				}
				// Every failEach-th request fails; the window is a contiguous run of the
				// server's sequence give or take the requests in flight at its two edges.
				slack := int64(2*s.Concurrency + 1)
				if want := total / c.failEach; s.Errors < want-slack || s.Errors > want+slack {
					t.Errorf("step %d: %d errors of %d, want about %d", i, s.Errors, total, want)
				}
				if s.AllFailed() != c.allFailed {
					t.Errorf("step %d: AllFailed = %v", i, s.AllFailed())
				}
				if s.Server == nil {
					t.Errorf("step %d: no server stats (%s)", i, s.ServerNote)
					continue
				}
				if s.Server.AvgQueue != time.Microsecond || s.Server.AvgCompute != 9*time.Microsecond || s.Server.AvgBatch != 1 {
					t.Errorf("step %d: server split %+v", i, *s.Server)
				}
			}
			if failed := rep.Failed(); c.allFailed != (len(failed) == len(levels)) || !c.allFailed && len(failed) != 0 {
				t.Errorf("Failed() = %v", failed)
			}
			var table strings.Builder
			if err := rep.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(table.String(), "errors (503: ") || !strings.Contains(table.String(), "Queue µs") {
				t.Errorf("table:\n%s", table.String())
			}
		})
	}
}

func TestRunSetupErrors(t *testing.T) {
	url := startFake(t, &fakeServer{})
	for name, cfg := range map[string]perf.Config{
		"no model":         {URL: url, Concurrency: []int{1}},
		"bad url":          {URL: "localhost:8080", Model: "mlp", Concurrency: []int{1}},
		"no load":          {URL: url, Model: "mlp"},
		"zero concurrency": {URL: url, Model: "mlp", Concurrency: []int{0}},
		"bad data":         {URL: url, Model: "mlp", Concurrency: []int{1}, Data: "ones"},
	} {
		if _, err := perf.Run(t.Context(), cfg); !errors.Is(err, perf.ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
	if _, err := perf.Run(t.Context(), perf.Config{URL: url, Model: "nope", Concurrency: []int{1}}); !errors.Is(err, perf.ErrStatus) {
		t.Errorf("unknown model: err = %v, want ErrStatus", err)
	}
	if _, err := perf.Run(t.Context(), perf.Config{URL: url, Model: "mlp", Concurrency: []int{1}, Shapes: map[string][]int64{"x": {1}}}); !errors.Is(err, perf.ErrInput) {
		t.Errorf("shape of an unknown input: err = %v, want ErrInput", err)
	}
}

func TestRunCanceled(t *testing.T) {
	url := startFake(t, &fakeServer{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rep, err := perf.Run(ctx, perf.Config{URL: url, Model: "mlp", Concurrency: []int{1}, Duration: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a canceled context: %v, %+v", err, rep)
	}
}
