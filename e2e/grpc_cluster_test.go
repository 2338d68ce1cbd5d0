//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/inferd/inferd/kserve/kservepb"
)

// grpcConns keeps one client connection per gRPC address; an address a node no longer
// listens on (it restarted on another port) is dropped.
type grpcConns struct {
	mu sync.Mutex
	m  map[string]*grpc.ClientConn
}

func (g *grpcConns) client(addr string) (pb.GRPCInferenceServiceClient, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*grpc.ClientConn{}
	}
	cc := g.m[addr]
	if cc == nil {
		var err error
		if cc, err = grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, err
		}
		g.m[addr] = cc
	}
	return pb.NewGRPCInferenceServiceClient(cc), nil
}

func (g *grpcConns) drop(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cc := g.m[addr]; cc != nil {
		_ = cc.Close()
		delete(g.m, addr)
	}
}

func (g *grpcConns) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for addr, cc := range g.m {
		_ = cc.Close()
		delete(g.m, addr)
	}
}

// grpcFP32Request is a request of one FP32 input [1, len(x)], raw or in typed contents.
func grpcFP32Request(model, name, id string, raw bool, x []float32) *pb.ModelInferRequest {
	in := &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "FP32", Shape: []int64{1, int64(len(x))}}
	m := &pb.ModelInferRequest{ModelName: model, Id: id, Inputs: []*pb.ModelInferRequest_InferInputTensor{in}}
	if raw {
		b := make([]byte, 0, 4*len(x))
		for _, v := range x {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		m.RawInputContents = [][]byte{b}
	} else {
		in.Contents = &pb.InferTensorContents{Fp32Contents: x}
	}
	return m
}

// fp32Output is a response's one FP32 output (outputs always come raw).
func fp32Output(r *pb.ModelInferResponse) ([]float32, error) {
	if len(r.GetOutputs()) != 1 || len(r.GetRawOutputContents()) != 1 || r.Outputs[0].Datatype != "FP32" {
		return nil, fmt.Errorf("response %v: want one raw FP32 output", r)
	}
	raw := r.RawOutputContents[0]
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, nil
}

// checkAddConst checks an answer of the cluster suites' model m: the output is the input plus
// the constant of the version the response names (tag).
func checkAddConst(r *pb.ModelInferResponse) error {
	out, err := fp32Output(r)
	if err != nil {
		return err
	}
	v, err := strconv.Atoi(r.GetModelVersion())
	if err != nil || len(out) != len(addConstInput) {
		return fmt.Errorf("version %q, output %v", r.GetModelVersion(), out)
	}
	for i, x := range addConstInput {
		if math.Abs(float64(out[i]-x-tag(v, 0))) > 1e-3 {
			return fmt.Errorf("version %d answered %v: not what version %d computes", v, out, v)
		}
	}
	return nil
}

// TestClusterGRPC sends gRPC requests to n1 of two real daemons whose split sends model m to
// n2: each is forwarded by the router and names n2 (inferd-served-by metadata, the
// inferd_served_by parameter on a stream). Then n2 is SIGKILLed, and every request still
// succeeds, failed over to n1 within the request as HTTP's are.
func TestClusterGRPC(t *testing.T) {
	policy := writePolicy(t, `
[[split]]
model = "m"
targets = [ { node = "n1", weight = 0 }, { node = "n2", weight = 100 } ]
`)
	c := newTestCluster(t, clusterSpec{nodes: 2, repo: clusterRepo(t), policy: policy, grpc: true})
	c.startAll("m")
	n1, n2 := c.nodes[0], c.nodes[1]
	var conns grpcConns
	defer conns.closeAll()
	client, err := conns.client(n1.grpc)
	if err != nil {
		t.Fatal(err)
	}
	unary := func(i int) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var header metadata.MD
		resp, err := client.ModelInfer(ctx, grpcFP32Request("m", "input", strconv.Itoa(i), i%2 == 0, addConstInput), grpc.Header(&header))
		if err != nil {
			return "", err
		}
		servedBy := header.Get("inferd-served-by")
		if len(servedBy) != 1 {
			return "", fmt.Errorf("inferd-served-by %q", servedBy)
		}
		return servedBy[0], checkAddConst(resp)
	}
	for i := range 20 {
		if node, err := unary(i); err != nil || node != "n2" {
			t.Fatalf("request %d at n1: served by %q, %v; want n2", i, node, err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const onStream = 16
	for i := range onStream {
		if err := stream.Send(grpcFP32Request("m", "input", "s"+strconv.Itoa(i), i%2 == 1, addConstInput)); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	answered := map[string]bool{}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		resp := r.GetInferResponse()
		node := resp.GetParameters()["inferd_served_by"].GetStringParam()
		if r.ErrorMessage != "" || node != "n2" || answered[resp.GetId()] {
			t.Fatalf("stream answer %q from %q: %s", resp.GetId(), node, r.ErrorMessage)
		}
		if err := checkAddConst(resp); err != nil {
			t.Fatalf("stream answer %q: %v", resp.GetId(), err)
		}
		answered[resp.GetId()] = true
	}
	if len(answered) != onStream {
		t.Fatalf("%d stream answers for %d requests", len(answered), onStream)
	}

	n2.d.Signal(t, syscall.SIGKILL)
	for i := range 40 {
		if node, err := unary(i); err != nil || node != "n1" {
			t.Fatalf("request %d at n1 after n2's SIGKILL: served by %q, %v; want n1", i, node, err)
		}
	}
	m, err := n1.members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("n1's router after n2's SIGKILL: %d routed, %d retries, peers %+v", m.Routing.Routed, m.Routing.Retries, m.Routing.Peers)
}
