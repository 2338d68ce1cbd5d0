//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/onnxgen"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// The cluster suites run several real daemons, each on its own loopback address (Linux routes
// all of 127.0.0.0/8 to lo), gossiping with each other on those addresses. Clients send to the
// nodes a load balancer would: those that are up and not being stopped. Every response is
// checked (status, the version it names, and the output that version computes), and the node
// that served it is read from Inferd-Served-By.

// clusterNode is one daemon of a test cluster.
type clusterNode struct {
	name   string
	http   string // host:port it serves on
	grpc   string // host:port of its gRPC listener, "" without one
	gossip string // host:port it gossips on
	config string // its inferd.toml
	env    []string
	wrap   []string     // command prefix (ip netns exec NS), nil on loopback
	client *http.Client // reaches the node
	https  bool         // the node serves TLS
	d      *daemontest.Daemon
}

func (n *clusterNode) url() string {
	if n.https {
		return "https://" + n.http
	}
	return "http://" + n.http
}

// testCluster is a set of nodes sharing a model repository, a routing policy and a gossip key.
type testCluster struct {
	t     *testing.T
	bin   string
	dir   string
	nodes []*clusterNode
}

// clusterSpec describes a cluster to start.
type clusterSpec struct {
	nodes  int
	repo   string // model repository of every node
	policy string // routing.toml of every node ("" none)
	key    string // gossip key file ("" generates one with `inferd keygen`)
	// hosts are the nodes' IP addresses; default 127.0.0.2, 127.0.0.3, ...
	hosts []string
	// wrap returns the command prefix for node i (network namespaces); nil: none.
	wrap func(i int) []string
	// client returns the HTTP client that reaches node i; nil: a loopback client.
	client func(i int) *http.Client
	// ports, when set, is the fixed HTTP and gossip port of every node (namespaces have their
	// own); otherwise free ports are picked per address.
	httpPort, gossipPort int
	// extra is appended to every node's inferd.toml.
	extra string
	// grpc gives every node a gRPC listener on a free port of its address.
	grpc bool
}

var loopbackClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 256, IdleConnTimeout: 30 * time.Second}}

// newTestCluster writes the nodes' configurations: names n1, n2, ..., every node joins every
// other (the re-join loop keeps trying seeds that are not up yet). Nothing starts yet.
func newTestCluster(t *testing.T, spec clusterSpec) *testCluster {
	t.Helper()
	c := &testCluster{t: t, bin: daemontest.Build(t, t.TempDir()), dir: t.TempDir()}
	if spec.key == "" {
		spec.key = filepath.Join(c.dir, "gossip.key")
		if out, err := exec.Command(c.bin, "keygen", "--out", spec.key).CombinedOutput(); err != nil {
			t.Fatalf("inferd keygen: %v\n%s", err, out)
		}
	}
	for i := range spec.nodes {
		host := fmt.Sprintf("127.0.0.%d", i+2)
		if spec.hosts != nil {
			host = spec.hosts[i]
		}
		n := &clusterNode{name: fmt.Sprintf("n%d", i+1), client: loopbackClient}
		if spec.client != nil {
			n.client = spec.client(i)
		}
		if spec.wrap != nil {
			n.wrap = spec.wrap(i)
		}
		hp, gp := spec.httpPort, spec.gossipPort
		if hp == 0 {
			hp, gp = freePort(t, host, false), freePort(t, host, true)
		}
		n.http = net.JoinHostPort(host, strconv.Itoa(hp))
		n.gossip = net.JoinHostPort(host, strconv.Itoa(gp))
		if spec.grpc {
			n.grpc = net.JoinHostPort(host, strconv.Itoa(freePort(t, host, false)))
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		var join []string
		for _, o := range c.nodes {
			if o != n {
				join = append(join, strconv.Quote(o.gossip))
			}
		}
		n.config = filepath.Join(c.dir, n.name+".toml")
		cfg := fmt.Sprintf(`[server]
shutdown_timeout = "15s"
[models]
repository = %q
control = "none"
[engine]
intra_op_threads = 1
[log]
level = "info"
[cluster]
enabled = true
name = %q
bind = %q
join = [%s]
secret_key_file = %q
policy_file = %q
per_try_timeout = "300ms"
leave_timeout = "1s"
%s`, spec.repo, n.name, n.gossip, strings.Join(join, ", "), spec.key, spec.policy, spec.extra)
		if err := os.WriteFile(n.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		// The environment overrides the file: daemontest sets 127.0.0.1:0, this comes after.
		n.env = []string{"INFERD_SERVER_LISTEN=" + n.http}
		if n.grpc != "" {
			n.env = append(n.env, "INFERD_GRPC_LISTEN="+n.grpc)
		}
	}
	return c
}

// freePort returns a port free on host for TCP (and UDP when udp is set: gossip uses both).
func freePort(t *testing.T, host string, udp bool) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", host, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		if udp {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				ok = false
			} else {
				pc.Close()
			}
		}
		ln.Close()
		if ok {
			return port
		}
	}
	t.Fatalf("no free TCP+UDP port on %s", host)
	return 0
}

