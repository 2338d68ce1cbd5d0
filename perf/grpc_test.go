package perf_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/perf"
	"github.com/inferd/inferd/tensor"
)

// fakeGRPC answers ModelInfer for "mlp" like fakeServer does over HTTP, counting raw and typed
// requests; every failEach-th gets RESOURCE_EXHAUSTED.
type fakeGRPC struct {
	pb.UnimplementedGRPCInferenceServiceServer
	failEach    int64
	n, raw, bad atomic.Int64
}

func (f *fakeGRPC) ModelInfer(_ context.Context, m *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	n := f.n.Add(1)
	req, err := kservegrpc.DecodeRequest(m, kserve.Limits{})
	if err != nil || m.ModelName != "mlp" || len(req.Inputs) != 1 || req.Inputs[0].Tensor.DataType != tensor.FP32 {
		f.bad.Add(1)
		return nil, status.Error(codes.InvalidArgument, "unexpected request")
	}
	if len(m.RawInputContents) > 0 {
		f.raw.Add(1)
	}
	if f.failEach > 0 && n%f.failEach == 0 {
		return nil, status.Error(codes.ResourceExhausted, "exceeds maximum queue size")
	}
	rows := req.Inputs[0].Tensor.Shape[0]
	return kservegrpc.EncodeResponse("mlp", "1", m.Id, []tensor.Tensor{tensor.FromFloat32s("output", []int64{rows, 3}, make([]float32, 3*rows))}), nil
}

func startFakeGRPC(t *testing.T, f *fakeGRPC) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	pb.RegisterGRPCInferenceServiceServer(gs, f)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// --grpc sends every measured request as a ModelInfer call, raw with --format binary and typed
// otherwise, and counts failures by status code.
func TestGRPCRequests(t *testing.T) {
	for _, binary := range []bool{true, false} {
		g := &fakeGRPC{failEach: 5}
		rep, err := perf.Run(context.Background(), perf.Config{
			URL: startFake(t, &fakeServer{}), GRPC: startFakeGRPC(t, g), Model: "mlp", Binary: binary,
			Concurrency: []int{2}, Duration: 300 * time.Millisecond, Warmup: -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		want := "grpc typed"
		if binary {
			want = "grpc raw"
		}
		s := rep.Steps[0]
		if rep.Format != want || s.Requests == 0 || s.Errors == 0 || s.ErrorsBy["ResourceExhausted"] != s.Errors {
			t.Errorf("binary %v: format %q, %d requests, errors %v", binary, rep.Format, s.Requests, s.ErrorsBy)
		}
		if g.bad.Load() != 0 || (g.raw.Load() == g.n.Load()) != binary {
			t.Errorf("binary %v: %d bad requests, %d raw of %d", binary, g.bad.Load(), g.raw.Load(), g.n.Load())
		}
	}
}
