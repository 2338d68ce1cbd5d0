package tensor

import (
	"errors"
	"strings"
	"testing"
)

func TestElements(t *testing.T) {
	cases := []struct {
		shape []int64
		want  int64
		err   bool
	}{
		{nil, 1, false},
		{[]int64{}, 1, false},
		{[]int64{2, 3, 4}, 24, false},
		{[]int64{0, 5}, 0, false},
		{[]int64{-1, 3}, 0, true},
		{[]int64{1 << 21, 1 << 21}, 0, true},                   // 2^42 > MaxElements
		{[]int64{1 << 62, 1 << 62, 4}, 0, true},                // would overflow int64
		{[]int64{0, 1 << 62, 1 << 62}, 0, false},               // a zero dimension first
		{[]int64{3037000500, 3037000500, 3037000500}, 0, true}, // overflow of the square
	}
	for _, c := range cases {
		got, err := Elements(c.shape)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("Elements(%v) = %d, %v; want %d, err %v", c.shape, got, err, c.want, c.err)
		}
		if err != nil && !errors.Is(err, ErrShape) {
			t.Errorf("Elements(%v) error %v does not wrap ErrShape", c.shape, err)
		}
	}
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		t    Tensor
		err  error
	}{
		{"fp32 ok", FromFloat32s("a", []int64{2}, []float32{1, 2}), nil},
		{"scalar ok", FromFloat32s("a", []int64{}, []float32{1}), nil},
		{"short data", Tensor{Name: "a", DataType: Int64, Shape: []int64{2}, Data: make([]byte, 15)}, ErrDataSize},
		{"bytes ok", Tensor{Name: "s", DataType: Bytes, Shape: []int64{2}, Strings: [][]byte{nil, []byte("x")}}, nil},
		{"bytes count", Tensor{Name: "s", DataType: Bytes, Shape: []int64{3}, Strings: [][]byte{nil}}, ErrDataSize},
		{"bad type", Tensor{Name: "a", DataType: "FLOAT", Shape: []int64{1}}, ErrUnknownDataType},
		{"negative dim", Tensor{Name: "a", DataType: Uint8, Shape: []int64{-2}}, ErrShape},
	}
	for _, c := range cases {
		err := c.t.Check()
		if c.err == nil && err != nil || c.err != nil && !errors.Is(err, c.err) {
			t.Errorf("%s: Check() = %v, want %v", c.name, err, c.err)
		}
	}
}

func TestAccepts(t *testing.T) {
	spec := Spec{Name: "x", DataType: FP32, Shape: []int64{-1, 3}}
	cases := []struct {
		d     DataType
		shape []int64
		err   string
	}{
		{FP32, []int64{5, 3}, ""},
		{FP64, []int64{5, 3}, "datatype FP64, model expects FP32"},
		{FP32, []int64{3}, "rank 1"},
		{FP32, []int64{5, 4}, "dimension 1 must be 3"},
	}
	for _, c := range cases {
		err := spec.Accepts(c.d, c.shape)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("Accepts(%s, %v) = %v, want %q", c.d, c.shape, err, c.err)
		}
	}
}

func TestDataTypes(t *testing.T) {
	for _, name := range []string{"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16", "BYTES"} {
		d, err := ParseDataType(name)
		if err != nil || string(d) != name {
			t.Errorf("ParseDataType(%s) = %v, %v", name, d, err)
		}
	}
	if _, err := ParseDataType("FLOAT32"); !errors.Is(err, ErrUnknownDataType) {
		t.Errorf("ParseDataType(FLOAT32) = %v", err)
	}
	if FP64.Size() != 8 || Bool.Size() != 1 || Bytes.Size() != 0 || BF16.Size() != 2 {
		t.Error("element sizes")
	}
	f := FromFloat32s("a", []int64{3}, []float32{1.5, -2, 0})
	if got := f.Float32s(); got[0] != 1.5 || got[1] != -2 || got[2] != 0 {
		t.Errorf("round trip %v", got)
	}
}