// start starts node n (again, after a stop) and waits until it is ready.
func (c *testCluster) start(n *clusterNode) {
	c.t.Helper()
	n.d = daemontest.StartWrapped(c.t, n.wrap, c.bin, n.config, n.env...)
	n.d.WaitNotified(c.t, "READY=1", 60*time.Second)
	// Asked through the node's own client: inside a namespace it is unreachable from here.
	if status, body, err := n.get(context.Background(), "/ready"); err != nil || status != http.StatusOK {
		c.t.Fatalf("%s: /ready after READY=1: %d %s %v", n.name, status, body, err)
	}
}

// startAll starts every node and waits until every node sees every other ready and serving
// the models.
func (c *testCluster) startAll(models ...string) {
	c.t.Helper()
	for _, n := range c.nodes {
		c.start(n)
	}
	c.waitConverged(30*time.Second, models...)
}

// memberInfo is a member of GET /v2/cluster/members.
type memberInfo struct {
	Name     string `json:"name"`
	Liveness string `json:"liveness"`
	Serving  string `json:"serving"`
	Routable bool   `json:"routable"`
	HTTPAddr string `json:"http_addr"`
	Models   []struct {
		Model   string `json:"model"`
		Version string `json:"version"`
		State   string `json:"state"`
	} `json:"models"`
}

type routingStats struct {
	Routed          uint64 `json:"routed"`
	Retries         uint64 `json:"retries"`
	BudgetExhausted uint64 `json:"budget_exhausted"`
	Peers           []struct {
		Node      string    `json:"node"`
		Forwarded uint64    `json:"forwarded"`
		Failures  uint64    `json:"failures"`
		Ejected   time.Time `json:"ejected_until"`
		Ejections int       `json:"ejections"`
	} `json:"peers"`
}

type membersInfo struct {
	Node    string       `json:"node"`
	Members []memberInfo `json:"members"`
	Routing routingStats `json:"routing"`
}

// members asks node n for its view of the cluster.
func (n *clusterNode) members(ctx context.Context) (membersInfo, error) {
	var m membersInfo
	err := n.getJSON(ctx, "/v2/cluster/members", &m)
	return m, err
}

// get sends GET path to the node.
func (n *clusterNode) get(ctx context.Context, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.url()+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

func (n *clusterNode) getJSON(ctx context.Context, path string, v any) error {
	status, data, err := n.get(ctx, path)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s%s: %d %s", n.url(), path, status, data)
	}
	return json.Unmarshal(data, v)
}

// view is one member as seen by another.
func (m membersInfo) view(name string) (memberInfo, bool) {
	for _, x := range m.Members {
		if x.Name == name {
			return x, true
		}
	}
	return memberInfo{}, false
}

