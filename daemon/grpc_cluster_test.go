package daemon_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/cluster/route"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/internal/testutil"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tensor"
)

// scale is a fake model that multiplies its input by k.
func scale(k float32) func([]tensor.Tensor) ([]tensor.Tensor, error) {
	return func(in []tensor.Tensor) ([]tensor.Tensor, error) {
		v := in[0].Float32s()
		for i := range v {
			v[i] *= k
		}
		return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, v)}, nil
	}
}

// grpcNode is an in-process daemon of a test cluster with a gRPC listener.
type grpcNode struct {
	url, grpc, gossip string
}

// startGRPCNode runs a daemon named name in a cluster (joining join), with gRPC on and the
// tokens file, over a fake engine serving the models (each version 1, multiplying by its
// factor).
func startGRPCNode(t *testing.T, name string, join []string, tokens string, models map[string]float32) grpcNode {
	t.Helper()
	repo := t.TempDir()
	rt := enginetest.New()
	for m, k := range models {
		testutil.WriteFile(t, repo, m+"/1/model.onnx", []byte("fake"))
		rt.Register(filepath.Join(repo, m, "1", "model.onnx"), doubleSig, scale(k))
	}
	cfg := config.Default()
	cfg.Models.Repository = repo
	cfg.Auth.TokensFile = tokens
	cfg.Cluster.Enabled = true
	cfg.Cluster.Name = name
	cfg.Cluster.Bind = "127.0.0.1:0"
	cfg.Cluster.Join = join
	cfg.Cluster.LeaveTimeout = 10 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(&cfg, daemon.Options{Version: "test", Runtime: rt, Listener: ln, GRPCListener: gln}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	n := grpcNode{url: "http://" + ln.Addr().String(), grpc: gln.Addr().String()}
	testutil.Eventually(t, 20*time.Second, func() string {
		var m struct {
			Members []struct {
				Name       string `json:"name"`
				GossipAddr string `json:"gossip_addr"`
			} `json:"members"`
		}
		if err := getWithToken(n.url+"/v2/cluster/members", &m); err != nil {
			return err.Error()
		}
		for _, x := range m.Members {
			if x.Name == name {
				n.gossip = x.GossipAddr
				return ""
			}
		}
		return fmt.Sprintf("%s does not list itself yet", name)
	})
	return n
}

func getWithToken(url string, v any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+grpcToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

func fp32Request(model, id string, raw bool, v ...float32) *pb.ModelInferRequest {
	in := &pb.ModelInferRequest_InferInputTensor{Name: "x", Datatype: "FP32", Shape: []int64{int64(len(v))}}
	m := &pb.ModelInferRequest{ModelName: model, Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}
	if raw {
		b := make([]byte, 0, 4*len(v))
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
		m.RawInputContents = [][]byte{b}
	} else {
		in.Contents = &pb.InferTensorContents{Fp32Contents: v}
	}
	return m
}

// outputOf is the response's one FP32 output.
func outputOf(t *testing.T, r *pb.ModelInferResponse) []float32 {
	t.Helper()
	if len(r.GetRawOutputContents()) != 1 || len(r.GetOutputs()) != 1 || r.Outputs[0].Datatype != "FP32" {
		t.Fatalf("response %v: want one raw FP32 output", r)
	}
	raw := r.RawOutputContents[0]
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// In a cluster a gRPC request for a model this node does not serve is forwarded by the same
// router as HTTP's, carrying the client's token, and the response names the node that served
// it: metadata for a unary call, a parameter on each response of a stream. The answer's code
// comes from the peer's HTTP status; a request this node can refuse is refused here.
func TestGRPCClusterForwarding(t *testing.T) {
	if grpcapi.ServedByHeader != route.DefaultServedByHeader {
		t.Fatalf("grpcapi.ServedByHeader %q is not the router's %q", grpcapi.ServedByHeader, route.DefaultServedByHeader)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("infer "+grpcToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startGRPCNode(t, "a", nil, tokens, map[string]float32{"double": 2})
	startGRPCNode(t, "b", []string{a.gossip}, tokens, map[string]float32{"double": 2, "triple": 3})
	testutil.Eventually(t, 20*time.Second, func() string {
		var m struct {
			Members []struct {
				Name     string `json:"name"`
				Routable bool   `json:"routable"`
				Models   []struct{ Model, State string }
			} `json:"members"`
		}
		if err := getWithToken(a.url+"/v2/cluster/members", &m); err != nil {
			return err.Error()
		}
		for _, x := range m.Members {
			if x.Name == "b" && x.Routable && slices.ContainsFunc(x.Models, func(v struct{ Model, State string }) bool {
				return v.Model == "triple" && v.State == "ready"
			}) {
				return ""
			}
		}
		return fmt.Sprintf("a does not see b serving triple: %+v", m)
	})

	cc, err := grpc.NewClient("passthrough:///"+a.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pb.NewGRPCInferenceServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+grpcToken)

	unary := []struct {
		model, servedBy string
		raw             bool
		want            []float32
	}{
		{"triple", "b", false, []float32{3, 6, 9}},
		{"triple", "b", true, []float32{3, 6, 9}},
		{"double", "a", false, []float32{2, 4, 6}}, // served here: the local node comes first
		{"double", "a", true, []float32{2, 4, 6}},
	}
	for _, u := range unary {
		var header metadata.MD
		resp, err := c.ModelInfer(ctx, fp32Request(u.model, "u-"+u.model, u.raw, 1, 2, 3), grpc.Header(&header))
		if err != nil {
			t.Fatalf("%s raw %v: %v", u.model, u.raw, err)
		}
		if got := header.Get(grpcapi.MetadataServedBy); !slices.Equal(got, []string{u.servedBy}) {
			t.Errorf("%s raw %v: %s %q, want %q", u.model, u.raw, grpcapi.MetadataServedBy, got, u.servedBy)
		}
		if got := outputOf(t, resp); !slices.Equal(got, u.want) || resp.Id != "u-"+u.model || resp.ModelName != u.model || resp.ModelVersion != "1" {
			t.Errorf("%s raw %v: %s %s v%s %v, want %v", u.model, u.raw, resp.Id, resp.ModelName, resp.ModelVersion, got, u.want)
		}
	}

	// Failures: the peer's 400 for an input its model does not take, the token the peer
	// checks, and what this node answers itself.
	bad := fp32Request("triple", "bad", false, 1)
	bad.Inputs[0].Name = "nope"
	failures := []struct {
		name     string
		ctx      context.Context
		req      *pb.ModelInferRequest
		code     codes.Code
		servedBy string
	}{
		{"peer refuses the input", ctx, bad, codes.InvalidArgument, "b"},
		{"unknown model", ctx, fp32Request("nope", "", false, 1), codes.NotFound, "a"},
		{"no token", context.Background(), fp32Request("triple", "", false, 1), codes.Unauthenticated, ""},
	}
	for _, f := range failures {
		var header metadata.MD
		_, err := c.ModelInfer(f.ctx, f.req, grpc.Header(&header))
		if status.Code(err) != f.code {
			t.Errorf("%s: %v, want %s", f.name, err, f.code)
		}
		if got := header.Get(grpcapi.MetadataServedBy); f.servedBy != "" && !slices.Equal(got, []string{f.servedBy}) {
			t.Errorf("%s: %s %q, want %q", f.name, grpcapi.MetadataServedBy, got, f.servedBy)
		}
		t.Logf("%s: %v (served by %q)", f.name, err, header.Get(grpcapi.MetadataServedBy))
	}

	// A stream: requests for both models in flight, each answer naming its node.
	stream, err := c.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const each = 8
	want := map[string]struct {
		node string
		out  []float32
	}{"bad": {"b", nil}}
	for i := range each {
		for _, m := range []string{"triple", "double"} {
			id := fmt.Sprintf("%s-%d", m, i)
			req := fp32Request(m, id, i%2 == 0, float32(i), 1)
			k, node := float32(3), "b"
			if m == "double" {
				k, node = 2, "a"
			}
			want[id] = struct {
				node string
				out  []float32
			}{node, []float32{k * float32(i), k}}
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		if i == each/2 {
			if err := stream.Send(bad); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		resp := r.GetInferResponse()
		id := resp.GetId()
		w, ok := want[id]
		if !ok || seen[id] {
			t.Fatalf("stream: unexpected or repeated response %q", id)
		}
		seen[id] = true
		if node := resp.GetParameters()[grpcapi.ParamServedBy].GetStringParam(); node != w.node {
			t.Errorf("stream %s: %s %q, want %q", id, grpcapi.ParamServedBy, node, w.node)
		}
		if id == "bad" {
			if code := resp.GetParameters()[grpcapi.ParamErrorCode].GetStringParam(); r.ErrorMessage == "" || code != "INVALID_ARGUMENT" {
				t.Errorf("stream bad request: %q %q, want INVALID_ARGUMENT", code, r.ErrorMessage)
			}
			continue
		}
		if r.ErrorMessage != "" {
			t.Errorf("stream %s: %s", id, r.ErrorMessage)
			continue
		}
		if got := outputOf(t, resp); !slices.Equal(got, w.out) {
			t.Errorf("stream %s: %v, want %v", id, got, w.out)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("stream: %d responses for %d requests", len(seen), len(want))
	}

	// The forwarded requests are the router's: its counters say how many went to b.
	var st struct {
		Routing struct {
			Peers []struct {
				Node      string `json:"node"`
				Forwarded uint64 `json:"forwarded"`
			} `json:"peers"`
		} `json:"routing"`
	}
	if err := getWithToken(a.url+"/v2/cluster/members", &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Routing.Peers {
		if p.Node == "b" && p.Forwarded < 2+1+1+each {
			t.Errorf("a's router forwarded %d requests to b, want at least %d", p.Forwarded, 2+1+1+each)
		}
	}
}
