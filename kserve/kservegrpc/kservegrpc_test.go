package kservegrpc_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tensor"
)

type input = pb.ModelInferRequest_InferInputTensor

func typed(name, dt string, shape []int64, c *pb.InferTensorContents) *input {
	return &input{Name: name, Datatype: dt, Shape: shape, Contents: c}
}

func le32(vs ...float32) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// Every datatype decodes from its typed field and from raw bytes to the same tensor, and the
// tensor encodes back to what it came from.
func TestDecodeEveryDatatype(t *testing.T) {
	tests := []struct {
		dt       tensor.DataType
		contents *pb.InferTensorContents // nil: raw only
		want     []byte                  // little-endian data; nil for BYTES
	}{
		{tensor.Bool, &pb.InferTensorContents{BoolContents: []bool{true, false}}, []byte{1, 0}},
		{tensor.Int8, &pb.InferTensorContents{IntContents: []int32{-128, 127}}, []byte{0x80, 0x7f}},
		{tensor.Int16, &pb.InferTensorContents{IntContents: []int32{-2, 300}}, []byte{0xfe, 0xff, 0x2c, 0x01}},
		{tensor.Int32, &pb.InferTensorContents{IntContents: []int32{-1, 1 << 30}}, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x40}},
		{tensor.Int64, &pb.InferTensorContents{Int64Contents: []int64{-1, 2}}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 0, 0}},
		{tensor.Uint8, &pb.InferTensorContents{UintContents: []uint32{0, 255}}, []byte{0, 0xff}},
		{tensor.Uint16, &pb.InferTensorContents{UintContents: []uint32{1, 65535}}, []byte{1, 0, 0xff, 0xff}},
		{tensor.Uint32, &pb.InferTensorContents{UintContents: []uint32{7, math.MaxUint32}}, []byte{7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}},
		{tensor.Uint64, &pb.InferTensorContents{Uint64Contents: []uint64{1, math.MaxUint64}}, []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{tensor.FP32, &pb.InferTensorContents{Fp32Contents: []float32{1.5, -2}}, le32(1.5, -2)},
		{tensor.FP64, &pb.InferTensorContents{Fp64Contents: []float64{0.25, -1}}, binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.25)), math.Float64bits(-1))},
		{tensor.FP16, nil, []byte{0x00, 0x3c, 0x00, 0xc0}},
		{tensor.BF16, nil, []byte{0x80, 0x3f, 0x00, 0xc0}},
		{tensor.Bytes, &pb.InferTensorContents{BytesContents: [][]byte{[]byte("ab"), {}}}, nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.dt), func(t *testing.T) {
			want := tensor.Tensor{Name: "x", DataType: tt.dt, Shape: []int64{1, 2}, Data: tt.want}
			if tt.dt == tensor.Bytes {
				want.Strings = [][]byte{[]byte("ab"), {}}
			}
			var forms []*pb.ModelInferRequest
			if tt.contents != nil {
				forms = append(forms, &pb.ModelInferRequest{Inputs: []*input{typed("x", string(tt.dt), []int64{1, 2}, tt.contents)}})
			} else {
				m := &pb.ModelInferRequest{Inputs: []*input{typed("x", string(tt.dt), []int64{1, 2}, &pb.InferTensorContents{Fp32Contents: []float32{1, 2}})}}
				if _, err := kservegrpc.DecodeRequest(m, kserve.Limits{}); err == nil || !strings.Contains(err.Error(), "raw_input_contents only") {
					t.Errorf("typed %s: %v, want raw-only refusal", tt.dt, err)
				}
			}
			raw, err := kservegrpc.EncodeRequest(&kserve.InferRequest{Inputs: []kserve.Input{{Tensor: want}}}, "m", "", true)
			if err != nil {
				t.Fatal(err)
			}
			forms = append(forms, raw)
			for _, m := range forms {
				// Through the wire, as a server gets it.
				wire, err := proto.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				var got pb.ModelInferRequest
				if err := proto.Unmarshal(wire, &got); err != nil {
					t.Fatal(err)
				}
				req, err := kservegrpc.DecodeRequest(&got, kserve.Limits{})
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				g := req.Inputs[0].Tensor
				if g.Name != "x" || g.DataType != tt.dt || !reflect.DeepEqual(g.Shape, want.Shape) ||
					!bytes.Equal(g.Data, want.Data) || !reflect.DeepEqual(g.Strings, want.Strings) {
					t.Errorf("decoded %+v, want %+v", g, want)
				}
			}
		})
	}
}

