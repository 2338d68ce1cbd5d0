package grpcapi_test

import (
	"bytes"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tensor"
)

// demoRepository writes the demo models plus a scalar INT64 model and a broken one.
func demoRepository(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := testmodels.WriteRepository(dir); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, dir, "scalar/1/model.onnx", testmodels.Scalar())
	testutil.WriteFile(t, dir, "scalar_int64/1/model.onnx", scalarInt64())
	testutil.WriteFile(t, dir, "broken/1/model.onnx", []byte("not an onnx model"))
	return dir
}

func TestServerRPCs(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	s := serve(t, demoRepository(t), func(o *grpcapi.Options) { o.Ready = ready.Load })
	c := s.client(t)
	ctx := ctxT(t)

	live, err := c.ServerLive(ctx, &pb.ServerLiveRequest{})
	if err != nil || !live.Live {
		t.Fatalf("ServerLive: %v %v", live, err)
	}
	rd, err := c.ServerReady(ctx, &pb.ServerReadyRequest{})
	if err != nil || !rd.Ready {
		t.Fatalf("ServerReady: %v %v", rd, err)
	}
	ready.Store(false)
	if rd, err := c.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || rd.Ready {
		t.Errorf("ServerReady while not ready: %v %v", rd, err)
	}
	ready.Store(true)
	md, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil || md.Name != "inferd" || md.Version != "test" {
		t.Errorf("ServerMetadata: %v %v", md, err)
	}

	mm, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "mlp"})
	if err != nil {
		t.Fatal(err)
	}
	if mm.Name != "mlp" || mm.Platform != "onnxruntime_onnx" || !slices.Equal(mm.Versions, []string{"1"}) ||
		len(mm.Inputs) != 1 || mm.Inputs[0].Name != "input" || mm.Inputs[0].Datatype != "FP32" || !slices.Equal(mm.Inputs[0].Shape, []int64{-1, 4}) ||
		len(mm.Outputs) != 1 || !slices.Equal(mm.Outputs[0].Shape, []int64{-1, 3}) {
		t.Errorf("ModelMetadata(mlp) = %v", mm)
	}
	if mm, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "scalar_int64", Version: "1"}); err != nil || len(mm.Inputs[0].Shape) != 0 || mm.Inputs[0].Datatype != "INT64" {
		t.Errorf("ModelMetadata(scalar_int64) = %v %v", mm, err)
	}
	_, err = c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `unknown model "nope"`)
	_, err = c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "mlp", Version: "7"})
	wantCode(t, err, codes.NotFound, "unknown version 7")
	_, err = c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "broken"})
	wantCode(t, err, codes.Unavailable, `model "broken"`)

	for _, tt := range []struct {
		name, version string
		ready         bool
		code          codes.Code
	}{
		{"mlp", "", true, codes.OK}, {"mlp", "1", true, codes.OK}, {"broken", "", false, codes.OK},
		{"mlp", "2", false, codes.NotFound}, {"mlp", "x", false, codes.NotFound}, {"nope", "", false, codes.NotFound},
	} {
		r, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: tt.name, Version: tt.version})
		if got := codeOf(err); got != tt.code || (err == nil && r.Ready != tt.ready) {
			t.Errorf("ModelReady(%s, %q) = %v, %v; want ready %v, %s", tt.name, tt.version, r, err, tt.ready, tt.code)
		}
	}
}

func codeOf(err error) codes.Code {
	code, _ := statusOf(err)
	return code
}

