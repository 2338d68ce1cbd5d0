package kserve

import (
	"errors"
	"strings"
	"testing"

	"github.com/inferd/inferd/tensor"
)

func TestDecodeLimited(t *testing.T) {
	lim := Limits{MaxDepth: 8, MaxInputs: 2, MaxRank: 3, MaxElements: 6, MaxStringBytes: 4}
	bin := func(tt tensor.Tensor) ([]byte, int) {
		return EncodeRequest(nil, &InferRequest{Inputs: []Input{{Tensor: tt}}}, true)
	}
	longBin, longBinH := bin(tensor.Tensor{Name: "s", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("12345")}})
	okBin, okBinH := bin(tensor.Tensor{Name: "s", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("1234")}})
	cases := []struct {
		name  string
		body  string
		h     int
		limit string // "" when the request is within the limits
	}{
		{"within", oneInput("x", "FP32", "[2,3]", "[1,2,3,4,5,6]"), -1, ""},
		{"deep data", oneInput("x", "FP32", "[1,1,1,1,1,1,1,1]", "[[[[[[[[1]]]]]]]]"), -1, "max_rank"},
		{"deep data within rank", oneInput("x", "FP32", "[1]", "[[[[[[[[[1]]]]]]]]]"), -1, "max_depth"},
		{"deep parameters", `{"parameters":{"a":[[[[[[[[1]]]]]]]]},"inputs":[]}`, -1, "max_depth"},
		{"inputs", `{"inputs":[` + strings.Join([]string{in("a"), in("b"), in("c")}, ",") + `]}`, -1, "max_inputs"},
		{"rank", oneInput("x", "FP32", "[1,1,1,1]", "[1]"), -1, "max_rank"},
		{"elements", oneInput("x", "FP32", "[7]", "[1,2,3,4,5,6,7]"), -1, "max_elements"},
		{"elements binary", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000000],"parameters":{"binary_data_size":4000000000}}]}`, 0, "max_elements"},
		{"string json", oneInput("s", "BYTES", "[1]", `["12345"]`), -1, "max_string_bytes"},
		{"string json escaped", oneInput("s", "BYTES", "[1]", `["\u00e9\u00e9\u00e9"]`), -1, "max_string_bytes"},
		{"string json within", oneInput("s", "BYTES", "[1]", `["1234"]`), -1, ""},
		{"string binary", string(longBin), longBinH, "max_string_bytes"},
		{"string binary within", string(okBin), okBinH, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := c.h
			if h == 0 {
				h = len(c.body)
			}
			_, err := DecodeLimited([][]byte{[]byte(c.body)}, h, lim)
			if c.limit == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var le *LimitError
			if !errors.As(err, &le) || le.Limit != c.limit || !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("err = %v, want a %s LimitError wrapping ErrInvalidRequest", err, c.limit)
			}
			if !strings.Contains(err.Error(), c.limit) {
				t.Errorf("message %q does not name the setting", err)
			}
			// Without limits the same body is judged on its own merits only.
			if _, err := decode([]byte(c.body), h); errors.As(err, &le) && le.Limit != "max_depth" {
				t.Errorf("DecodeLimited without limits reported %v", err)
			}
		})
	}
}

func in(name string) string {
	return `{"name":"` + name + `","datatype":"FP32","shape":[1],"data":[1]}`
}
