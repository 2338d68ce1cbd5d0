//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/inferd/inferd/internal/testutil"
)

// jaeger is a Jaeger all-in-one (build/jaeger, make jaeger) on loopback: its OTLP receivers
// and its query API, in-memory storage.
type jaeger struct {
	cmd             *exec.Cmd
	otlpHTTP, query string // host:port
	exited          chan struct{}
}

// startJaeger runs build/jaeger (or $INFERD_JAEGER) on free 127.0.0.1 ports, or skips the
// test when it is not built, unless INFERD_REQUIRE_JAEGER says it must be there.
func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := os.Getenv("INFERD_JAEGER")
	if bin == "" {
		bin = filepath.Join(testutil.ModuleRoot(t), "build", "jaeger")
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("INFERD_REQUIRE_JAEGER") != "" {
			t.Fatalf("INFERD_REQUIRE_JAEGER is set but %s is missing (make jaeger builds it)", bin)
		}
		t.Skipf("no Jaeger at %s: make jaeger builds it (make e2e does)", bin)
	}
	port := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t, "127.0.0.1", false)) }
	j := &jaeger{otlpHTTP: port(), query: port(), exited: make(chan struct{})}
	cfg := fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %q
    grpc:
      endpoint: %q
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, j.query, port(), port(), j.otlpHTTP)
	path := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedLog{}
	j.cmd = exec.Command(bin, "--config", path)
	j.cmd.Stdout, j.cmd.Stderr = logs, logs
	if err := j.cmd.Start(); err != nil {
		t.Fatalf("starting Jaeger: %v", err)
	}
	go func() { _ = j.cmd.Wait(); close(j.exited) }()
	t.Cleanup(j.kill)
	testutil.Eventually(t, 60*time.Second, func() string {
		select {
		case <-j.exited:
			t.Fatalf("Jaeger exited:\n%s", logs.String())
		default:
		}
		resp, err := http.Get("http://" + j.query + "/api/services")
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "query API answers " + resp.Status
		}
		return ""
	})
	return j
}

// kill stops Jaeger at once (SIGKILL), as a collector that dies.
func (j *jaeger) kill() {
	if j.cmd.Process != nil {
		_ = j.cmd.Process.Kill()
	}
	<-j.exited
}

// jaegerSpan is a span as Jaeger's query API (/api/traces/{id}) returns it.
type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags      []jaegerTag `json:"tags"`
	ProcessID string      `json:"processID"`
}

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerTrace struct {
	Spans     []jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string      `json:"serviceName"`
		Tags        []jaegerTag `json:"tags"`
	} `json:"processes"`
}

// trace fetches one trace; ok is false while Jaeger does not have it.
func (j *jaeger) trace(t *testing.T, id string) (jaegerTrace, bool) {
	t.Helper()
	resp, err := http.Get("http://" + j.query + "/api/traces/" + id)
	if err != nil {
		t.Fatalf("Jaeger query API: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return jaegerTrace{}, false
	}
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("Jaeger query API: %s: %v", resp.Status, err)
	}
	if len(out.Data) != 1 {
		return jaegerTrace{}, false
	}
	return out.Data[0], true
}

func tagOf(tags []jaegerTag, key string) string {
	for _, tg := range tags {
		if tg.Key == key {
			return fmt.Sprint(tg.Value)
		}
	}
	return ""
}

// node is the inferd node that recorded s (its process's inferd.node tag).
func (tr jaegerTrace) node(s jaegerSpan) string {
	return tagOf(tr.Processes[s.ProcessID].Tags, "inferd.node")
}

// find returns the spans named name that node recorded.
func (tr jaegerTrace) find(name, node string) []jaegerSpan {
	var out []jaegerSpan
	for _, s := range tr.Spans {
		if s.OperationName == name && tr.node(s) == node {
			out = append(out, s)
		}
	}
	return out
}