// ready reports whether the member has every one of the models' versions ready.
func (m memberInfo) ready(models ...string) bool {
	for _, want := range models {
		found := false
		for _, v := range m.Models {
			if v.Model+"/"+v.Version == want || v.Model == want {
				found = found || v.State == "ready"
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// waitConverged waits until every started node sees every started node alive, routable and
// ready with the models ("m" any version, "m/2" that version).
func (c *testCluster) waitConverged(timeout time.Duration, models ...string) time.Duration {
	c.t.Helper()
	return testutil.Eventually(c.t, timeout, func() string { return c.converged(c.nodes, models...) })
}

// converged says what keeps the nodes from seeing each other as wanted, or "".
func (c *testCluster) converged(nodes []*clusterNode, models ...string) string {
	for _, n := range nodes {
		m, err := n.members(context.Background())
		if err != nil {
			return err.Error()
		}
		for _, o := range nodes {
			v, ok := m.view(o.name)
			switch {
			case !ok:
				return fmt.Sprintf("%s does not list %s", n.name, o.name)
			case v.Liveness != "alive" || !v.Routable:
				return fmt.Sprintf("%s sees %s %s/%s", n.name, o.name, v.Liveness, v.Serving)
			case !v.ready(models...):
				return fmt.Sprintf("%s sees %s without all of %v ready: %+v", n.name, o.name, models, v.Models)
			}
		}
	}
	return ""
}

// inferResult is one client request's outcome.
type inferResult struct {
	entry    string // node the client sent it to
	servedBy string // Inferd-Served-By
	version  string // model_version of the response
	status   int
	err      error
	start    time.Time
	latency  time.Duration
	body     string
}

// addConstInput is the input every cluster client sends: the models add their constant.
var addConstInput = []float32{1, 2, 3, 4}

var addConstBody = []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)

// inferAt sends one request for model to node n and checks the answer: a 200 must name the
// version whose constant (version × 1000, see tag) the output carries.
func inferAt(ctx context.Context, n *clusterNode, model string, header http.Header) inferResult {
	r := inferResult{entry: n.name, start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url()+"/v2/models/"+model+"/infer", bytes.NewReader(addConstBody))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := n.client.Do(req)
	if err != nil {
		r.err, r.latency = err, time.Since(r.start)
		return r
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.latency = time.Since(r.start)
	r.status, r.servedBy = resp.StatusCode, resp.Header.Get("Inferd-Served-By")
	if err != nil {
		r.err = fmt.Errorf("reading the response: %w", err)
		return r
	}
	if resp.StatusCode != http.StatusOK {
		r.body = string(data)
		return r
	}
	var out struct {
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(data, &out); err != nil || len(out.Outputs) != 1 || len(out.Outputs[0].Data) != 4 {
		r.err = fmt.Errorf("malformed response %s", data)
		return r
	}
	r.version = out.ModelVersion
	v, err := strconv.Atoi(out.ModelVersion)
	if err != nil {
		r.err = fmt.Errorf("model_version %q", out.ModelVersion)
		return r
	}
	for i, x := range addConstInput {
		if math.Abs(float64(out.Outputs[0].Data[i]-x-tag(v, 0))) > 1e-3 {
			r.err = fmt.Errorf("version %d answered %v: not what version %d computes", v, out.Outputs[0].Data, v)
		}
	}
	if r.servedBy == "" {
		r.err = fmt.Errorf("no Inferd-Served-By header")
	}
	return r
}

// ok reports whether the request succeeded.
func (r inferResult) ok() bool { return r.err == nil && r.status == http.StatusOK }

func (r inferResult) String() string {
	if r.err != nil {
		return fmt.Sprintf("%s via %s after %s: %v", r.start.Format("15:04:05.000"), r.entry, r.latency.Round(time.Millisecond), r.err)
	}
	return fmt.Sprintf("%s via %s after %s: %d from %s: %.200s", r.start.Format("15:04:05.000"), r.entry, r.latency.Round(time.Millisecond), r.status, r.servedBy, r.body)
}

// loadGen sends requests from concurrent clients to the nodes in its entry list, a random one
// per request, as a load balancer in front of the cluster would; it keeps every result.
type loadGen struct {
	model string

	mu       sync.Mutex
	entries  []*clusterNode
	inFlight map[string]int
	results  []inferResult

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// startLoad starts clients sending model requests to entries until stopLoad.
func startLoad(clients int, model string, entries ...*clusterNode) *loadGen {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loadGen{model: model, entries: slices.Clone(entries), inFlight: map[string]int{}, stop: cancel}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				n := l.pick()
				if n == nil {
					return
				}
				r := inferAt(ctx, n, model, nil)
				l.done(n, r, ctx.Err() != nil)
			}
		}()
	}
	return l
}

func (l *loadGen) pick() *clusterNode {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) == 0 {
		return nil
	}
	n := l.entries[rand.IntN(len(l.entries))]
	l.inFlight[n.name]++
	return n
}

func (l *loadGen) done(n *clusterNode, r inferResult, stopping bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight[n.name]--
	if stopping && !r.ok() {
		return // cut short by stopLoad, not by the cluster
	}
	l.results = append(l.results, r)
}

// remove takes a node out of the entry list and waits until no client request to it is in
// flight; add puts it back.
func (l *loadGen) remove(t *testing.T, name string) {
	t.Helper()
	l.mu.Lock()
	l.entries = slices.DeleteFunc(l.entries, func(n *clusterNode) bool { return n.name == name })
	l.mu.Unlock()
	testutil.Eventually(t, 30*time.Second, func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		if k := l.inFlight[name]; k > 0 {
			return fmt.Sprintf("%d client requests to %s still in flight", k, name)
		}
		return ""
	})
}

func (l *loadGen) add(n *clusterNode) {
	l.mu.Lock()
	l.entries = append(l.entries, n)
	l.mu.Unlock()
}

// snapshot returns the results so far.
func (l *loadGen) snapshot() []inferResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.results)
}

