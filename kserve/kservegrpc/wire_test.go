package kservegrpc_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

type output = pb.ModelInferResponse_InferOutputTensor

func int64Param(v int64) *pb.InferParameter {
	return &pb.InferParameter{ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: v}}
}

// wireRequests are requests in the shapes clients send: raw, typed, with parameters and an
// output filter, empty raw entries, many of them.
func wireRequests() []*pb.ModelInferRequest {
	big := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 40000)
	return []*pb.ModelInferRequest{
		{},
		{ModelName: "m"},
		{ModelName: "m", ModelVersion: "2", Id: "req", Inputs: []*input{{Name: "x", Datatype: "FP32", Shape: []int64{1, 3}}},
			RawInputContents: [][]byte{{0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64}}},
		{ModelName: "m", Parameters: map[string]*pb.InferParameter{"priority": int64Param(1)},
			Inputs:           []*input{{Name: "a", Datatype: "UINT8", Shape: []int64{0}}, {Name: "b", Datatype: "UINT8", Shape: []int64{len64(big)}}},
			Outputs:          []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "y"}},
			RawInputContents: [][]byte{{}, big, {9}}},
		{ModelName: "typed", Inputs: []*input{{Name: "x", Datatype: "FP32", Shape: []int64{2},
			Contents: &pb.InferTensorContents{Fp32Contents: []float32{1, 2}}}}},
	}
}

func len64(b []byte) int64 { return int64(len(b)) }

// UnmarshalRequest decodes what proto.Unmarshal decodes, and its raw entries are b's bytes.
func TestUnmarshalRequestMatchesProto(t *testing.T) {
	for i, m := range wireRequests() {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var got pb.ModelInferRequest
		if err := kservegrpc.UnmarshalRequest(b, &got); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !proto.Equal(&got, m) {
			t.Errorf("request %d: decoded %v, want %v", i, &got, m)
		}
		assertAliases(t, b, got.RawInputContents)
	}
}

// assertAliases checks that each raw entry lies in b, capped at its length.
func assertAliases(t *testing.T, b []byte, raw [][]byte) {
	t.Helper()
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for j, r := range raw {
		p := uintptr(unsafe.Pointer(unsafe.SliceData(r)))
		if len(r) > 0 && (p < lo || p+uintptr(len(r)) > lo+uintptr(len(b))) {
			t.Errorf("raw entry %d is a copy, not a slice of the message", j)
		}
		if cap(r) != len(r) {
			t.Errorf("raw entry %d: cap %d, len %d: appending would write into the message", j, cap(r), len(r))
		}
	}
}

