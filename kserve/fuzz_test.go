package kserve

import (
	"bytes"
	"errors"
	"testing"

	"github.com/inferd/inferd/tensor"
)

// FuzzDecodeRequest checks that no body makes DecodeLimited panic, that every failure wraps
// ErrInvalidRequest, and that every success yields consistent tensors.
func FuzzDecodeRequest(f *testing.F) {
	seeds := []string{
		oneInput("x", "FP32", "[2,2]", "[[1,2],[3.5,-4e3]]"),
		oneInput("x", "FP64", "[3]", "[NaN,Infinity,-Infinity]"),
		oneInput("x", "INT8", "[2]", "[-128,127]"),
		oneInput("x", "UINT64", "[1]", "[18446744073709551615]"),
		oneInput("x", "BOOL", "[]", "[true]"),
		oneInput("x", "BYTES", "[2]", `["a\u00e9\ud83d\ude00","\n"]`),
		oneInput("x", "FP16", "[1]", "[1]"),
		`{"id":"1","parameters":{"priority":1,"p":[{"a":null}]},"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`,
		`{"inputs":[{"data":[[1],[2]],"shape":[2,1],"datatype":"INT32","name":"x"}]}`,
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}`,
		`{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[]}]}`,
		`{"inputs":[`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %q does not wrap ErrInvalidRequest", err)
			}
			return
		}
		for _, in := range req.Inputs {
			if err := in.Tensor.Check(); err != nil {
				t.Fatalf("decoded input fails Check: %v", err)
			}
		}
	})
}

// FuzzDecodeBinary checks DecodeLimited with the binary tensor data extension (and DecodeResponse on
// the same bytes): no panic, every failure wraps the sentinel of its side, every success yields
// tensors that pass Check and survive a binary re-encoding unchanged.
func FuzzDecodeBinary(f *testing.F) {
	add := func(body []byte, headerLength int) { f.Add(body, headerLength) }
	valid := &InferRequest{ID: "a", Inputs: []Input{
		{Tensor: tensor.FromFloat32s("x", []int64{2}, []float32{1, -2})},
		{Tensor: tensor.Tensor{Name: "s", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{{}, {0, 1}}}},
		{Tensor: tensor.Tensor{Name: "b", DataType: tensor.Bool, Shape: []int64{1}, Data: []byte{1}}},
		{Tensor: tensor.Tensor{Name: "h", DataType: tensor.BF16, Shape: []int64{1, 1}, Data: []byte{0x80, 0x3f}}},
	}, Outputs: []RequestedOutput{{Name: "y", Parameters: map[string]any{"binary_data": true}}}}
	body, h := EncodeRequest(nil, valid, true)
	add(body, h)
	add(body, h-1)
	add(body, h+1)
	add(body[:len(body)-1], h)
	add(append(body[:len(body):len(body)], 0), h)
	add(body, -1)
	body, h = EncodeRequest(nil, valid, false) // FP16/BF16 still binary, the rest JSON
	add(body, h)
	for _, tt := range allTypes() {
		body, h = EncodeRequest(nil, &InferRequest{Inputs: []Input{{Tensor: tt}}}, true)
		add(body, h)
	}
	resp, h := encodeResponse(nil, &InferResponse{ModelName: "m", Outputs: allTypes(), Binary: []bool{true, false, true}})
	add(resp, h)
	add([]byte(`{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":4}}]}`+"\xff\xff\xff\xff"), 87)
	add([]byte(`{"inputs":[{"name":"b","datatype":"BOOL","shape":[1],"parameters":{"binary_data_size":1}}]}`+"\x02"), 86)
	add([]byte(`{"inputs":[]}   `), 13)
	add([]byte(`{"inputs":[]}`), -7)

	f.Fuzz(func(t *testing.T, body []byte, headerLength int) {
		if _, err := DecodeResponse(body, headerLength); err != nil && !errors.Is(err, ErrInvalidResponse) {
			t.Fatalf("DecodeResponse error %q does not wrap ErrInvalidResponse", err)
		}
		req, err := decode(body, headerLength)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %q does not wrap ErrInvalidRequest", err)
			}
			return
		}
		for _, in := range req.Inputs {
			if err := in.Tensor.Check(); err != nil {
				t.Fatalf("decoded input fails Check: %v", err)
			}
			if in.Tensor.DataType == tensor.Bool && bytes.ContainsFunc(in.Tensor.Data, func(r rune) bool { return r > 1 }) {
				t.Fatalf("BOOL input %q holds %v", in.Tensor.Name, in.Tensor.Data)
			}
		}
		again, h := EncodeRequest(nil, req, true)
		req2, err := decode(again, h)
		if err != nil {
			t.Fatalf("re-encoded request fails: %v\n%q", err, again)
		}
		for i := range req.Inputs {
			if diff := sameTensor(req2.Inputs[i].Tensor, req.Inputs[i].Tensor); diff != "" {
				t.Fatalf("input %q: %s differs after a binary round trip", req.Inputs[i].Tensor.Name, diff)
			}
		}
	})
}
