package grpcapi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/auth"
	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/kserve"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tensor"
)

const (
	inferToken = "grpc-infer-token-0123456789"
	adminToken = "grpc-admin-token-0123456789"
)

// tokens is a token file's contents as auth.Tokens would read them.
type tokens map[string]auth.Scope

func (t tokens) Scope(token string) (auth.Scope, bool) { s, ok := t[token]; return s, ok }

// rawCodec sends a *[]byte as the message's bytes as they are, and reads answers as protobuf:
// a client that can send what no protobuf encoder would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(*[]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// secured is a server with tokens, small limits and transport bounds, on the demo models and
// the identity models of BOOL and FP16.
func secured(t *testing.T) *server {
	t.Helper()
	dir := demoRepository(t)
	for _, dt := range []tensor.DataType{tensor.Bool, tensor.FP16} {
		m, _ := testmodels.Identity(dt)
		testutil.WriteFile(t, dir, "id_"+strings.ToLower(string(dt))+"/1/model.onnx", m)
	}
	testutil.WriteFile(t, dir, "lstm/1/model.onnx", lstm())
	return serve(t, dir, func(o *grpcapi.Options) {
		o.Tokens = tokens{inferToken: auth.Infer, adminToken: auth.Admin}
		o.Settings = func() *grpcapi.Settings {
			return &grpcapi.Settings{Limits: kserve.Limits{MaxInputs: 4, MaxRank: 4, MaxElements: 100000, MaxStringBytes: 1024}}
		}
		o.Transport = grpcapi.Transport{MaxMessageBytes: 1 << 20, MaxConcurrentStreams: 4, KeepaliveMinTime: 10 * time.Second}
	})
}

type in = pb.ModelInferRequest_InferInputTensor
type out = pb.ModelInferRequest_InferRequestedOutputTensor

func rawReq(model string, inputs []*in, raw ...[]byte) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: model, Inputs: inputs, RawInputContents: raw}
}

func mlpIn(shape ...int64) []*in { return []*in{{Name: "input", Datatype: "FP32", Shape: shape}} }