// The MLP answers ONNX Runtime's results, raw and typed alike, with the request's id.
func TestModelInferMLP(t *testing.T) {
	s := serve(t, demoRepository(t), nil)
	c := s.client(t)
	ctx := ctxT(t)
	x := []float32{1, 2, 3, 4, -1, 0.5, 0, 2}
	want := testmodels.MLPForward(x)

	raw, err := c.ModelInfer(ctx, mlpRequest("r1", x...))
	if err != nil {
		t.Fatal(err)
	}
	typed := mlpRequest("r2")
	typed.RawInputContents = nil
	typed.Inputs[0].Shape = []int64{2, 4}
	typed.Inputs[0].Contents = &pb.InferTensorContents{Fp32Contents: x}
	typedResp, err := c.ModelInfer(ctx, typed)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*pb.ModelInferResponse{raw, typedResp} {
		if r.ModelName != "mlp" || r.ModelVersion != "1" || len(r.Outputs) != 1 || r.Outputs[0].Name != "output" ||
			r.Outputs[0].Datatype != "FP32" || !slices.Equal(r.Outputs[0].Shape, []int64{2, 3}) || len(r.RawOutputContents) != 1 {
			t.Fatalf("response %v", r)
		}
		if got := float32s(r.RawOutputContents[0]); !close32(got, want) {
			t.Errorf("outputs %v, want %v", got, want)
		}
	}
	if raw.Id != "r1" || typedResp.Id != "r2" {
		t.Errorf("ids %q %q", raw.Id, typedResp.Id)
	}
}

func close32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if d := a[i] - b[i]; d > 1e-5 || d < -1e-5 {
			return false
		}
	}
	return true
}

// Every datatype of the protocol round-trips through an Identity model: raw for all, typed
// for those that have a contents field.
func TestModelInferEveryDatatype(t *testing.T) {
	dir := t.TempDir()
	for _, dt := range testmodels.IdentityDataTypes() {
		m, err := testmodels.Identity(dt)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, dir, "id_"+strings.ToLower(string(dt))+"/1/model.onnx", m)
	}
	s := serve(t, dir, nil)
	c := s.client(t)
	ctx := ctxT(t)
	for _, dt := range testmodels.IdentityDataTypes() {
		in := tensor.Tensor{Name: "in", DataType: dt, Shape: []int64{2, 2}}
		if dt == tensor.Bytes {
			in.Strings = [][]byte{[]byte("a"), []byte(""), []byte("ünï"), []byte("xyz")}
		} else {
			in.Data = make([]byte, 4*dt.Size())
			for i := range in.Data {
				in.Data[i] = byte(i*37 + 1)
			}
			if dt == tensor.Bool {
				copy(in.Data, []byte{1, 0, 0, 1})
			}
		}
		for _, raw := range []bool{true, false} {
			req, err := kservegrpc.EncodeRequest(&kserve.InferRequest{ID: string(dt), Inputs: []kserve.Input{{Tensor: in}}}, "id_"+strings.ToLower(string(dt)), "", raw)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.ModelInfer(ctx, req)
			if err != nil {
				t.Errorf("%s (raw %v): %v", dt, raw, err)
				continue
			}
			out, err := kservegrpc.DecodeResponse(resp)
			if err != nil {
				t.Fatal(err)
			}
			got := out[0]
			if got.Name != "out" || got.DataType != dt || !slices.Equal(got.Shape, in.Shape) || !bytes.Equal(got.Data, in.Data) ||
				!slices.EqualFunc(got.Strings, in.Strings, bytes.Equal) {
				t.Errorf("%s (raw %v): got %+v, want %+v", dt, raw, got, in)
			}
		}
	}
}