// A raw input's data is the message's own bytes, not a copy, and the protobuf runtime placed
// them 8-byte aligned, so that the engine can hand them on without copying either.
func TestRawInputsAliasTheMessage(t *testing.T) {
	for _, size := range []int{4, 8, 12, 24, 1000, 4 << 20} {
		m := &pb.ModelInferRequest{Inputs: []*input{{Name: "x", Datatype: "FP32", Shape: []int64{int64(size / 4)}}}, RawInputContents: [][]byte{make([]byte, size)}}
		wire, _ := proto.Marshal(m)
		var got pb.ModelInferRequest
		if err := proto.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		req, err := kservegrpc.DecodeRequest(&got, kserve.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		data := req.Inputs[0].Tensor.Data
		if unsafe.SliceData(data) != unsafe.SliceData(got.RawInputContents[0]) {
			t.Errorf("%d bytes: the tensor's data is a copy", size)
		}
		if addr := uintptr(unsafe.Pointer(unsafe.SliceData(data))); addr%8 != 0 {
			t.Errorf("%d bytes: raw data at %#x is not 8-byte aligned", size, addr)
		}
	}
}

func TestDecodeParametersAndOutputs(t *testing.T) {
	m := &pb.ModelInferRequest{
		Id: "req-1",
		Parameters: map[string]*pb.InferParameter{
			"priority": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 2}},
			"timeout":  {ParameterChoice: &pb.InferParameter_Uint64Param{Uint64Param: 500}},
			"b":        {ParameterChoice: &pb.InferParameter_BoolParam{BoolParam: true}},
			"s":        {ParameterChoice: &pb.InferParameter_StringParam{StringParam: "v"}},
			"d":        {ParameterChoice: &pb.InferParameter_DoubleParam{DoubleParam: 1.5}},
			"none":     {},
		},
		Inputs:  []*input{typed("x", "FP32", []int64{1}, &pb.InferTensorContents{Fp32Contents: []float32{1}})},
		Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "y"}, {Name: "z"}},
	}
	req, err := kservegrpc.DecodeRequest(m, kserve.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"priority": int64(2), "timeout": uint64(500), "b": true, "s": "v", "d": 1.5, "none": nil}
	if req.ID != "req-1" || !reflect.DeepEqual(req.Parameters, want) {
		t.Errorf("id %q parameters %v, want req-1 %v", req.ID, req.Parameters, want)
	}
	if len(req.Outputs) != 2 || req.Outputs[0].Name != "y" || req.Outputs[1].Name != "z" {
		t.Errorf("outputs %+v", req.Outputs)
	}
}