// parentOf is the span s is a child of ("" for a root).
func parentOf(s jaegerSpan) string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// linksOf are the spans s links to (FOLLOWS_FROM references).
func linksOf(s jaegerSpan) []string {
	var out []string
	for _, r := range s.References {
		if r.RefType == "FOLLOWS_FROM" {
			out = append(out, r.SpanID)
		}
	}
	return out
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestTracingAcrossNodesInJaeger: a request sent to n1 with a known traceparent is forwarded
// to n2 (the routing policy sends every request for m there); Jaeger, a real one on
// loopback, shows one trace with spans from both nodes: n1's server span under the client's
// span, its forward span (a client span), n2's server span under it, n2's queue and batch,
// the queue linked to the batch. Then the collector is killed
// under load: every request still succeeds, its latency as before, and the nodes count the
// spans they drop.
func TestTracingAcrossNodesInJaeger(t *testing.T) {
	j := startJaeger(t)
	policy := writePolicy(t, `
[[split]]
model = "m"
targets = [{ version = "1", node = "n2", weight = 100 }]
`)
	c := newTestCluster(t, clusterSpec{nodes: 2, repo: clusterRepo(t), policy: policy, grpc: true,
		extra: fmt.Sprintf("[tracing]\nendpoint = \"http://%s\"\nsampling_ratio = 1.0\n", j.otlpHTTP)})
	for _, n := range c.nodes {
		// Export every 100 ms, and give up on a collector after 500 ms.
		n.env = append(n.env, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_BSP_EXPORT_TIMEOUT=500")
		// At debug level every request is logged, with its trace's ids.
		n.env = append(n.env, "INFERD_LOG_LEVEL=debug")
	}
	c.startAll("m/1", "m/2")
	n1 := c.nodes[0]

	traceID, clientSpan := randomHex(t, 16), randomHex(t, 8)
	r := inferAt(context.Background(), n1, "m", http.Header{"Traceparent": {"00-" + traceID + "-" + clientSpan + "-01"}})
	if !r.ok() || r.servedBy != "n2" {
		t.Fatalf("request: %v (want served by n2)", r)
	}
	var tr jaegerTrace
	testutil.Eventually(t, 30*time.Second, func() string {
		var ok bool
		if tr, ok = j.trace(t, traceID); !ok {
			return "Jaeger has no trace " + traceID
		}
		for _, want := range []struct{ name, node string }{
			{"POST /v2/models/{model}/infer", "n1"}, {"forward", "n1"}, {"POST /v2/models/{model}/versions/{version}/infer", "n2"},
			{"decode", "n2"}, {"queue", "n2"}, {"batch", "n2"}, {"encode", "n2"},
		} {
			if len(tr.find(want.name, want.node)) != 1 {
				return fmt.Sprintf("trace %s has %d spans %q from %s (of %d spans)", traceID, len(tr.find(want.name, want.node)), want.name, want.node, len(tr.Spans))
			}
		}
		return ""
	})
	server1 := tr.find("POST /v2/models/{model}/infer", "n1")[0]
	fwd := tr.find("forward", "n1")[0]
	server2 := tr.find("POST /v2/models/{model}/versions/{version}/infer", "n2")[0]
	batch := tr.find("batch", "n2")[0]
	queue := tr.find("queue", "n2")[0]
	for _, s := range tr.Spans {
		if s.TraceID != traceID {
			t.Errorf("span %q is in trace %s, want %s", s.OperationName, s.TraceID, traceID)
		}
	}
	if parentOf(server1) != clientSpan {
		t.Errorf("n1's server span's parent is %q, want the client's span %s", parentOf(server1), clientSpan)
	}
	if parentOf(fwd) != server1.SpanID || tagOf(fwd.Tags, "span.kind") != "client" || tagOf(fwd.Tags, "inferd.peer") != "n2" {
		t.Errorf("forward span: parent %q, kind %q, peer %q; want a client span to n2 under n1's server span", parentOf(fwd), tagOf(fwd.Tags, "span.kind"), tagOf(fwd.Tags, "inferd.peer"))
	}
	if parentOf(server2) != fwd.SpanID {
		t.Errorf("n2's server span's parent is %q, want n1's forward span %s", parentOf(server2), fwd.SpanID)
	}
	if parentOf(batch) != server2.SpanID {
		t.Errorf("batch span: parent %q, want n2's server span %s", parentOf(batch), server2.SpanID)
	}
	if !slices.Contains(linksOf(queue), batch.SpanID) {
		t.Errorf("queue span links %v, want the batch span %s", linksOf(queue), batch.SpanID)
	}
	if tagOf(batch.Tags, "inferd.batch.requests") == "" || tagOf(server2.Tags, "inferd.model.version") != "1" || tagOf(server1.Tags, "inferd.served_by") != "n2" {
		t.Errorf("attributes: batch %v, n2 server %v, n1 server %v", batch.Tags, server2.Tags, server1.Tags)
	}

	// The same over gRPC: the server span's parent comes from the call's metadata, and the
	// forward to n2 (over HTTP) continues the trace.
	var conns grpcConns
	defer conns.closeAll()
	client, err := conns.client(n1.grpc)
	if err != nil {
		t.Fatal(err)
	}
	grpcTrace, grpcClientSpan := randomHex(t, 16), randomHex(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+grpcTrace+"-"+grpcClientSpan+"-01")
	resp, err := client.ModelInfer(ctx, grpcFP32Request("m", "input", "traced", true, addConstInput))
	if err == nil {
		err = checkAddConst(resp)
	}
	if err != nil {
		t.Fatalf("gRPC request: %v", err)
	}
	var gtr jaegerTrace
	testutil.Eventually(t, 30*time.Second, func() string {
		var ok bool
		if gtr, ok = j.trace(t, grpcTrace); !ok {
			return "Jaeger has no trace " + grpcTrace
		}
		if len(gtr.find("inference.GRPCInferenceService/ModelInfer", "n1")) != 1 || len(gtr.find("forward", "n1")) != 1 ||
			len(gtr.find("POST /v2/models/{model}/versions/{version}/infer", "n2")) != 1 || len(gtr.find("batch", "n2")) != 1 {
			return fmt.Sprintf("gRPC trace %s has %d spans", grpcTrace, len(gtr.Spans))
		}
		return ""
	})
	gserver := gtr.find("inference.GRPCInferenceService/ModelInfer", "n1")[0]
	gfwd := gtr.find("forward", "n1")[0]
	if parentOf(gserver) != grpcClientSpan || parentOf(gfwd) != gserver.SpanID ||
		parentOf(gtr.find("POST /v2/models/{model}/versions/{version}/infer", "n2")[0]) != gfwd.SpanID {
		t.Errorf("gRPC trace: n1's server span under %q (want %s), forward under %q (want %s)", parentOf(gserver), grpcClientSpan, parentOf(gfwd), gserver.SpanID)
	}

	// n2 served it, and logs it at debug level (n1 only forwarded it, which it logs only when
	// a try fails).
	if logs := c.nodes[1].d.Logs(); !strings.Contains(logs, "trace_id="+traceID+" span_id="+server2.SpanID) {
		t.Errorf("n2 logged no line with trace_id=%s span_id=%s", traceID, server2.SpanID)
	}

	// The collector dies under load.
	load := startLoad(8, "m", c.nodes...)
	load.waitResults(t, 2000, "requests with the collector up", func(r inferResult) bool { return true })
	before := len(load.snapshot())
	j.kill()
	killed := time.Now()
	for _, n := range c.nodes {
		testutil.Eventually(t, 30*time.Second, func() string {
			if d := droppedSpans(t, n); d == 0 {
				return n.name + " has dropped no span since the collector died"
			}
			var h struct {
				Components struct {
					Tracing struct {
						State  string `json:"state"`
						Detail struct {
							Failing bool `json:"failing"`
						} `json:"detail"`
					} `json:"tracing"`
				} `json:"components"`
			}
			if err := n.getJSON(context.Background(), "/health", &h); err != nil {
				return err.Error()
			}
			if tc := h.Components.Tracing; tc.State != "ok" || !tc.Detail.Failing {
				return fmt.Sprintf("%s /health tracing: state %q, failing %v; want ok and failing", n.name, tc.State, tc.Detail.Failing)
			}
			return ""
		})
	}
	// Export timeouts (500 ms) many times over.
	load.waitResults(t, 2000, "requests with the collector dead", func(r inferResult) bool { return r.start.After(killed) })
	testutil.Eventually(t, 30*time.Second, func() string {
		if time.Since(killed) < 5*time.Second {
			return "the collector has been dead under 5s"
		}
		return ""
	})
	rs := load.stopLoad()
	if k, list := failedResults(rs); k > 0 {
		t.Fatalf("%d of %d requests failed:%s", k, len(rs), list)
	}
	up, down := rs[:before], slices.DeleteFunc(slices.Clone(rs[before:]), func(r inferResult) bool { return !r.start.After(killed) })
	t.Logf("collector up: %s; collector dead: %s", latencySummary(up), latencySummary(down))
	p99 := func(rs []inferResult) time.Duration {
		d := make([]time.Duration, len(rs))
		for i, r := range rs {
			d[i] = r.latency
		}
		slices.Sort(d)
		return d[min(len(d)-1, len(d)*99/100)]
	}
	// A request that waited for an export would take the export timeout (500 ms); the bound
	// leaves room for a busy machine but not for that.
	if a, b := p99(up), p99(down); b > 2*a+50*time.Millisecond {
		t.Errorf("p99 latency %s with the collector dead, %s with it up", b, a)
	}
}

var droppedRE = regexp.MustCompile(`(?m)^inferd_tracing_spans_dropped_total\{reason="[a-z_]+"\} ([0-9.e+]+)$`)

// droppedSpans sums a node's inferd_tracing_spans_dropped_total.
func droppedSpans(t *testing.T, n *clusterNode) float64 {
	t.Helper()
	status, body, err := n.get(context.Background(), "/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", n.name, status, err)
	}
	var sum float64
	for _, m := range droppedRE.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	if !strings.Contains(string(body), "inferd_tracing_spans_dropped_total") {
		t.Fatalf("%s /metrics has no inferd_tracing_spans_dropped_total", n.name)
	}
	return sum
}