// Scalars (rank 0, shape []) in and out, FP32 and INT64; strings; the outputs filter picks
// and orders outputs.
func TestModelInferScalarsStringsAndOutputs(t *testing.T) {
	s := serve(t, demoRepository(t), nil)
	c := s.client(t)
	ctx := ctxT(t)

	resp, err := c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "scalar_int64",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: "k", Datatype: "INT64", Shape: []int64{}, Contents: &pb.InferTensorContents{Int64Contents: []int64{41}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if o := resp.Outputs[0]; o.Name != "k1" || o.Datatype != "INT64" || len(o.Shape) != 0 || !slices.Equal(int64s(resp.RawOutputContents[0]), []int64{42}) {
		t.Errorf("scalar_int64: %v", resp)
	}

	resp, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "scalar",
		Inputs:           []*pb.ModelInferRequest_InferInputTensor{{Name: "scale", Datatype: "FP32", Shape: []int64{}}, {Name: "v", Datatype: "FP32", Shape: []int64{3}}},
		RawInputContents: [][]byte{f32bytes(2.5), f32bytes(1, 2, -4)},
		Outputs:          []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "next"}, {Name: "scaled"}}})
	if err != nil {
		t.Fatal(err)
	}
	scaled, next := testmodels.ScalarForward(2.5, []float32{1, 2, -4})
	if len(resp.Outputs) != 2 || resp.Outputs[0].Name != "next" || resp.Outputs[1].Name != "scaled" ||
		!close32(float32s(resp.RawOutputContents[0]), []float32{next}) || !close32(float32s(resp.RawOutputContents[1]), scaled) {
		t.Errorf("scalar with outputs [next, scaled]: %v", resp)
	}

	resp, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "strings",
		Inputs:  []*pb.ModelInferRequest_InferInputTensor{{Name: "text", Datatype: "BYTES", Shape: []int64{2}, Contents: &pb.InferTensorContents{BytesContents: [][]byte{[]byte("abc"), []byte("Hello!")}}}},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "upper"}}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := kservegrpc.DecodeResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	upper, _ := testmodels.StringsForward([]string{"abc", "Hello!"})
	if len(out) != 1 || out[0].Name != "upper" || string(out[0].Strings[0]) != upper[0] || string(out[0].Strings[1]) != upper[1] {
		t.Errorf("strings: %+v, want %v", out, upper)
	}

	// MultiIO: two inputs of two types, four outputs; ask for two, in reverse.
	x, y := []float32{1, 2, 3}, []int64{4, -5, 6}
	resp, err = c.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "multi_io",
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "x", Datatype: "FP32", Shape: []int64{1, 3}, Contents: &pb.InferTensorContents{Fp32Contents: x}},
			{Name: "y", Datatype: "INT64", Shape: []int64{1, 3}, Contents: &pb.InferTensorContents{Int64Contents: y}}},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "twice"}, {Name: "sum"}}})
	if err != nil {
		t.Fatal(err)
	}
	sum, twice, _, _ := testmodels.MultiIOForward(x, y)
	if len(resp.Outputs) != 2 || resp.Outputs[0].Name != "twice" || !slices.Equal(int64s(resp.RawOutputContents[0]), twice) ||
		resp.Outputs[1].Name != "sum" || !close32(float32s(resp.RawOutputContents[1]), sum) {
		t.Errorf("multi_io [twice, sum]: %v", resp)
	}
}

// Raw inputs reach ONNX Runtime without a copy after the protobuf decoder's.
func TestRawInputsZeroCopy(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "multi/1/model.onnx", testmodels.MultiIO())
	fp64, err := testmodels.Identity(tensor.FP64)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, dir, "id_fp64/1/model.onnx", fp64)
	s := serve(t, dir, nil)
	c := s.client(t)
	ctx := ctxT(t)
	before := s.rt.InputCopies()
	for i := range 5 {
		x := tensor.FromFloat32s("x", []int64{1, 3}, []float32{1.5, float32(i), 3})
		y := tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{1, 3}, Data: make([]byte, 24)}
		req, _ := kservegrpc.EncodeRequest(&kserve.InferRequest{Inputs: []kserve.Input{{Tensor: x}, {Tensor: y}}}, "multi", "", true)
		req.Id = strings.Repeat("p", i) // shifts every later field on the wire
		if _, err := c.ModelInfer(ctx, req); err != nil {
			t.Fatal(err)
		}
		f := tensor.Tensor{Name: "in", DataType: tensor.FP64, Shape: []int64{1, 3}, Data: make([]byte, 24)}
		req, _ = kservegrpc.EncodeRequest(&kserve.InferRequest{Inputs: []kserve.Input{{Tensor: f}}}, "id_fp64", "", true)
		req.Id = strings.Repeat("q", i)
		if _, err := c.ModelInfer(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.rt.InputCopies() - before; n != 0 {
		t.Errorf("ONNX Runtime copied %d raw inputs, want 0", n)
	}
}