// Each malformed request is refused with an error that says what is wrong, wraps the
// sentinel, and, for a limit, names it.
func TestDecodeRejects(t *testing.T) {
	fp32 := func(vs ...float32) *pb.InferTensorContents { return &pb.InferTensorContents{Fp32Contents: vs} }
	lim := kserve.Limits{MaxInputs: 2, MaxRank: 3, MaxElements: 100, MaxStringBytes: 4}
	tests := []struct {
		name     string
		m        *pb.ModelInferRequest
		want     string
		limit    string
		sentinel error
	}{
		{name: "no name", m: &pb.ModelInferRequest{Inputs: []*input{typed("", "FP32", []int64{1}, fp32(1))}}, want: "inputs[0]: missing name"},
		{name: "unknown datatype", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FLOAT", []int64{1}, fp32(1))}}, want: `input "x": unknown datatype "FLOAT"`},
		{name: "negative dimension", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{-1}, fp32(1))}}, want: "negative dimension", sentinel: tensor.ErrShape},
		{name: "overflowing shape", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1 << 40, 1 << 40}, fp32(1))}}, want: "more than", sentinel: tensor.ErrShape},
		{name: "too many elements", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{101}, fp32(1))}}, want: "(max_elements)", limit: "max_elements"},
		{name: "rank", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1, 1, 1, 1}, fp32(1))}}, want: "(max_rank)", limit: "max_rank"},
		{name: "inputs", m: &pb.ModelInferRequest{Inputs: []*input{typed("a", "FP32", nil, fp32(1)), typed("b", "FP32", nil, fp32(1)), typed("c", "FP32", nil, fp32(1))}}, want: "(max_inputs)", limit: "max_inputs"},
		{name: "typed count", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{2, 2}, fp32(1, 2, 3))}}, want: "shape [2,2] needs 4 elements, contents.fp32_contents has 3", sentinel: tensor.ErrDataSize},
		{name: "typed wrong field", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1}, &pb.InferTensorContents{Int64Contents: []int64{1}})}}, want: "contents.int64_contents; FP32 data goes in contents.fp32_contents"},
		{name: "no data", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{2}, nil)}}, want: "no data"},
		{name: "int8 range", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "INT8", []int64{1}, &pb.InferTensorContents{IntContents: []int32{200}})}}, want: "out of range for INT8"},
		{name: "uint16 range", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "UINT16", []int64{1}, &pb.InferTensorContents{UintContents: []uint32{70000}})}}, want: "out of range for UINT16"},
		{name: "fp16 typed", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP16", []int64{1}, fp32(1))}}, want: "FP16 data travels in raw_input_contents only"},
		{name: "typed string limit", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BYTES", []int64{1}, &pb.InferTensorContents{BytesContents: [][]byte{[]byte("hello")}})}}, want: "(max_string_bytes)", limit: "max_string_bytes"},
		{name: "raw and typed", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1}, fp32(1))}, RawInputContents: [][]byte{le32(1)}}, want: "raw or typed"},
		{name: "raw count", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1}, nil), typed("y", "FP32", []int64{1}, nil)}, RawInputContents: [][]byte{le32(1)}}, want: "raw_input_contents has 1 entries for 2 inputs"},
		{name: "raw size", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{2, 3}, nil)}, RawInputContents: [][]byte{make([]byte, 10)}}, want: "10 bytes; shape [2,3] of FP32 needs 24", sentinel: tensor.ErrDataSize},
		{name: "raw bool", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BOOL", []int64{2}, nil)}, RawInputContents: [][]byte{{1, 2}}}, want: "BOOL element 1 is byte 0x02"},
		{name: "raw bytes short length", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BYTES", []int64{1}, nil)}, RawInputContents: [][]byte{{1, 0}}}, want: "4-byte length at offset 0 runs past the end"},
		{name: "raw bytes overrun", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BYTES", []int64{1}, nil)}, RawInputContents: [][]byte{{9, 0, 0, 0, 'a'}}}, want: "length 9 at offset 0 runs past the end"},
		{name: "raw bytes extra", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BYTES", []int64{1}, nil)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 0}}}, want: "1 bytes remain after them", sentinel: tensor.ErrDataSize},
		{name: "raw bytes count", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BYTES", []int64{2}, nil)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a'}}}, want: "needs 2 BYTES elements, the raw contents hold 1", sentinel: tensor.ErrDataSize},
		{name: "raw string limit", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "BYTES", []int64{1}, nil)}, RawInputContents: [][]byte{{5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}}}, want: "(max_string_bytes)", limit: "max_string_bytes"},
		{name: "output name", m: &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1}, fp32(1))}, Outputs: []*pb.ModelInferRequest_InferRequestedOutputTensor{{}}}, want: "outputs[0]: missing name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := kservegrpc.DecodeRequest(tt.m, lim)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, kserve.ErrInvalidRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to wrap ErrInvalidRequest and say %q", err, tt.want)
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("error %q does not wrap %v", err, tt.sentinel)
			}
			var le *kserve.LimitError
			if errors.As(err, &le) != (tt.limit != "") || (le != nil && le.Limit != tt.limit) {
				t.Errorf("limit error %v, want limit %q", le, tt.limit)
			}
		})
	}
}

// An empty contents message beside raw data is taken as absent, as clients that always set
// the field send it.
func TestEmptyContentsWithRaw(t *testing.T) {
	m := &pb.ModelInferRequest{Inputs: []*input{typed("x", "FP32", []int64{1}, &pb.InferTensorContents{})}, RawInputContents: [][]byte{le32(2)}}
	req, err := kservegrpc.DecodeRequest(m, kserve.Limits{})
	if err != nil || req.Inputs[0].Tensor.Float32s()[0] != 2 {
		t.Fatalf("%v %+v", err, req)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	outputs := []tensor.Tensor{
		tensor.FromFloat32s("y", []int64{1, 2}, []float32{1, -1}),
		{Name: "s", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("a"), []byte("bc")}},
		{Name: "b", DataType: tensor.Bool, Shape: []int64{2}, Data: []byte{0, 7}},
		{Name: "scalar", DataType: tensor.Int64, Shape: []int64{}, Data: binary.LittleEndian.AppendUint64(nil, 42)},
	}
	resp := kservegrpc.EncodeResponse("m", "3", "id", outputs)
	if unsafe.SliceData(resp.RawOutputContents[0]) != unsafe.SliceData(outputs[0].Data) {
		t.Error("FP32 output copied into the response")
	}
	if resp.RawOutputContents[2][1] != 1 || outputs[2].Data[1] != 7 {
		t.Error("BOOL output not normalized in a copy")
	}
	wire, _ := proto.Marshal(resp)
	var got pb.ModelInferResponse
	if err := proto.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	if got.ModelName != "m" || got.ModelVersion != "3" || got.Id != "id" {
		t.Errorf("header %v", &got)
	}
	dec, err := kservegrpc.DecodeResponse(&got)
	if err != nil {
		t.Fatal(err)
	}
	outputs[2].Data = []byte{0, 1}
	for i := range outputs {
		if dec[i].Name != outputs[i].Name || dec[i].DataType != outputs[i].DataType || tensor.FormatShape(dec[i].Shape) != tensor.FormatShape(outputs[i].Shape) ||
			!bytes.Equal(dec[i].Data, outputs[i].Data) || !reflect.DeepEqual(dec[i].Strings, outputs[i].Strings) {
			t.Errorf("output %d: %+v, want %+v", i, dec[i], outputs[i])
		}
	}
}