// stopLoad stops the clients and returns every result.
func (l *loadGen) stopLoad() []inferResult {
	l.stop()
	l.wg.Wait()
	return l.snapshot()
}

// waitResults waits until the load has produced at least k more results matching keep.
func (l *loadGen) waitResults(t *testing.T, k int, what string, keep func(inferResult) bool) {
	t.Helper()
	base := countResults(l.snapshot(), keep)
	testutil.Eventually(t, 60*time.Second, func() string {
		if got := countResults(l.snapshot(), keep) - base; got < k {
			return fmt.Sprintf("%d of %d %s", got, k, what)
		}
		return ""
	})
}

func countResults(rs []inferResult, keep func(inferResult) bool) int {
	k := 0
	for _, r := range rs {
		if keep(r) {
			k++
		}
	}
	return k
}

// failedResults lists the failed results (at most 20) and their number.
func failedResults(rs []inferResult) (int, string) {
	var b strings.Builder
	k := 0
	for _, r := range rs {
		if !r.ok() {
			if k < 20 {
				b.WriteString("\n  " + r.String())
			}
			k++
		}
	}
	return k, b.String()
}

// latencySummary summarises the latency of results.
func latencySummary(rs []inferResult) string {
	if len(rs) == 0 {
		return "no requests"
	}
	d := make([]time.Duration, len(rs))
	for i, r := range rs {
		d[i] = r.latency
	}
	slices.Sort(d)
	q := func(p float64) time.Duration {
		return d[min(len(d)-1, int(p*float64(len(d))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s over %d requests", q(0.5), q(0.99), d[len(d)-1].Round(10*time.Microsecond), len(d))
}

// clusterRepo writes the model repository of the cluster suites: model m with versions 1 and
// 2 (AddConst 1000 and 2000: the output names the version), and model c with a good version
// 1 and a version 2 that loads but fails every request (a canary with a run-time bug).
func clusterRepo(t *testing.T) string {
	repo := filepath.Join(t.TempDir(), "models")
	writeModel(t, repo, "m", 1, testmodels.AddConst(tag(1, 0)))
	writeModel(t, repo, "m", 2, testmodels.AddConst(tag(2, 0)))
	testutil.WriteFile(t, repo, "m/model.toml", []byte("[version_policy]\nall = true\n"))
	writeModel(t, repo, "c", 1, testmodels.AddConst(tag(1, 0)))
	writeModel(t, repo, "c", 2, failsAtRunTime())
	// Warmup would run the broken version and keep it from loading: the bug must only show
	// under traffic, as a canary's would.
	testutil.WriteFile(t, repo, "c/model.toml", []byte("[version_policy]\nall = true\n[warmup]\nbatch_sizes = []\n"))
	return repo
}

// failsAtRunTime has AddConst's signature but reshapes its [batch,4] input to [3], which ONNX
// Runtime accepts when it loads the model (batch is symbolic) and refuses on every run.
func failsAtRunTime() []byte {
	dims := []onnxgen.Dim{onnxgen.P("batch"), {Value: 4}}
	return onnxgen.Marshal(onnxgen.Graph{
		Name:         "fails_at_run_time",
		Nodes:        []onnxgen.Node{{OpType: "Reshape", Name: "reshape", Inputs: []string{"input", "shape"}, Outputs: []string{"output"}}},
		Initializers: []onnxgen.Tensor{onnxgen.Int64Tensor("shape", []int64{1}, []int64{3})},
		Inputs:       []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float, Shape: dims}},
		Outputs:      []onnxgen.ValueInfo{{Name: "output", ElemType: onnxgen.Float, Shape: dims}},
	})
}

func writePolicy(t *testing.T, doc string) string {
	path := filepath.Join(t.TempDir(), "routing.toml")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// shareOf counts results by a key and returns each key's share in percent.
func shareOf(rs []inferResult, key func(inferResult) string) (map[string]float64, map[string]int) {
	counts := map[string]int{}
	for _, r := range rs {
		counts[key(r)]++
	}
	out := map[string]float64{}
	for k, v := range counts {
		out[k] = 100 * float64(v) / float64(len(rs))
	}
	return out, counts
}

func targetKey(r inferResult) string { return r.servedBy + "/v" + r.version }

// TestClusterSplit checks the weighted split across versions and nodes: 3 nodes, a split that
// sends version 1 to n1 and version 2 to n2 and n3, requests entering at every node.
func TestClusterSplit(t *testing.T) {
	policy := writePolicy(t, `
[[split]]
model = "m"
sticky_header = "X-Session"
targets = [
  { version = "1", node = "n1", weight = 20 },
  { version = "2", node = "n2", weight = 30 },
  { version = "2", node = "n3", weight = 50 },
]
`)
	c := newTestCluster(t, clusterSpec{nodes: 3, repo: clusterRepo(t), policy: policy})
	c.startAll("m/1", "m/2")
	want := map[string]float64{"n1/v1": 20, "n2/v2": 30, "n3/v2": 50}

	// run sends n requests from 8 clients, entering at the nodes in turn; session, when set,
	// gives request i the sticky value session(i).
	run := func(n int, session func(i int) string) []inferResult {
		var next atomic.Int64
		results := make([]inferResult, n)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= n {
						return
					}
					var h http.Header
					if session != nil {
						h = http.Header{"X-Session": {session(i)}}
					}
					results[i] = inferAt(context.Background(), c.nodes[i%len(c.nodes)], "m", h)
				}
			}()
		}
		wg.Wait()
		return results
	}
	check := func(what string, rs []inferResult, tolerance float64) {
		t.Helper()
		if k, list := failedResults(rs); k > 0 {
			t.Fatalf("%s: %d of %d requests failed:%s", what, k, len(rs), list)
		}
		got, counts := shareOf(rs, targetKey)
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: %d requests served by %s, which the split gives no weight", what, counts[k], k)
			}
		}
		keys := slices.Sorted(maps.Keys(want))
		var line []string
		for _, k := range keys {
			line = append(line, fmt.Sprintf("%s %.2f%% (want %.0f%%)", k, got[k], want[k]))
			if math.Abs(got[k]-want[k]) > tolerance {
				t.Errorf("%s: %s got %.2f%% of %d requests, want %.0f%% ± %.1f", what, k, got[k], len(rs), want[k], tolerance)
			}
		}
		t.Logf("%s: %d requests, 0 failed: %s", what, len(rs), strings.Join(line, ", "))
	}

	// Random draws: a share of p over N requests has a binomial standard deviation of
	// sqrt(p(1-p)/N), 0.5 points at p=50% over 10,000, so a correct router misses ±1 point
	// at 10,000 requests about 5% of the time. 30,000 requests make ±1 point 3.5 standard
	// deviations (a false failure about once in 2,000 runs).
	start := time.Now()
	rs := run(30000, nil)
	elapsed := time.Since(start)
	check("random split", rs, 1)
	t.Logf("random split: %.0f requests/s through 3 nodes (%s)", float64(len(rs))/elapsed.Seconds(), latencySummary(rs))
	forwarded := countResults(rs, func(r inferResult) bool { return r.entry != r.servedBy })
	t.Logf("random split: %d of %d requests served by a node other than the one they entered", forwarded, len(rs))

	// Sticky: 10,000 sessions, each sent once, are split by the hash of the header; then
	// every session is sent again, entering at another node, and must reach the same target.
	session := func(i int) string { return fmt.Sprintf("session-%d", i) }
	first := run(10000, session)
	check("sticky split", first, 1)
	second := run(10000, func(i int) string { return session((i + 1) % 10000) })
	moved := 0
	for i, r := range second {
		if targetKey(r) != targetKey(first[(i+1)%10000]) {
			moved++
		}
	}
	if moved > 0 {
		t.Errorf("sticky split: %d of 10000 sessions reached another target when they entered at another node", moved)
	}
}