// A tensor large enough to travel in many HTTP/2 frames, and for its output to go to the
// transport as a piece of its own, comes back byte for byte, unary and streamed.
func TestLargeTensorRoundTrip(t *testing.T) {
	dir := t.TempDir()
	id, err := testmodels.Identity(tensor.FP32)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, dir, "id/1/model.onnx", id)
	s := serve(t, dir, nil)
	c := s.client(t)
	ctx := ctxT(t)
	const n = 300_001 // an odd size, past every frame and piece boundary
	data := make([]byte, 4*n)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	in := tensor.Tensor{Name: "in", DataType: tensor.FP32, Shape: []int64{1, n}, Data: data}
	req, err := kservegrpc.EncodeRequest(&kserve.InferRequest{Inputs: []kserve.Input{{Tensor: in}}}, "id", "", true)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.RawOutputContents) != 1 || !bytes.Equal(resp.RawOutputContents[0], data) {
		t.Errorf("unary: the output is not the input")
	}
	st, err := c.ModelStreamInfer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req.Id = strings.Repeat("s", i)
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got := r.GetInferResponse()
		if r.ErrorMessage != "" || got.GetId() != req.Id || len(got.GetRawOutputContents()) != 1 || !bytes.Equal(got.RawOutputContents[0], data) {
			t.Errorf("stream %d: error %q, id %q: the output is not the input", i, r.ErrorMessage, got.GetId())
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// Health: the server and each model, Check, List and Watch, through a shutdown.
func TestHealth(t *testing.T) {
	var ready atomic.Bool
	s := serve(t, demoRepository(t), func(o *grpcapi.Options) { o.Ready = ready.Load })
	srv := s.srv
	h := s.health(t)
	ctx := ctxT(t)

	check := func(service string) (healthpb.HealthCheckResponse_ServingStatus, codes.Code) {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		return r.GetStatus(), codeOf(err)
	}
	if st, code := check(""); st != healthpb.HealthCheckResponse_NOT_SERVING || code != codes.OK {
		t.Errorf("server before ready: %s %s", st, code)
	}
	watch, err := h.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch first: %v %v", r, err)
	}
	ready.Store(true)
	srv.Changed()
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch after ready: %v %v", r, err)
	}
	for service, want := range map[string]healthpb.HealthCheckResponse_ServingStatus{
		"": healthpb.HealthCheckResponse_SERVING, "inference.GRPCInferenceService": healthpb.HealthCheckResponse_SERVING,
		"mlp": healthpb.HealthCheckResponse_SERVING, "broken": healthpb.HealthCheckResponse_NOT_SERVING,
	} {
		if st, code := check(service); st != want || code != codes.OK {
			t.Errorf("Check(%q) = %s %s, want %s", service, st, code, want)
		}
	}
	if _, code := check("nope"); code != codes.NotFound {
		t.Errorf("Check(nope) = %s, want NotFound", code)
	}
	list, err := h.List(ctx, &healthpb.HealthListRequest{})
	if err != nil || list.Statuses["mlp"].GetStatus() != healthpb.HealthCheckResponse_SERVING ||
		list.Statuses["broken"].GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING || list.Statuses[""].GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("List = %v %v", list, err)
	}
	unknown, err := h.Watch(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := unknown.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Errorf("watch unknown: %v %v", r, err)
	}

	// Shutdown: watchers hear NOT_SERVING, then their stream ends.
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(ctx) }()
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch at shutdown: %v %v", r, err)
	}
	if _, err := watch.Recv(); codeOf(err) != codes.Unavailable {
		t.Errorf("watch after shutdown: %v, want Unavailable", err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}
