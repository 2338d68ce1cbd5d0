package perf_test

import (
	"context"
	"errors"
	"net"
	"strings"
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

func startFakeGRPC(t *testing.T, f pb.GRPCInferenceServiceServer) string {
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

// fakeStream answers ModelStreamInfer for "mlp": it holds requests until inFlight of them are
// pending on the stream and answers those in reverse order (so a client that does not keep
// that many in flight on one stream, or matches answers by order, fails). Every failEach-th is
// answered with an error response naming RESOURCE_EXHAUSTED; with endAfter, the first stream
// ends with UNAVAILABLE at its endAfter-th request.
type fakeStream struct {
	pb.UnimplementedGRPCInferenceServiceServer
	inFlight          int
	failEach          int64
	endAfter          int64
	n, bad, streams   atomic.Int64
	maxPending, unary atomic.Int64
}

func (f *fakeStream) ModelInfer(context.Context, *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	f.unary.Add(1)
	return nil, status.Error(codes.Unimplemented, "stream only")
}

func (f *fakeStream) ModelStreamInfer(stream pb.GRPCInferenceService_ModelStreamInferServer) error {
	first := f.streams.Add(1) == 1
	var pending []*pb.ModelInferRequest
	for {
		m, err := stream.Recv()
		if err != nil {
			return nil
		}
		n := f.n.Add(1)
		if first && n == f.endAfter {
			return status.Error(codes.Unavailable, "server is shutting down")
		}
		pending = append(pending, m)
		if p := int64(len(pending)); p > f.maxPending.Load() {
			f.maxPending.Store(p)
		}
		if len(pending) < f.inFlight {
			continue
		}
		for i := len(pending) - 1; i >= 0; i-- {
			if err := stream.Send(f.answer(pending[i], n-int64(len(pending)-1-i))); err != nil {
				return err
			}
		}
		pending = pending[:0]
	}
}

func (f *fakeStream) answer(m *pb.ModelInferRequest, n int64) *pb.ModelStreamInferResponse {
	req, err := kservegrpc.DecodeRequest(m, kserve.Limits{})
	if err != nil || m.ModelName != "mlp" || m.Id == "" || len(req.Inputs) != 1 {
		f.bad.Add(1)
		return &pb.ModelStreamInferResponse{ErrorMessage: "unexpected request", InferResponse: &pb.ModelInferResponse{Id: m.Id}}
	}
	if f.failEach > 0 && n%f.failEach == 0 {
		return &pb.ModelStreamInferResponse{ErrorMessage: "exceeds maximum queue size", InferResponse: &pb.ModelInferResponse{
			Id: m.Id, Parameters: map[string]*pb.InferParameter{"error_code": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "RESOURCE_EXHAUSTED"}}}}}
	}
	rows := req.Inputs[0].Tensor.Shape[0]
	return &pb.ModelStreamInferResponse{InferResponse: kservegrpc.EncodeResponse("mlp", "1", m.Id,
		[]tensor.Tensor{tensor.FromFloat32s("output", []int64{rows, 3}, make([]float32, 3*rows))})}
}

// --stream sends each step's requests on one stream with the concurrency in flight on it,
// matches the answers by id whatever their order, and counts error responses by their code.
func TestGRPCStream(t *testing.T) {
	const n = 4
	g := &fakeStream{inFlight: n, failEach: 7}
	rep, err := perf.Run(t.Context(), perf.Config{
		URL: startFake(t, &fakeServer{}), GRPC: startFakeGRPC(t, g), Stream: true, Model: "mlp", Binary: true,
		Concurrency: []int{n}, Duration: 300 * time.Millisecond, Warmup: -1,
		// The last requests wait for company that never comes; they end here, uncounted.
		RequestTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Steps[0]
	if rep.Format != "grpc raw stream" || s.Requests == 0 || s.Errors == 0 || s.ErrorsBy["ResourceExhausted"] != s.Errors {
		t.Errorf("format %q, %d requests, errors %v (first %q)", rep.Format, s.Requests, s.ErrorsBy, s.FirstError)
	}
	if s.Streams != 1 || g.streams.Load() != 1 || g.maxPending.Load() != n || g.bad.Load() != 0 || g.unary.Load() != 0 {
		t.Errorf("%d streams (server saw %d), at most %d in flight, %d bad, %d unary", s.Streams, g.streams.Load(), g.maxPending.Load(), g.bad.Load(), g.unary.Load())
	}
}

// A stream the server ends fails the requests in flight on it with its status, and the next
// request opens another.
func TestGRPCStreamEnded(t *testing.T) {
	g := &fakeStream{inFlight: 1, endAfter: 10}
	rep, err := perf.Run(t.Context(), perf.Config{
		URL: startFake(t, &fakeServer{}), GRPC: startFakeGRPC(t, g), Stream: true, Model: "mlp",
		Concurrency: []int{1}, Duration: 300 * time.Millisecond, Warmup: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Steps[0]
	if rep.Format != "grpc typed stream" || s.Streams != 2 || g.streams.Load() != 2 || s.Errors != 1 || s.ErrorsBy["Unavailable"] != 1 || s.Requests < 10 {
		t.Errorf("format %q, %d streams (server saw %d), %d requests, errors %v", rep.Format, s.Streams, g.streams.Load(), s.Requests, s.ErrorsBy)
	}
	var out strings.Builder
	if err := rep.WriteTable(&out); err != nil || !strings.Contains(out.String(), "2 streams opened") {
		t.Errorf("table (%v):\n%s", err, out.String())
	}
}

// Streaming needs a gRPC address.
func TestGRPCStreamNeedsAddress(t *testing.T) {
	_, err := perf.Run(t.Context(), perf.Config{URL: "http://127.0.0.1:1", Model: "mlp", Stream: true, Concurrency: []int{1}})
	if !errors.Is(err, perf.ErrConfig) {
		t.Fatalf("err %v, want ErrConfig", err)
	}
}