// TestClusterSIGKILL kills one of three nodes under load: clients send to the two others,
// which forward a third of the requests to the victim until they stop; no request may fail.
func TestClusterSIGKILL(t *testing.T) {
	testNodeFailure(t, syscall.SIGKILL)
}

// TestClusterSIGSTOP freezes one node under load: it still accepts connections (the kernel
// does) but answers nothing, so every try to it ends by the per-try timeout (300ms here), the
// router retries elsewhere and then ejects it; no request may fail. After SIGCONT it rejoins.
func TestClusterSIGSTOP(t *testing.T) {
	testNodeFailure(t, syscall.SIGSTOP)
}

func nodeSplit(model string) string {
	return fmt.Sprintf(`
[[split]]
model = %q
targets = [ { node = "n1", weight = 33.33 }, { node = "n2", weight = 33.33 }, { node = "n3", weight = 33.34 } ]
`, model)
}

func testNodeFailure(t *testing.T, sig syscall.Signal) {
	name := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGSTOP: "SIGSTOP"}[sig]
	c := newTestCluster(t, clusterSpec{nodes: 3, repo: clusterRepo(t), policy: writePolicy(t, nodeSplit("m"))})
	c.startAll("m/2")
	n1, n2, victim := c.nodes[0], c.nodes[1], c.nodes[2]
	load := startLoad(8, "m", n1, n2)
	defer load.stopLoad()
	load.waitResults(t, 300, "requests served by "+victim.name, func(r inferResult) bool { return r.servedBy == victim.name })

	victim.d.Signal(t, sig)
	at := time.Now()
	if sig == syscall.SIGSTOP {
		t.Cleanup(func() { _ = syscall.Kill(victim.d.PID(), syscall.SIGCONT) })
	}
	// Both survivors stop routing to it (their own probes make it suspect), then memberlist's
	// failure detector declares it dead; the load goes on all the while.
	viewWithout := func(liveness string) func() string {
		return func() string {
			for _, n := range []*clusterNode{n1, n2} {
				m, err := n.members(context.Background())
				if err != nil {
					return err.Error()
				}
				v, _ := m.view(victim.name)
				if v.Routable || liveness != "" && v.Liveness != liveness {
					return fmt.Sprintf("%s sees %s %s (routable %v)", n.name, victim.name, v.Liveness, v.Routable)
				}
			}
			return ""
		}
	}
	took := testutil.Eventually(t, 30*time.Second, viewWithout(""))
	dead := testutil.Eventually(t, 30*time.Second, viewWithout("dead")) + took
	t.Logf("%s: both survivors stopped routing to %s %s after the signal (suspect), and saw it dead after %s",
		name, victim.name, took.Round(time.Millisecond), dead.Round(time.Millisecond))
	load.waitResults(t, 1000, "requests after the victim was dead", func(r inferResult) bool { return r.start.After(at.Add(dead)) })

	var stats []string
	for _, n := range []*clusterNode{n1, n2} {
		m, err := n.members(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m.Routing.Peers {
			if p.Node == victim.name {
				stats = append(stats, fmt.Sprintf("%s: %d retries in all, %d failed tries on %s, %d ejections", n.name, m.Routing.Retries, p.Failures, victim.name, p.Ejections))
			}
		}
	}
	if sig == syscall.SIGSTOP {
		// Thawed, it refutes the verdict and rejoins; traffic reaches it again.
		if err := syscall.Kill(victim.d.PID(), syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		thawed := time.Now()
		back := c.waitConverged(60*time.Second, "m/2")
		t.Logf("SIGCONT: %s refuted its death and serves in every node's view again after %s", victim.name, back.Round(time.Millisecond))
		load.waitResults(t, 100, "requests served by the thawed node", func(r inferResult) bool {
			return r.servedBy == victim.name && r.start.After(thawed)
		})
	}
	rs := load.stopLoad()
	if k, list := failedResults(rs); k > 0 {
		t.Fatalf("%d of %d client requests failed:%s", k, len(rs), list)
	}
	after := 0
	var window []inferResult
	for _, r := range rs {
		if r.servedBy == victim.name && r.start.After(at) && r.start.Before(at.Add(took)) {
			after++
		}
		if r.start.After(at.Add(-time.Second)) && r.start.Before(at.Add(took+time.Second)) {
			window = append(window, r)
		}
	}
	if sig == syscall.SIGKILL && after > 0 {
		t.Errorf("%d requests sent after the kill name the dead node as their server", after)
	}
	t.Logf("%s: %d client requests, 0 failed; %s", name, len(rs), strings.Join(stats, "; "))
	t.Logf("%s: latency from 1s before the signal until 1s after the survivors stopped routing to it: %s", name, latencySummary(window))
}

// TestClusterRollingRestart restarts every node in turn under load: SIGTERM (advertise
// draining, wait leave_timeout, drain, leave), start again on the same addresses, rejoin.
// Clients use the nodes that are up, as a load balancer with health checks would: a node
// leaves the clients' list before it is stopped and comes back once every node sees it
// serving. No request may fail, and every node serves again after its restart.
func TestClusterRollingRestart(t *testing.T) {
	c := newTestCluster(t, clusterSpec{nodes: 3, repo: clusterRepo(t), policy: writePolicy(t, nodeSplit("m"))})
	c.startAll("m/2")
	load := startLoad(8, "m", c.nodes...)
	defer load.stopLoad()
	load.waitResults(t, 500, "requests", func(inferResult) bool { return true })

	for _, n := range c.nodes {
		load.remove(t, n.name)
		stopAt := time.Now()
		n.d.Signal(t, syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		code, err := n.d.Wait(ctx)
		cancel()
		if err != nil || code != 0 {
			t.Fatalf("%s after SIGTERM: exit %d, %v", n.name, code, err)
		}
		stopped := time.Since(stopAt)
		c.start(n)
		rejoined := c.waitConverged(30*time.Second, "m/2")
		t.Logf("%s: stopped in %s (leave_timeout 1s included), back in every view %s after it was ready again",
			n.name, stopped.Round(time.Millisecond), rejoined.Round(time.Millisecond))
		load.add(n)
		back := time.Now()
		load.waitResults(t, 200, "requests served by "+n.name+" after its restart", func(r inferResult) bool {
			return r.servedBy == n.name && r.start.After(back)
		})
	}
	rs := load.stopLoad()
	if k, list := failedResults(rs); k > 0 {
		t.Fatalf("%d of %d client requests failed during the rolling restart:%s", k, len(rs), list)
	}
	t.Logf("rolling restart of 3 nodes: %d client requests, 0 failed (%s)", len(rs), latencySummary(rs))
}

// rolloutInfo is one rollout of GET /v2/cluster/rollouts.
type rolloutInfo struct {
	Model        string  `json:"model"`
	Phase        string  `json:"phase"`
	Step         int     `json:"step"`
	CanaryWeight float64 `json:"canary_weight"`
	Reason       string  `json:"reason"`
	Generation   uint64  `json:"generation"`
}

func (n *clusterNode) rollout(model string) (rolloutInfo, error) {
	var r struct {
		Rollouts []rolloutInfo `json:"rollouts"`
	}
	if err := n.getJSON(context.Background(), "/v2/cluster/rollouts", &r); err != nil {
		return rolloutInfo{}, err
	}
	for _, x := range r.Rollouts {
		if x.Model == model {
			return x, nil
		}
	}
	return rolloutInfo{}, fmt.Errorf("%s has no rollout of %s", n.name, model)
}

// waitRollout waits until every node shows the model's rollout in phase (and weight, if not
// negative).
func (c *testCluster) waitRollout(model, phase string, weight float64, timeout time.Duration) rolloutInfo {
	c.t.Helper()
	var last rolloutInfo
	testutil.Eventually(c.t, timeout, func() string {
		for _, n := range c.nodes {
			r, err := n.rollout(model)
			if err != nil {
				return err.Error()
			}
			if r.Phase != phase || weight >= 0 && r.CanaryWeight != weight {
				return fmt.Sprintf("%s shows %s %s at %v%% (%s), want %s", n.name, model, r.Phase, r.CanaryWeight, r.Reason, phase)
			}
			last = r
		}
		return ""
	})
	return last
}

// cli runs the inferd binary's CLI.
func (c *testCluster) cli(args ...string) string {
	c.t.Helper()
	out, err := exec.Command(c.bin, args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("inferd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestClusterRollout runs two canary rollouts on three nodes under load. Model m's canary is
// healthy: it goes set_weight 25 → pause (until promoted, by `inferd rollout promote`) →
// analysis (two 2s windows of the leader's counters) → set_weight 50 → pause 1s →
// completed, after which every request gets version 2. Model c's canary fails every request:
// its first analysis window aborts the rollout, every node shows it aborted, and every
// request gets version 1 again.
func TestClusterRollout(t *testing.T) {
	policy := writePolicy(t, `
[[rollout]]
model = "m"
stable = "1"
canary = "2"
steps = [
  { set_weight = 25 },
  { pause = {} },
  { analysis = { window = "2s", intervals = 2, max_error_rate = 0.01, min_requests = 20 } },
  { set_weight = 50 },
  { pause = { duration = "1s" } },
]

[[rollout]]
model = "c"
stable = "1"
canary = "2"
steps = [
  { set_weight = 30 },
  { analysis = { window = "2s", intervals = 3, max_error_rate = 0.05, min_requests = 10, failure_limit = 1 } },
  { set_weight = 100 },
]
`)
	c := newTestCluster(t, clusterSpec{nodes: 3, repo: clusterRepo(t), policy: policy})
	c.startAll("m/1", "m/2", "c/1", "c/2")

	t.Run("advances", func(t *testing.T) {
		c.waitRollout("m", "paused", 25, 20*time.Second)
		load := startLoad(4, "m", c.nodes...)
		defer load.stopLoad()
		load.waitResults(t, 2000, "requests during the pause", func(inferResult) bool { return true })
		paused := load.snapshot()
		if k, list := failedResults(paused); k > 0 {
			t.Fatalf("%d requests failed during the pause:%s", k, list)
		}
		got, _ := shareOf(paused, func(r inferResult) string { return r.version })
		t.Logf("paused at 25%%: version 2 served %.1f%% of %d requests", got["2"], len(paused))
		if math.Abs(got["2"]-25) > 4 { // 4 points is 4.5 standard deviations at 2,000 requests
			t.Errorf("canary share %.1f%% during the 25%% step", got["2"])
		}

		out := c.cli("rollout", "promote", "m", "--url", c.nodes[1].url())
		if !strings.Contains(out, "progressing") {
			t.Errorf("promote did not enter the analysis step:\n%s", out)
		}
		start := time.Now()
		done := c.waitRollout("m", "completed", 100, 30*time.Second)
		t.Logf("promoted → analysis (2 windows of 2s) → 50%% → pause 1s → completed on every node in %s: %s",
			time.Since(start).Round(100*time.Millisecond), done.Reason)
		rs := load.stopLoad()
		if k, list := failedResults(rs); k > 0 {
			t.Fatalf("%d of %d requests failed during the rollout:%s", k, len(rs), list)
		}
		for i := range 300 {
			r := inferAt(context.Background(), c.nodes[i%3], "m", nil)
			if !r.ok() || r.version != "2" {
				t.Fatalf("after completion: %s", r)
			}
		}
		t.Logf("after completion: 300 of 300 requests served by version 2")
	})

	t.Run("aborts", func(t *testing.T) {
		load := startLoad(4, "c", c.nodes...)
		defer load.stopLoad()
		start := time.Now()
		aborted := c.waitRollout("c", "aborted", 0, 30*time.Second)
		t.Logf("aborted on every node %s after load began: %s", time.Since(start).Round(100*time.Millisecond), aborted.Reason)
		if !strings.Contains(aborted.Reason, "analysis failed") {
			t.Errorf("abort reason %q does not name the failed analysis", aborted.Reason)
		}
		rs := load.stopLoad()
		// Failures are the canary's (version 2 fails every request); stable never fails.
		bad := 0
		for _, r := range rs {
			if !r.ok() && (r.err != nil || r.status != http.StatusInternalServerError) {
				t.Errorf("a request failed other than by the canary's injected error: %s", r)
			}
			if !r.ok() {
				bad++
			}
		}
		t.Logf("during the canary: %d of %d requests got the canary's 500", bad, len(rs))
		for _, n := range c.nodes {
			out := c.cli("rollout", "status", "c", "--url", n.url())
			if !strings.Contains(out, "aborted") || !strings.Contains(out, "0%") {
				t.Errorf("inferd rollout status c on %s:\n%s", n.name, out)
			}
		}
		for i := range 300 {
			r := inferAt(context.Background(), c.nodes[i%3], "c", nil)
			if !r.ok() || r.version != "1" {
				t.Fatalf("after the abort: %s", r)
			}
		}
		t.Logf("after the abort: 300 of 300 requests served by version 1 on every node")
	})
}

// TestClusterWrongKey starts a node whose gossip key differs from the cluster's: its joins
// fail (memberlist cannot decrypt or authenticate its packets), it never becomes a member of
// the cluster and the cluster never becomes one of its, through several re-join attempts.
func TestClusterWrongKey(t *testing.T) {
	c := newTestCluster(t, clusterSpec{nodes: 3, repo: clusterRepo(t)})
	other := filepath.Join(t.TempDir(), "other.key")
	c.cli("keygen", "--out", other)
	intruder := c.nodes[2]
	cfg, err := os.ReadFile(intruder.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte("secret_key_file = "), []byte(fmt.Sprintf("secret_key_file = %q\n# was: ", other)), 1)
	if err := os.WriteFile(intruder.config, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	good := c.nodes[:2]
	for _, n := range good {
		c.start(n)
	}
	testutil.Eventually(t, 30*time.Second, func() string { return c.converged(good, "m") })
	c.start(intruder)
	if !strings.Contains(intruder.d.Logs(), "no seed reachable") {
		t.Errorf("the node with the wrong key did not report a failed join:\n%s", intruder.d.Logs())
	}
	// The re-join loop tries every 5s at first: watch for 12s, over two attempts.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			m, err := n.members(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			names := []string{}
			for _, x := range m.Members {
				names = append(names, x.Name)
			}
			sort.Strings(names)
			want := "n1,n2"
			if n == intruder {
				want = intruder.name
			}
			if got := strings.Join(names, ","); got != want {
				t.Fatalf("%s lists members %s, want %s: a node with another key got in", n.name, got, want)
			}
		}
		<-time.After(200 * time.Millisecond) // pacing the watch of an absence
	}
	// The cluster serves as before.
	for i := range 20 {
		if r := inferAt(context.Background(), good[i%2], "m", nil); !r.ok() {
			t.Fatalf("the cluster with an intruder next to it: %s", r)
		}
	}
	t.Logf("a node with another key stayed outside for 12s (re-join attempts included); the two-node cluster kept serving")
}