// TestBadInputMatrix sends malformed and hostile requests, each of which must get its precise
// status and message, and after each one a correct request must still get the right answer.
func TestBadInputMatrix(t *testing.T) {
	s := secured(t)
	cc := s.dial(t)
	c := pb.NewGRPCInferenceServiceClient(cc)
	ctx := withToken(ctxT(t), inferToken)
	x := []float32{1, 2, 3, 4}
	good := func(t *testing.T) {
		t.Helper()
		r, err := c.ModelInfer(ctx, mlpRequest("good", x...))
		if err != nil || !close32(float32s(r.RawOutputContents[0]), testmodels.MLPForward(x)) {
			t.Fatalf("the correct request after the bad one: %v %v", r, err)
		}
	}
	infer := func(m *pb.ModelInferRequest) func() error {
		return func() error { _, err := c.ModelInfer(ctx, m); return err }
	}
	sendRaw := func(b []byte) func() error {
		return func() error {
			var resp pb.ModelInferResponse
			return cc.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, &b, &resp, grpc.ForceCodecV2(rawCodec{}))
		}
	}
	nul := &pb.ModelInferRequest{ModelName: "strings", Inputs: []*in{{Name: "text", Datatype: "BYTES", Shape: []int64{1}, Contents: &pb.InferTensorContents{BytesContents: [][]byte{[]byte("a\x00b")}}}}}
	multi := func(inputs ...*in) *pb.ModelInferRequest {
		return &pb.ModelInferRequest{ModelName: "multi_io", Inputs: inputs}
	}
	xIn := &in{Name: "x", Datatype: "FP32", Shape: []int64{1, 3}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2, 3}}}
	yIn := &in{Name: "y", Datatype: "INT64", Shape: []int64{1, 3}, Contents: &pb.InferTensorContents{Int64Contents: []int64{1, 2, 3}}}
	withOutputs := func(outs ...string) *pb.ModelInferRequest {
		m := multi(xIn, yIn)
		for _, o := range outs {
			m.Outputs = append(m.Outputs, &out{Name: o})
		}
		return m
	}
	five := make([]*in, 5)
	for i := range five {
		five[i] = &in{Name: string(rune('a' + i)), Datatype: "FP32", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}}
	}
	version := func(v string) *pb.ModelInferRequest { m := mlpRequest("v", x...); m.ModelVersion = v; return m }
	param := func(k string, p *pb.InferParameter) *pb.ModelInferRequest {
		m := mlpRequest("p", x...)
		m.Parameters = map[string]*pb.InferParameter{k: p}
		return m
	}

	cases := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"malformed protobuf: truncated varint", sendRaw([]byte{0x0a, 0x03, 'm', 'l', 'p', 0x18}), codes.InvalidArgument, "malformed protobuf"},
		{"malformed protobuf: length past the end", sendRaw([]byte{0x2a, 0xff, 0x01, 0x0a}), codes.InvalidArgument, "malformed protobuf"},
		{"raw size not shape x datatype", infer(rawReq("mlp", mlpIn(2, 4), make([]byte, 30))), codes.InvalidArgument, "30 bytes; shape [2,4] of FP32 needs 32"},
		{"raw and typed both", infer(rawReq("mlp", []*in{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4}, Contents: &pb.InferTensorContents{Fp32Contents: x}}}, f32bytes(x...))), codes.InvalidArgument, "raw or typed"},
		{"raw entries fewer than inputs", infer(rawReq("multi_io", []*in{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3}}, {Name: "y", Datatype: "INT64", Shape: []int64{1, 3}}}, f32bytes(1, 2, 3))), codes.InvalidArgument, "raw_input_contents has 1 entries for 2 inputs"},
		{"shape product overflows", infer(rawReq("mlp", mlpIn(1<<62, 1<<62), nil)), codes.InvalidArgument, "invalid shape"},
		{"negative dimension", infer(rawReq("mlp", mlpIn(-1, 4), nil)), codes.InvalidArgument, "negative dimension -1"},
		{"zero-size batch", infer(rawReq("mlp", mlpIn(0, 4), []byte{})), codes.InvalidArgument, `input "input" has no elements (shape [0,4])`},
		{"zero-size batch on a recurrent model", infer(rawReq("lstm", mlpIn(0, 4), []byte{})), codes.InvalidArgument, `input "input" has no elements (shape [0,4])`},
		{"recurrent model, batch of 2 (the answer is ONNX Runtime's)", func() error {
			r, err := c.ModelInfer(ctx, rawReq("lstm", mlpIn(2, 4), f32bytes(1, 2, 3, 4, -1, -2, -3, -4)))
			if err == nil && (len(r.Outputs) != 1 || len(r.RawOutputContents[0]) != 8) {
				return errors.New("lstm: wrong answer")
			}
			return err
		}, codes.OK, ""},
		{"batch over max_batch_size", infer(rawReq("mlp", mlpIn(65, 4), make([]byte, 65*16))), codes.InvalidArgument, "batch size 65, over the model's max_batch_size 64"},
		{"datatype the model does not take", infer(&pb.ModelInferRequest{ModelName: "mlp", Inputs: []*in{{Name: "input", Datatype: "INT32", Shape: []int64{1, 4}, Contents: &pb.InferTensorContents{IntContents: []int32{1, 2, 3, 4}}}}}), codes.InvalidArgument, "datatype INT32, model expects FP32"},
		{"rank the model does not take", infer(rawReq("mlp", mlpIn(1, 2, 2), f32bytes(x...))), codes.InvalidArgument, "has rank 3"},
		{"missing input", infer(multi(xIn)), codes.InvalidArgument, `missing input "y"`},
		{"unexpected input", infer(multi(xIn, yIn, &in{Name: "z", Datatype: "FP32", Shape: []int64{1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}})), codes.InvalidArgument, `unexpected input "z"`},
		{"duplicate input", infer(multi(xIn, xIn, yIn)), codes.InvalidArgument, `input "x" given more than once`},
		{"unknown output", infer(withOutputs("nope")), codes.InvalidArgument, `unknown output "nope"`},
		{"duplicate output", infer(withOutputs("sum", "sum")), codes.InvalidArgument, `output "sum" requested more than once`},
		{"unknown datatype", infer(&pb.ModelInferRequest{ModelName: "mlp", Inputs: []*in{{Name: "input", Datatype: "FLOAT32", Shape: []int64{1, 4}}}}), codes.InvalidArgument, `unknown datatype "FLOAT32"`},
		{"typed count not the shape's", infer(&pb.ModelInferRequest{ModelName: "mlp", Inputs: []*in{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4}, Contents: &pb.InferTensorContents{Fp32Contents: x[:3]}}}}), codes.InvalidArgument, "needs 4 elements, contents.fp32_contents has 3"},
		{"typed field of another datatype", infer(&pb.ModelInferRequest{ModelName: "mlp", Inputs: []*in{{Name: "input", Datatype: "FP32", Shape: []int64{1, 4}, Contents: &pb.InferTensorContents{Fp64Contents: []float64{1, 2, 3, 4}}}}}), codes.InvalidArgument, "FP32 data goes in contents.fp32_contents"},
		{"FP16 in typed contents", infer(&pb.ModelInferRequest{ModelName: "id_fp16", Inputs: []*in{{Name: "in", Datatype: "FP16", Shape: []int64{1, 1}, Contents: &pb.InferTensorContents{Fp32Contents: []float32{1}}}}}), codes.InvalidArgument, "FP16 data travels in raw_input_contents only"},
		{"BOOL byte other than 0 and 1", infer(rawReq("id_bool", []*in{{Name: "in", Datatype: "BOOL", Shape: []int64{1, 2}}}, []byte{1, 9})), codes.InvalidArgument, "BOOL element 1 is byte 0x09"},
		{"BYTES length past the end", infer(rawReq("strings", []*in{{Name: "text", Datatype: "BYTES", Shape: []int64{1}}}, []byte{200, 0, 0, 0, 'a'})), codes.InvalidArgument, "length 200 at offset 0 runs past the end"},
		{"NUL byte in a BYTES element", infer(nul), codes.InvalidArgument, "NUL byte"},
		{"rank over max_rank", infer(rawReq("mlp", mlpIn(1, 1, 1, 1, 4), f32bytes(x...))), codes.InvalidArgument, "(max_rank)"},
		{"elements over max_elements", infer(rawReq("mlp", mlpIn(100001, 4), nil)), codes.InvalidArgument, "(max_elements)"},
		{"inputs over max_inputs", infer(&pb.ModelInferRequest{ModelName: "mlp", Inputs: five}), codes.InvalidArgument, "(max_inputs)"},
		{"string over max_string_bytes", infer(&pb.ModelInferRequest{ModelName: "strings", Inputs: []*in{{Name: "text", Datatype: "BYTES", Shape: []int64{1}, Contents: &pb.InferTensorContents{BytesContents: [][]byte{bytes.Repeat([]byte("a"), 1025)}}}}}), codes.InvalidArgument, "(max_string_bytes)"},
		{"priority not an integer", infer(param("priority", &pb.InferParameter{ParameterChoice: &pb.InferParameter_StringParam{StringParam: "high"}})), codes.InvalidArgument, `"priority" must be a non-negative integer`},
		{"timeout negative", infer(param("timeout", intParam(-5))), codes.InvalidArgument, `"timeout" must be a non-negative integer, got -5`},
		{"unknown model", infer(&pb.ModelInferRequest{ModelName: "nope"}), codes.NotFound, `unknown model "nope"`},
		{"unknown version", infer(version("9")), codes.NotFound, `unknown version 9 of model "mlp"`},
		{"version not a number", infer(version("latest")), codes.NotFound, "versions are positive integers"},
		{"model that failed to load", infer(rawReq("broken", mlpIn(1, 4), f32bytes(x...))), codes.Unavailable, `model "broken"`},
		{"message over max_message_bytes", infer(rawReq("mlp", mlpIn(1<<16, 4), make([]byte, 1<<20))), codes.ResourceExhausted, "larger than max"},
		{"no token", func() error { _, err := c.ModelInfer(ctxT(t), mlpRequest("t", x...)); return err }, codes.Unauthenticated, "needs a bearer token"},
		{"unknown token", func() error {
			_, err := c.ModelInfer(withToken(ctxT(t), "wrong-token-0123456789"), mlpRequest("t", x...))
			return err
		}, codes.Unauthenticated, "not valid"},
		{"not a bearer token", func() error {
			_, err := c.ModelInfer(metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Basic "+inferToken), mlpRequest("t", x...))
			return err
		}, codes.Unauthenticated, "needs a bearer token"},
		{"stream without a token", func() error {
			st, err := c.ModelStreamInfer(ctxT(t))
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, codes.Unauthenticated, "needs a bearer token"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), tt.code, tt.want)
			good(t)
		})
	}
	if len(cases) < 25 {
		t.Errorf("%d cases; the matrix has at least 25", len(cases))
	}
	// Probes need no token unless protected; an admin token may infer.
	if _, err := c.ServerLive(ctxT(t), &pb.ServerLiveRequest{}); err != nil {
		t.Errorf("ServerLive without a token: %v", err)
	}
	if _, err := c.ModelInfer(withToken(ctxT(t), adminToken), mlpRequest("admin", x...)); err != nil {
		t.Errorf("ModelInfer with an admin token: %v", err)
	}
	if _, err := c.ModelMetadata(ctxT(t), &pb.ModelMetadataRequest{Name: "mlp"}); codeOf(err) != codes.Unauthenticated {
		t.Errorf("ModelMetadata without a token: %v", err)
	}
	s.mu.Lock()
	denied, limits := strings.Join(s.denied, ","), strings.Join(s.limits, ",")
	s.mu.Unlock()
	if denied != "missing,invalid,missing,missing,missing" {
		t.Errorf("denied reasons %q", denied)
	}
	if limits != "max_rank,max_elements,max_inputs,max_string_bytes" {
		t.Errorf("limits %q", limits)
	}
}

