//go:build e2e && soak

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

var soakDuration = flag.Duration("soak.duration", 10*time.Minute, "how long make soak runs")

// soakNode is one daemon of the soak cluster; it can be killed and started again under the
// same name, gossip port and repository.
type soakNode struct {
	name, repo, config string
	mu                 sync.Mutex
	d                  *daemontest.Daemon
	up                 bool
}

func (n *soakNode) url() (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return "", false
	}
	return n.d.URL, true
}

// grpcAddr is the node's gRPC listener while it is up (a new port after each restart).
func (n *soakNode) grpcAddr() (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.up {
		return "", false
	}
	return n.d.GRPC, true
}

// gone reports whether the node no longer listens at addr: it is down, or it restarted.
func (n *soakNode) gone(addr string) bool {
	cur, up := n.grpcAddr()
	return !up || cur != addr
}

// pickGRPC picks a node that is up, at random, with its gRPC address.
func pickGRPC(nodes []*soakNode, r *rand.Rand) (*soakNode, string, bool) {
	var up []*soakNode
	var addrs []string
	for _, n := range nodes {
		if a, ok := n.grpcAddr(); ok {
			up, addrs = append(up, n), append(addrs, a)
		}
	}
	if len(up) == 0 {
		return nil, "", false
	}
	i := r.IntN(len(up))
	return up[i], addrs[i], true
}

// soakStats is what the clients saw.
type soakStats struct {
	sent, ok, redirected, failed atomic.Int64
	grpcOK, streamOK             atomic.Int64 // of ok: unary gRPC calls, requests on streams
	mu                           sync.Mutex
	failures                     []string
	window                       []time.Duration // latencies of the current interval
}

func (s *soakStats) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 50 {
		s.failures = append(s.failures, time.Now().Format("15:04:05.000 ")+msg)
	}
}

func (s *soakStats) observe(d time.Duration) {
	s.mu.Lock()
	s.window = append(s.window, d)
	s.mu.Unlock()
}

// p99 returns the p99 of the interval's latencies and starts a new interval.
func (s *soakStats) p99() (time.Duration, int) {
	s.mu.Lock()
	w := s.window
	s.window = nil
	s.mu.Unlock()
	if len(w) == 0 {
		return 0, 0
	}
	slices.Sort(w)
	return w[(len(w)*99)/100], len(w)
}

// soakClient sends requests to a random node that is up, in JSON or binary, and checks each
// answer against the model's reference. A connection that fails before any answer (the node
// was killed under it) is retried on another node, as a load balancer would; any HTTP error is a
// failure.
func soakClient(ctx context.Context, nodes []*soakNode, binaryFormat bool, seed uint64, st *soakStats) {
	r := rand.New(rand.NewPCG(seed, 7))
	client := &http.Client{Timeout: 30 * time.Second}
	for ctx.Err() == nil {
		x := []float32{r.Float32(), r.Float32(), r.Float32(), r.Float32()}
		body, hlen := soakBody(x, binaryFormat)
		st.sent.Add(1)
		for attempt := 0; ; attempt++ {
			var up []*soakNode
			for _, n := range nodes {
				if _, ok := n.url(); ok {
					up = append(up, n)
				}
			}
			if len(up) == 0 || ctx.Err() != nil {
				return
			}
			node := up[r.IntN(len(up))]
			url, _ := node.url()
			req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v2/models/mlp/infer", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if hlen >= 0 {
				req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(hlen))
			}
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// A node the test is killing or restarting fails the connections it had: a load
				// balancer re-sends such a request elsewhere. Any other transport error is a
				// failure.
				if _, stillUp := node.url(); !stillUp && attempt < 5 {
					st.redirected.Add(1)
					continue
				}
				st.fail(fmt.Sprintf("%s: %v", url, err))
				break
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			st.observe(time.Since(start))
			if resp.StatusCode != 200 {
				st.fail(fmt.Sprintf("%s: %d %s", url, resp.StatusCode, b))
				break
			}
			if err := checkMLP(resp.Header.Get("Inference-Header-Content-Length"), b, x); err != nil {
				st.fail(fmt.Sprintf("%s: %v", url, err))
				break
			}
			st.ok.Add(1)
			break
		}
	}
}