// Fields may come in any order, a singular one more than once (the last wins), and raw entries
// between the others; the decoded message is still proto.Unmarshal's.
func TestUnmarshalRequestInterleaved(t *testing.T) {
	var b []byte
	str := func(n protowire.Number, s string) {
		b = protowire.AppendTag(b, n, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	msg := func(n protowire.Number, m proto.Message) {
		e, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		b = protowire.AppendTag(b, n, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	str(7, "first raw")
	str(1, "old name")
	msg(5, &input{Name: "x", Datatype: "BYTES", Shape: []int64{1}})
	str(7, "second raw")
	str(3, "id")
	str(1, "model")
	b = protowire.AppendTag(b, 99, protowire.VarintType) // unknown, kept by both
	b = protowire.AppendVarint(b, 5)
	str(7, "")
	msg(5, &input{Name: "y", Datatype: "BYTES", Shape: []int64{1}})

	var want, got pb.ModelInferRequest
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if err := kservegrpc.UnmarshalRequest(b, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, &want) {
		t.Errorf("decoded %v, want %v", &got, &want)
	}
	if got.ModelName != "model" || len(got.RawInputContents) != 3 || string(got.RawInputContents[1]) != "second raw" {
		t.Errorf("decoded %v", &got)
	}
	assertAliases(t, b, got.RawInputContents)
}

// Every prefix of a request and every single-byte corruption of it: UnmarshalRequest fails
// exactly when proto.Unmarshal does, and agrees with it when neither fails.
func TestUnmarshalRequestMalformed(t *testing.T) {
	m := wireRequests()[3]
	m.RawInputContents[1] = m.RawInputContents[1][:300]
	m.Inputs[1].Shape = []int64{300}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(b) {
		checkAgrees(t, b[:n:n])
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		c := bytes.Clone(b)
		c[rng.IntN(len(c))] = byte(rng.UintN(256))
		checkAgrees(t, c)
	}
}

func checkAgrees(t *testing.T, b []byte) {
	t.Helper()
	var want, got pb.ModelInferRequest
	werr := proto.Unmarshal(b, &want)
	gerr := kservegrpc.UnmarshalRequest(b, &got)
	switch {
	case (werr == nil) != (gerr == nil):
		t.Errorf("%x: proto.Unmarshal: %v, UnmarshalRequest: %v", b, werr, gerr)
	case werr == nil && !proto.Equal(&got, &want):
		t.Errorf("%x: decoded %v, want %v", b, &got, &want)
	}
}

func FuzzUnmarshalRequest(f *testing.F) {
	for _, m := range wireRequests() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgrees(t, b)
	})
}

// RawInputOffset points at the first raw entry's bytes, wherever the fields before it end.
func TestRawInputOffset(t *testing.T) {
	for i, m := range wireRequests() {
		b, _ := proto.Marshal(m)
		off := kservegrpc.RawInputOffset(b)
		if len(m.RawInputContents) == 0 || len(m.RawInputContents[0]) == 0 {
			if len(m.RawInputContents) == 0 && off != -1 {
				t.Errorf("request %d: no raw input, offset %d", i, off)
			}
			continue
		}
		first := m.RawInputContents[0]
		if off < 0 || !bytes.Equal(b[off:off+len(first)], first) {
			t.Errorf("request %d: offset %d does not start the first raw entry", i, off)
		}
		if got := kservegrpc.RawInputOffset(b[:off-1]); got != -1 {
			t.Errorf("request %d: a prefix that ends before the bytes gives %d", i, got)
		}
	}
}

// wireResponses cover no outputs, small outputs copied in, large ones as pieces of their own,
// empty ones, and the fields around them.
func wireResponses() []*pb.ModelInferResponse {
	large := bytes.Repeat([]byte{7}, 64<<10)
	return []*pb.ModelInferResponse{
		{},
		{ModelName: "m", ModelVersion: "1", Id: "r"},
		{ModelName: "m", Outputs: []*output{{Name: "y", Datatype: "FP32", Shape: []int64{1}}}, RawOutputContents: [][]byte{{0, 0, 128, 63}}},
		{ModelName: "m", Parameters: map[string]*pb.InferParameter{"k": int64Param(3)},
			Outputs:           []*output{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}},
			RawOutputContents: [][]byte{large, {}, {1, 2}, large[:16<<10]}},
		{ModelName: "m", RawOutputContents: [][]byte{{}, {}}},
	}
}

// The pieces put together are proto.Marshal's bytes; the large outputs are the response's
// own slices, and the response is as it was.
func TestMarshalResponseMatchesProto(t *testing.T) {
	for i, m := range wireResponses() {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		before := proto.Clone(m)
		pieces, err := kservegrpc.MarshalResponse(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Join(pieces, nil); !bytes.Equal(got, want) {
			t.Errorf("response %d: marshalled %x, want %x", i, got, want)
		}
		if !proto.Equal(m, before) {
			t.Errorf("response %d: changed to %v", i, m)
		}
		assertLargeAliased(t, i, pieces, m.RawOutputContents)
	}
}

// assertLargeAliased checks that every raw output of 16 KiB or more is one of the pieces.
func assertLargeAliased(t *testing.T, i int, pieces, raw [][]byte) {
	t.Helper()
	for j, r := range raw {
		if len(r) < 16<<10 {
			continue
		}
		found := false
		for _, p := range pieces {
			found = found || (len(p) == len(r) && unsafe.SliceData(p) == unsafe.SliceData(r))
		}
		if !found {
			t.Errorf("response %d: raw output %d (%d bytes) was copied", i, j, len(r))
		}
	}
}

func TestMarshalStreamResponseMatchesProto(t *testing.T) {
	var cases []*pb.ModelStreamInferResponse
	for _, r := range wireResponses() {
		cases = append(cases, &pb.ModelStreamInferResponse{InferResponse: r})
	}
	cases = append(cases, &pb.ModelStreamInferResponse{}, &pb.ModelStreamInferResponse{ErrorMessage: "bad input"},
		&pb.ModelStreamInferResponse{ErrorMessage: "both", InferResponse: wireResponses()[3]})
	for i, m := range cases {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		pieces, err := kservegrpc.MarshalStreamResponse(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Join(pieces, nil); !bytes.Equal(got, want) {
			t.Errorf("stream response %d: marshalled %x, want %x", i, got, want)
		}
		assertLargeAliased(t, i, pieces, m.GetInferResponse().GetRawOutputContents())
	}
}