// Bytes that are not HTTP/2 get the connection closed; the server keeps serving.
func TestNotHTTP2(t *testing.T) {
	s := secured(t)
	for _, garbage := range []string{"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n", "\x00\x01\x02\x03 not a preface at all, just noise \xff\xfe\r\n\r\n\r\n"} {
		conn, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte(garbage)); err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%q: the connection stayed open", garbage)
		}
		conn.Close()
	}
	c := s.client(t)
	if _, err := c.ModelInfer(withToken(ctxT(t), inferToken), mlpRequest("after", 1, 2, 3, 4)); err != nil {
		t.Errorf("after garbage: %v", err)
	}
}

// h2conn is a raw HTTP/2 client connection, for what a gRPC client never sends.
type h2conn struct {
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	h := &h2conn{conn: conn, fr: http2.NewFramer(conn, conn)}
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// open starts a ModelStreamInfer call on stream id with the infer token, sending nothing.
func (h *h2conn) open(t *testing.T, id uint32) {
	t.Helper()
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", pb.GRPCInferenceService_ModelStreamInfer_FullMethodName},
		{":authority", "inferd"}, {"content-type", "application/grpc"}, {"te", "trailers"}, {"authorization", "Bearer " + inferToken}} {
		_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// Streams over max_concurrent_streams are refused (REFUSED_STREAM) to a client that ignores
// the setting; a gRPC client waits for a free one instead, within its deadline. Open, stalled
// streams hold their slots but nothing else: the server answers other connections.
func TestTooManyStreams(t *testing.T) {
	s := secured(t)
	h := dialH2(t, s.addr)
	for id := uint32(1); id <= 9; id += 2 { // 5 streams, 4 allowed
		h.open(t, id)
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no RST_STREAM for the fifth stream: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok {
			if rst.StreamID != 9 || rst.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("RST_STREAM %d %v, want stream 9 REFUSED_STREAM", rst.StreamID, rst.ErrCode)
			}
			break
		}
	}

	// A gRPC client on one connection: 4 stalled streams, then a call that must wait.
	cc := s.dial(t)
	c := pb.NewGRPCInferenceServiceClient(cc)
	sctx, cancel := context.WithCancel(withToken(ctxT(t), inferToken))
	defer cancel()
	var streams []pb.GRPCInferenceService_ModelStreamInferClient
	for range 4 {
		st, err := c.ModelStreamInfer(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(mlpRequest("warm", 1, 2, 3, 4)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Recv(); err != nil { // the stream is open on the server
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	short, cancelShort := context.WithTimeout(withToken(ctxT(t), inferToken), 300*time.Millisecond)
	_, err := c.ModelInfer(short, mlpRequest("waits", 1, 2, 3, 4))
	cancelShort()
	wantCode(t, err, codes.DeadlineExceeded, "")
	// Another connection is not held up.
	if _, err := s.client(t).ModelInfer(withToken(ctxT(t), inferToken), mlpRequest("other", 1, 2, 3, 4)); err != nil {
		t.Errorf("another connection: %v", err)
	}
	if err := streams[0].CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := streams[0].Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("closed stream: %v", err)
	}
	if _, err := c.ModelInfer(withToken(ctxT(t), inferToken), mlpRequest("freed", 1, 2, 3, 4)); err != nil {
		t.Errorf("after a stream closed: %v", err)
	}
}

// A client that pings more often than keepalive_min_time is sent GOAWAY too_many_pings.
func TestKeepaliveEnforcement(t *testing.T) {
	s := secured(t)
	h := dialH2(t, s.addr)
	var data [8]byte
	for i := range 10 {
		data[0] = byte(i)
		if err := h.fr.WritePing(false, data); err != nil {
			break // the server may have closed already
		}
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(ga.DebugData()), "too_many_pings") {
				t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			break
		}
	}
	if _, err := s.client(t).ModelInfer(withToken(ctxT(t), inferToken), mlpRequest("after", 1, 2, 3, 4)); err != nil {
		t.Errorf("after the ping flood: %v", err)
	}
}