// FuzzDecodeRequest feeds arbitrary bytes through the protobuf decoder and DecodeRequest: no
// panic, every refusal wraps ErrInvalidRequest, every accepted input passes tensor.Check and
// survives encoding (raw and, where the datatype has a field, typed) and decoding unchanged.
func FuzzDecodeRequest(f *testing.F) {
	seeds := []*pb.ModelInferRequest{
		{ModelName: "m", Id: "1", Inputs: []*input{typed("x", "FP32", []int64{2}, &pb.InferTensorContents{Fp32Contents: []float32{1, 2}})}},
		{Inputs: []*input{typed("x", "FP32", []int64{1, 2}, nil)}, RawInputContents: [][]byte{le32(1, 2)}},
		{Inputs: []*input{typed("s", "BYTES", []int64{2}, nil)}, RawInputContents: [][]byte{{1, 0, 0, 0, 'a', 0, 0, 0, 0}}},
		{Inputs: []*input{typed("b", "BOOL", []int64{2}, &pb.InferTensorContents{BoolContents: []bool{true, false}})}},
		{Inputs: []*input{typed("i", "INT8", []int64{1}, &pb.InferTensorContents{IntContents: []int32{-3}})}},
		{Inputs: []*input{typed("h", "BF16", []int64{1}, nil)}, RawInputContents: [][]byte{{0x80, 0x3f}}},
		{Inputs: []*input{typed("k", "INT64", nil, &pb.InferTensorContents{Int64Contents: []int64{7}})},
			Parameters: map[string]*pb.InferParameter{"timeout": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 5}}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	lim := kserve.Limits{MaxInputs: 8, MaxRank: 8, MaxElements: 1 << 16, MaxStringBytes: 1 << 10}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var m pb.ModelInferRequest
		if err := proto.Unmarshal(wire, &m); err != nil {
			return // grpc answers these itself, before any handler
		}
		req, err := kservegrpc.DecodeRequest(&m, lim)
		if err != nil {
			if !errors.Is(err, kserve.ErrInvalidRequest) {
				t.Fatalf("error %q does not wrap ErrInvalidRequest", err)
			}
			return
		}
		for _, in := range req.Inputs {
			if err := in.Tensor.Check(); err != nil {
				t.Fatalf("decoded input fails Check: %v", err)
			}
		}
		for _, raw := range []bool{true, false} {
			again, err := kservegrpc.EncodeRequest(req, m.ModelName, m.ModelVersion, raw)
			if err != nil {
				t.Fatalf("re-encoding: %v", err)
			}
			back, err := kservegrpc.DecodeRequest(again, lim)
			if err != nil {
				t.Fatalf("re-decoding (raw %v): %v", raw, err)
			}
			for i := range req.Inputs {
				a, b := req.Inputs[i].Tensor, back.Inputs[i].Tensor
				if a.Name != b.Name || a.DataType != b.DataType || tensor.FormatShape(a.Shape) != tensor.FormatShape(b.Shape) ||
					!bytes.Equal(a.Data, b.Data) || len(a.Strings) != len(b.Strings) {
					t.Fatalf("input %d changed through encoding (raw %v): %+v -> %+v", i, raw, a, b)
				}
				for j := range a.Strings {
					if !bytes.Equal(a.Strings[j], b.Strings[j]) {
						t.Fatalf("input %d element %d changed through encoding", i, j)
					}
				}
			}
		}
	})
}