// soakGRPCClient sends ModelInfer calls (typed and raw in turn) to a random node that is up
// and checks each answer as soakClient does. A call that fails UNAVAILABLE because its node
// went away under it (killed, rolled or restarted) is re-sent elsewhere; any other failure
// counts.
func soakGRPCClient(ctx context.Context, nodes []*soakNode, seed uint64, st *soakStats, conns *grpcConns) {
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; ctx.Err() == nil; i++ {
		x := []float32{r.Float32(), r.Float32(), r.Float32(), r.Float32()}
		st.sent.Add(1)
		for attempt := 0; ; attempt++ {
			node, addr, ok := pickGRPC(nodes, r)
			if !ok || ctx.Err() != nil {
				return
			}
			c, err := conns.client(addr)
			if err != nil {
				st.fail(fmt.Sprintf("grpc %s: %v", addr, err))
				break
			}
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			start := time.Now()
			resp, err := c.ModelInfer(callCtx, grpcFP32Request("mlp", "input", strconv.Itoa(i), i%2 == 0, x))
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if status.Code(err) == codes.Unavailable && node.gone(addr) && attempt < 5 {
					conns.drop(addr)
					st.redirected.Add(1)
					continue
				}
				st.fail(fmt.Sprintf("grpc %s: %v", addr, err))
				break
			}
			st.observe(time.Since(start))
			if err := checkMLPResponse(resp, x); err != nil {
				st.fail(fmt.Sprintf("grpc %s: %v", addr, err))
				break
			}
			st.ok.Add(1)
			st.grpcOK.Add(1)
			break
		}
	}
}

// soakStreamClient keeps inFlight requests on a ModelStreamInfer stream to a random node that
// is up, matches each answer by id and checks it as soakClient does; after perStream requests
// it closes the stream (which must then end OK) and opens one to another node. When a stream
// ends because its node went away, the requests it had not answered are re-sent on the next
// stream; any other end, or an error answer, is a failure.
func soakStreamClient(ctx context.Context, nodes []*soakNode, inFlight, perStream int, seed uint64, st *soakStats, conns *grpcConns) {
	r := rand.New(rand.NewPCG(seed, 7))
	type pending struct {
		x     []float32
		start time.Time
	}
	var resend [][]float32
	seq := 0
	for ctx.Err() == nil {
		node, addr, ok := pickGRPC(nodes, r)
		if !ok {
			return
		}
		c, err := conns.client(addr)
		if err != nil {
			st.fail(fmt.Sprintf("grpc stream %s: %v", addr, err))
			return
		}
		sctx, cancel := context.WithCancel(ctx)
		stream, err := c.ModelStreamInfer(sctx)
		if err != nil {
			cancel()
			if ctx.Err() == nil && !node.gone(addr) {
				st.fail(fmt.Sprintf("grpc stream %s: %v", addr, err))
			}
			continue
		}
		waiting := map[string]pending{}
		sent := 0
		var end error
		for ctx.Err() == nil {
			for len(waiting) < inFlight && sent < perStream {
				var x []float32
				if len(resend) > 0 {
					x, resend = resend[0], resend[1:]
				} else {
					x = []float32{r.Float32(), r.Float32(), r.Float32(), r.Float32()}
					st.sent.Add(1)
				}
				seq++
				id := strconv.Itoa(seq)
				if err := stream.Send(grpcFP32Request("mlp", "input", id, seq%2 == 0, x)); err != nil {
					resend = append(resend, x) // never sent: Recv says why the stream ended
					break
				}
				waiting[id] = pending{x, time.Now()}
				sent++
			}
			if len(waiting) == 0 {
				if err := stream.CloseSend(); err != nil {
					end = err
				} else if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
					end = fmt.Errorf("stream did not end OK after its last answer: %v", err)
				}
				break
			}
			resp, err := stream.Recv()
			if err != nil {
				end = err
				break
			}
			id := resp.GetInferResponse().GetId()
			p, ok := waiting[id]
			if !ok {
				st.fail(fmt.Sprintf("grpc stream %s: an answer for id %q, which is not waiting", addr, id))
				continue
			}
			delete(waiting, id)
			st.observe(time.Since(p.start))
			if resp.ErrorMessage != "" {
				st.fail(fmt.Sprintf("grpc stream %s: request %s: %s", addr, id, resp.ErrorMessage))
				continue
			}
			if err := checkMLPResponse(resp.GetInferResponse(), p.x); err != nil {
				st.fail(fmt.Sprintf("grpc stream %s: request %s: %v", addr, id, err))
				continue
			}
			st.ok.Add(1)
			st.streamOK.Add(1)
		}
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case end == nil:
		case node.gone(addr):
			conns.drop(addr)
			for _, p := range waiting {
				resend = append(resend, p.x)
				st.redirected.Add(1)
			}
		default:
			st.fail(fmt.Sprintf("grpc stream %s ended with %d requests unanswered: %v", addr, len(waiting), end))
		}
	}
}

func checkMLPResponse(resp *pb.ModelInferResponse, x []float32) error {
	got, err := fp32Output(resp)
	if err != nil {
		return err
	}
	return compareMLP(got, x)
}

