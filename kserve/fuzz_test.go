package kserve

import (
	"errors"
	"testing"
)

// FuzzDecodeRequest checks that no body makes DecodeRequest panic, that every failure wraps
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
		req, err := DecodeRequest(body)
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
