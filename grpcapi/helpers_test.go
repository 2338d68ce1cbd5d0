package grpcapi_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/internal/onnxgen"
	"github.com/inferd/inferd/internal/testutil"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// server is a gRPC front end over a real repository, scheduler and ONNX Runtime, on a loopback
// listener of its own.
type server struct {
	srv   *grpcapi.Server
	repo  *models.Repository
	sched *scheduler.Scheduler
	rt    *ort.Runtime
	addr  string
	ready func() bool

	mu      sync.Mutex
	refused []string // "model/version/outcome"
	limits  []string
	denied  []string
	codes   map[string]int // "method code" -> count
}

// serve starts a server on the models in dir; edit adjusts its options before it starts.
func serve(t *testing.T, dir string, edit func(*grpcapi.Options)) *server {
	t.Helper()
	rt, err := ort.New(ort.RuntimeOptions{}, quiet)
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	repo := models.New(dir, rt, models.Defaults{Instances: 1, Cores: 2}, quiet)
	if err := repo.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := &server{repo: repo, sched: scheduler.New(quiet), rt: rt, codes: map[string]int{}}
	opts := grpcapi.Options{
		Name: "inferd", Version: "test",
		Refused: func(model, version string, o scheduler.Outcome) {
			s.mu.Lock()
			s.refused = append(s.refused, model+"/"+version+"/"+o.String())
			s.mu.Unlock()
		},
		LimitExceeded: func(l string) { s.mu.Lock(); s.limits = append(s.limits, l); s.mu.Unlock() },
		Denied:        func(r string) { s.mu.Lock(); s.denied = append(s.denied, r); s.mu.Unlock() },
		Observe: func(service, method string, code codes.Code, _ time.Duration) {
			s.mu.Lock()
			s.codes[method+" "+code.String()]++
			s.mu.Unlock()
		},
	}
	if edit != nil {
		edit(&opts)
	}
	s.srv = grpcapi.New(repo, s.sched, opts, quiet)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		_ = s.sched.Close(ctx)
		repo.Close(ctx)
		_ = rt.Close()
	})
	return s
}

// dial returns a client connection to s with extra dial options.
func (s *server) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+s.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (s *server) client(t *testing.T) pb.GRPCInferenceServiceClient {
	return pb.NewGRPCInferenceServiceClient(s.dial(t))
}

func (s *server) health(t *testing.T) healthpb.HealthClient {
	return healthpb.NewHealthClient(s.dial(t))
}

func (s *server) refusals() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

func (s *server) codeCount(method string, code codes.Code) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codes[method+" "+code.String()]
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails t unless err is a status of code whose message contains want.
func wantCode(t *testing.T, err error, code codes.Code, want string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), want) {
		t.Errorf("status %s %q, want %s containing %q", st.Code(), st.Message(), code, want)
	}
}

func f32bytes(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func float32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func int64s(b []byte) []int64 {
	out := make([]int64, len(b)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

// scalarInt64 is "k" INT64 rank 0 -> "k1" = k + 1, INT64 rank 0.
func scalarInt64() []byte {
	return onnxgen.Marshal(onnxgen.Graph{
		Name:         "scalar_int64",
		Nodes:        []onnxgen.Node{{OpType: "Add", Name: "add", Inputs: []string{"k", "one"}, Outputs: []string{"k1"}}},
		Initializers: []onnxgen.Tensor{onnxgen.Int64Tensor("one", nil, []int64{1})},
		Inputs:       []onnxgen.ValueInfo{{Name: "k", ElemType: onnxgen.Int64}},
		Outputs:      []onnxgen.ValueInfo{{Name: "k1", ElemType: onnxgen.Int64}},
	})
}

// mlpRequest is a raw request for the MLP model with rows of 4 values.
func mlpRequest(id string, x ...float32) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: "mlp", Id: id,
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{int64(len(x) / 4), 4}}},
		RawInputContents: [][]byte{f32bytes(x...)}}
}

// statusOf is err's gRPC code.
func statusOf(err error) (codes.Code, string) {
	st, _ := status.FromError(err)
	return st.Code(), st.Message()
}

// waitIdle waits until v has nothing in flight (a stopped run has ended).
func waitIdle(t *testing.T, s *server, v scheduler.Target) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "model version idle", func() bool { return s.sched.Stats(v).InFlight == 0 })
}

// lstm is "input" FP32 [batch,4] -> one LSTM step over the batch -> "y" FP32 [1,1,batch,1]:
// a recurrent model, whose kernel ONNX Runtime 1.29 aborts the whole process on for an empty
// batch (testmodels.AbortOnEmptyBatch), so such a request must never reach it.
func lstm() []byte {
	batch := onnxgen.P("batch")
	return onnxgen.Marshal(onnxgen.Graph{
		Name: "lstm",
		Nodes: []onnxgen.Node{
			{OpType: "Unsqueeze", Name: "seq", Inputs: []string{"input", "zero"}, Outputs: []string{"seq"}},
			{OpType: "LSTM", Name: "lstm", Inputs: []string{"seq", "w", "r"}, Outputs: []string{"y"}, Attrs: []onnxgen.Attr{onnxgen.IntAttr("hidden_size", 1)}},
		},
		Initializers: []onnxgen.Tensor{
			onnxgen.Int64Tensor("zero", []int64{1}, []int64{0}),
			onnxgen.FloatTensor("w", []int64{1, 4, 4}, []float32{0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.4}),
			onnxgen.FloatTensor("r", []int64{1, 4, 1}, []float32{0.5, 0.5, 0.5, 0.5}),
		},
		Inputs:  []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{batch, {Value: 4}}}},
		Outputs: []onnxgen.ValueInfo{{Name: "y", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{{Value: 1}, {Value: 1}, batch, {Value: 1}}}},
	})
}