func soakBody(x []float32, binaryFormat bool) ([]byte, int) {
	if !binaryFormat {
		b, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "input", "shape": []int{1, 4}, "datatype": "FP32", "data": x}}})
		return b, -1
	}
	h := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}`)
	b := slices.Clone(h)
	for _, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b, len(h)
}

func checkMLP(hlen string, body []byte, x []float32) error {
	var got []float32
	if hlen != "" {
		n, err := strconv.Atoi(hlen)
		if err != nil || n > len(body) {
			return fmt.Errorf("bad header length %q", hlen)
		}
		for i := n; i+4 <= len(body); i += 4 {
			got = append(got, math.Float32frombits(binary.LittleEndian.Uint32(body[i:])))
		}
	} else {
		var r struct {
			Outputs []struct{ Data []float32 } `json:"outputs"`
		}
		if err := json.Unmarshal(body, &r); err != nil || len(r.Outputs) != 1 {
			return fmt.Errorf("bad body %q", body)
		}
		got = r.Outputs[0].Data
	}
	return compareMLP(got, x)
}

// compareMLP checks an output of the soak's model against its reference for input x.
func compareMLP(got, x []float32) error {
	want := testmodels.MLPForward(x)
	if len(got) != len(want) {
		return fmt.Errorf("%d outputs, want %d", len(got), len(want))
	}
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-4 {
			return fmt.Errorf("output %v, want %v", got, want)
		}
	}
	return nil
}

type nodeSample struct {
	rssKiB     int64
	goroutines float64
}

// sampleRange takes five samples a second apart and keeps, for the start of a run, the largest
// values, and for its end the smallest: connection pools and keep-alive connections move a
// node's goroutines by a few either way, and a leak is growth beyond that.
func sampleRange(t *testing.T, n *soakNode, end bool) nodeSample {
	out := sampleNode(t, n)
	for range 4 {
		<-time.After(time.Second) // the sampling pace
		s := sampleNode(t, n)
		if end {
			out.rssKiB, out.goroutines = min(out.rssKiB, s.rssKiB), min(out.goroutines, s.goroutines)
		} else {
			out.rssKiB, out.goroutines = max(out.rssKiB, s.rssKiB), max(out.goroutines, s.goroutines)
		}
	}
	return out
}

func sampleNode(t *testing.T, n *soakNode) nodeSample {
	n.mu.Lock()
	d := n.d
	n.mu.Unlock()
	return nodeSample{rssKiB: rssKiB(t, d.PID()), goroutines: goroutines(t, d.URL)}
}

// TestSoak runs a 3-node cluster under steady JSON, binary and gRPC (unary and stream) load
// while, at random intervals, model versions are swapped, a corrupt model is dropped in, the
// configuration is reloaded, a node is SIGKILLed and restarted, and a node is rolled (SIGTERM,
// graceful leave, restart). Every request must succeed; RSS and goroutines of a node that ran the whole time must not grow
// by more than 10%.
func TestSoak(t *testing.T) {
	bin := daemontest.Build(t, t.TempDir())
	root := t.TempDir()
	ports := []int{freePort(t, "127.0.0.1", true), freePort(t, "127.0.0.1", true), freePort(t, "127.0.0.1", true)}
	// The mlp traffic is split evenly across the nodes, so two thirds of each node's requests
	// are forwarded: the failover of forwarded requests is soaked too.
	policy := filepath.Join(root, "routing.toml")
	split := "[[split]]\nmodel = \"mlp\"\ntargets = [ { node = \"soak-0\", weight = 33.34 }, { node = \"soak-1\", weight = 33.33 }, { node = \"soak-2\", weight = 33.33 } ]\n"
	if err := os.WriteFile(policy, []byte(split), 0o644); err != nil {
		t.Fatal(err)
	}
	var nodes []*soakNode
	for i := range 3 {
		n := &soakNode{name: fmt.Sprintf("soak-%d", i), repo: filepath.Join(root, fmt.Sprintf("repo%d", i))}
		if err := testmodels.WriteRepository(n.repo); err != nil {
			t.Fatal(err)
		}
		var join []string
		for j, p := range ports {
			if j != i {
				join = append(join, fmt.Sprintf("%q", fmt.Sprintf("127.0.0.1:%d", p)))
			}
		}
		n.config = filepath.Join(root, n.name+".toml")
		cfg := fmt.Sprintf("[models]\nrepository = %q\nquiet_period = \"200ms\"\n[cluster]\nenabled = true\nname = %q\nbind = \"127.0.0.1:%d\"\njoin = [%s]\nper_try_timeout = \"2s\"\nleave_timeout = \"2s\"\npolicy_file = %q\n",
			n.repo, n.name, ports[i], joinList(join), policy)
		if err := os.WriteFile(n.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	start := func(n *soakNode) {
		d := daemontest.Start(t, bin, n.config, "INFERD_GRPC_LISTEN=127.0.0.1:0")
		d.WaitReady(t)
		n.mu.Lock()
		n.d, n.up = d, true
		n.mu.Unlock()
	}
	for _, n := range nodes {
		start(n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var st soakStats
	var wg sync.WaitGroup
	// Four HTTP clients (JSON and binary), one of unary gRPC calls (typed and raw in turn), and
	// one that keeps four requests in flight on a ModelStreamInfer stream.
	for i := range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); soakClient(ctx, nodes, i%2 == 1, uint64(i), &st) }()
	}
	var conns grpcConns
	defer conns.closeAll()
	wg.Go(func() { soakGRPCClient(ctx, nodes, 4, &st, &conns) })
	wg.Go(func() { soakStreamClient(ctx, nodes, 4, 200, 5, &st, &conns) })
	// Node 0 runs the whole time: its resources at the start and the end are compared.
	<-time.After(min(30*time.Second, *soakDuration/10)) // warmup: the load settles
	st.p99()
	before := sampleRange(t, nodes[0], false)

	r := rand.New(rand.NewPCG(42, 42))
	version := 1
	events := map[string]int{}
	deadline := time.Now().Add(*soakDuration)
	nextReport := time.Now().Add(30 * time.Second)
	var report []string
	corrupt := ""
	for time.Now().Before(deadline) {
		<-time.After(time.Duration(2+r.IntN(6)) * time.Second) // the chaos schedule's own pace
		if corrupt != "" {
			if err := os.RemoveAll(corrupt); err != nil {
				t.Fatal(err)
			}
			corrupt = ""
		}
		if time.Now().After(nextReport) {
			p99, n := st.p99()
			report = append(report, fmt.Sprintf("%s p99 %v over %d requests", time.Now().Format("15:04:05"), p99.Round(time.Microsecond), n))
			nextReport = time.Now().Add(30 * time.Second)
		}
		switch ev := r.IntN(5); ev {
		case 0: // swap: a new version of mlp (same weights) on every node
			version++
			for _, n := range nodes {
				writeModel(t, n.repo, "mlp", version, testmodels.MLP())
			}
			events["model swaps"]++
		case 1: // a corrupt model next to it, then removed
			n := nodes[r.IntN(3)]
			writeModel(t, n.repo, "mlp", version+1, []byte("this is not an onnx model"))
			corrupt = filepath.Join(n.repo, "mlp", strconv.Itoa(version+1))
			events["corrupt models"]++
		case 2: // configuration reload
			n := nodes[r.IntN(3)]
			if u, ok := n.url(); ok && u != "" {
				n.mu.Lock()
				n.d.Signal(t, syscall.SIGHUP)
				n.mu.Unlock()
				events["config reloads"]++
			}
		case 3, 4: // kill or roll node 1 or 2
			n := nodes[1+r.IntN(2)]
			n.mu.Lock()
			n.up = false
			d := n.d
			n.mu.Unlock()
			if ev == 3 {
				d.Signal(t, syscall.SIGKILL)
				events["SIGKILLs"]++
			} else {
				d.Signal(t, syscall.SIGTERM)
				events["rolling restarts"]++
			}
			waitCtx, stop := context.WithTimeout(context.Background(), 60*time.Second)
			_, _ = d.Wait(waitCtx)
			stop()
			start(n)
		}
	}
	after := sampleRange(t, nodes[0], true)
	var final []string
	for _, n := range nodes[1:] {
		s := sampleNode(t, n)
		final = append(final, fmt.Sprintf("%s (restarted) RSS %d KiB, goroutines %v", n.name, s.rssKiB, s.goroutines))
	}
	cancel()
	wg.Wait()
	for _, line := range report {
		t.Log(line)
	}
	t.Logf("soak %v: %d requests sent, %d succeeded (%d of them unary gRPC, %d on gRPC streams), %d failed; %d re-sent after the node they were on was killed or stopped; events %v",
		*soakDuration, st.sent.Load(), st.ok.Load(), st.grpcOK.Load(), st.streamOK.Load(), st.failed.Load(), st.redirected.Load(), events)
	t.Logf("node soak-0 (ran throughout; most of 5 samples at the start, least of 5 at the end) RSS %d KiB -> %d KiB, goroutines %v -> %v; %v", before.rssKiB, after.rssKiB, before.goroutines, after.goroutines, final)
	for _, f := range st.failures {
		t.Error(f)
	}
	if float64(after.rssKiB) > 1.10*float64(before.rssKiB) {
		t.Errorf("RSS grew from %d KiB to %d KiB (more than 10%%)", before.rssKiB, after.rssKiB)
	}
	if after.goroutines > 1.10*before.goroutines {
		t.Errorf("goroutines grew from %v to %v (more than 10%%)", before.goroutines, after.goroutines)
	}
}

func joinList(addrs []string) string {
	out := ""
	for i, a := range addrs {
		if i > 0 {
			out += ", "
		}
		out += a
	}
	return out
}
