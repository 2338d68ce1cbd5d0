package grpcapi_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/scheduler"
)

// slowRepository has "slow" (Steered: a request's n picks how long it runs) with a queue of
// one, "overflow" whose run fails inside ONNX Runtime, "broken" that never loads, and "mlp".
func slowRepository(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "slow/1/model.onnx", testmodels.Steered())
	testutil.WriteFile(t, dir, "slow/model.toml", []byte("[dynamic_batching]\nmax_queue_size = 1\n"))
	testutil.WriteFile(t, dir, "overflow/1/model.onnx", testmodels.ShapeOverflow())
	testutil.WriteFile(t, dir, "broken/1/model.onnx", []byte("garbage"))
	testutil.WriteFile(t, dir, "mlp/1/model.onnx", testmodels.MLP())
	return dir
}

// slowRequest runs n loop trips; a huge n runs until every caller left.
func slowRequest(id string, n int64, params map[string]*pb.InferParameter) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: "slow", Id: id, Parameters: params,
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "input", Datatype: "FP32", Shape: []int64{1, 4}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}},
			{Name: "n", Datatype: "INT64", Shape: []int64{1}, Contents: &pb.InferTensorContents{Int64Contents: []int64{n}}}}}
}

func intParam(v int64) *pb.InferParameter {
	return &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: v}}
}

// The scheduler's and the engine's errors reach the client with the code the table
// gives them: a full queue, a timeout in the queue, the client's deadline, an ORT failure,
// invalid scheduling parameters, a version that is not ready.
func TestInferErrorCodes(t *testing.T) {
	s := serve(t, slowRepository(t), nil)
	c := s.client(t)
	ctx := ctxT(t)
	v, err := s.repo.Resolve("slow", "")
	if err != nil {
		t.Fatal(err)
	}
	stats := func() scheduler.Snapshot { return s.sched.Stats(v) }

	// A runs for as long as its caller waits; B waits in the queue of one behind it.
	endless := int64(1) << 50
	ctxA, cancelA := context.WithCancel(ctx)
	defer cancelA()
	doneA := make(chan error, 1)
	go func() { _, err := c.ModelInfer(ctxA, slowRequest("a", endless, nil)); doneA <- err }()
	testutil.WaitFor(t, 10*time.Second, "A running", func() bool { st := stats(); return st.InFlight == 1 && st.Pending == 0 })
	ctxB, cancelB := context.WithCancel(ctx)
	doneB := make(chan error, 1)
	go func() { _, err := c.ModelInfer(ctxB, slowRequest("b", 1, nil)); doneB <- err }()
	testutil.WaitFor(t, 10*time.Second, "B queued", func() bool { return stats().Pending == 1 })

	_, err = c.ModelInfer(ctx, slowRequest("c", 1, nil))
	wantCode(t, err, codes.ResourceExhausted, "exceeds maximum queue size")
	cancelB()
	wantCode(t, <-doneB, codes.Canceled, "")
	testutil.WaitFor(t, 10*time.Second, "B gone", func() bool { return stats().Pending == 0 })

	_, err = c.ModelInfer(ctx, slowRequest("d", 1, map[string]*pb.InferParameter{"timeout": intParam(20000)}))
	wantCode(t, err, codes.DeadlineExceeded, "request timed out in the queue after 20ms")

	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = c.ModelInfer(short, slowRequest("e", 1, nil))
	cancelShort()
	wantCode(t, err, codes.DeadlineExceeded, "")
	testutil.WaitFor(t, 10*time.Second, "E gone", func() bool { return stats().Pending == 0 })

	cancelA()
	wantCode(t, <-doneA, codes.Canceled, "")

	_, err = c.ModelInfer(ctx, slowRequest("f", 1, map[string]*pb.InferParameter{"priority": intParam(5)}))
	wantCode(t, err, codes.InvalidArgument, "priority 5; this model has levels 1 (highest) to 1")
	_, err = c.ModelInfer(ctx, slowRequest("g", 1, map[string]*pb.InferParameter{"timeout": {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "soon"}}}))
	wantCode(t, err, codes.InvalidArgument, `"timeout" must be a non-negative integer, got soon`)
	_, err = c.ModelInfer(ctx, slowRequest("h", 1, map[string]*pb.InferParameter{"priority": intParam(-1)}))
	wantCode(t, err, codes.InvalidArgument, `"priority" must be a non-negative integer`)

	// Scheduling parameters that are fine: the answer is the model's.
	resp, err := c.ModelInfer(ctx, slowRequest("i", 3, map[string]*pb.InferParameter{"priority": intParam(1), "timeout": intParam(10_000_000)}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := float32s(resp.RawOutputContents[0]), testmodels.SteeredForward([]float32{1, 2, 3, 4}, []int64{3}); !close32(got, want) {
		t.Errorf("slow with parameters: %v, want %v", got, want)
	}

	overflow := &pb.ModelInferRequest{ModelName: "overflow",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4}}},
		RawInputContents: [][]byte{f32bytes(1, 2, 3, 4)}}
	_, err = c.ModelInfer(ctx, overflow)
	wantCode(t, err, codes.Internal, "")

	broken := mlpRequest("j", 1, 2, 3, 4)
	broken.ModelName = "broken"
	_, err = c.ModelInfer(ctx, broken)
	wantCode(t, err, codes.Unavailable, `model "broken"`)

	// Each request is counted once: the scheduler's outcomes for those it admitted, the
	// front end's refusals for the rest.
	st := stats()
	if st.Outcomes[scheduler.OutcomeQueueFull] != 1 || st.Outcomes[scheduler.OutcomeTimeout] != 1 || st.Outcomes[scheduler.OutcomeSuccess] != 1 {
		t.Errorf("slow outcomes %v", st.Outcomes)
	}
	// Parameters that do not parse end before a version is resolved; priority 5 was the
	// scheduler's to refuse (it knows the model's levels), so it is not among these.
	if got, want := s.refusals(), []string{"slow//client_error", "slow//client_error", "broken//unavailable"}; !slices.Equal(got, want) {
		t.Errorf("refusals %v, want %v", got, want)
	}
	if st.Outcomes[scheduler.OutcomeClientError] != 1 {
		t.Errorf("scheduler client errors %d, want 1 (priority 5)", st.Outcomes[scheduler.OutcomeClientError])
	}
}

// Shutdown refuses new requests with UNAVAILABLE.
func TestInferWhileStopping(t *testing.T) {
	s := serve(t, slowRepository(t), nil)
	c := s.client(t)
	ctx := ctxT(t)
	if _, err := c.ModelInfer(ctx, mlpRequest("1", 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	stream, err := c.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(mlpRequest("s1", 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.ErrorMessage != "" {
		t.Fatalf("stream before shutdown: %v %v", r, err)
	}
	// The stream is idle, yet open: the drain must end it rather than wait for it.
	stopped := make(chan error, 1)
	go func() { stopped <- s.srv.Shutdown(ctx) }()
	_, err = stream.Recv()
	wantCode(t, err, codes.Unavailable, "server is shutting down")
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not finish with an idle stream open")
	}
}
