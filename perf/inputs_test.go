package perf

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/inferd/inferd/tensor"
)

func TestResolveShapes(t *testing.T) {
	specs := []tensor.Spec{
		{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 3, -1, 192}},
		{Name: "fixed", DataType: tensor.Int64, Shape: []int64{2, -1}},
	}
	for _, c := range []struct {
		name   string
		shapes map[string][]int64
		batch  int
		want   [][]int64
		rows   int64
	}{
		{"metadata with -1 as 1", nil, 0, [][]int64{{1, 3, 1, 192}, {2, 1}}, 1},
		{"batch sets variable dimension 0 only", nil, 8, [][]int64{{8, 3, 1, 192}, {2, 1}}, 8},
		{"shape flag", map[string][]int64{"x": {4, 3, 48, 192}}, 0, [][]int64{{4, 3, 48, 192}, {2, 1}}, 4},
		{"batch over shape flag", map[string][]int64{"x": {4, 3, 48, 192}}, 2, [][]int64{{2, 3, 48, 192}, {2, 1}}, 2},
	} {
		got, rows, err := resolveShapes(specs, c.shapes, c.batch)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		for i := range got {
			if !slices.Equal(got[i].Shape, c.want[i]) || got[i].DataType != specs[i].DataType || got[i].Name != specs[i].Name {
				t.Errorf("%s: input %d = %+v, want shape %v", c.name, i, got[i], c.want[i])
			}
		}
		if rows != c.rows {
			t.Errorf("%s: rows = %d, want %d", c.name, rows, c.rows)
		}
	}
	for name, shapes := range map[string]map[string][]int64{
		"unknown input":        {"y": {1}},
		"wrong rank":           {"x": {1, 3, 48}},
		"fixed dimension":      {"x": {1, 4, 48, 192}},
		"fixed dimension zero": {"fixed": {3, 1}},
	} {
		if _, _, err := resolveShapes(specs, shapes, 0); !errors.Is(err, ErrInput) {
			t.Errorf("%s: err = %v, want ErrInput", name, err)
		}
	}
	if _, _, err := resolveShapes(nil, nil, 0); !errors.Is(err, ErrInput) {
		t.Errorf("no inputs: err = %v, want ErrInput", err)
	}
}

func TestBuildInputs(t *testing.T) {
	var specs []tensor.Spec
	for _, dt := range []tensor.DataType{
		tensor.Bool, tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64, tensor.Int8, tensor.Int16,
		tensor.Int32, tensor.Int64, tensor.FP16, tensor.FP32, tensor.FP64, tensor.BF16, tensor.Bytes,
	} {
		specs = append(specs, tensor.Spec{Name: string(dt), DataType: dt, Shape: []int64{3, 5}})
	}
	specs = append(specs, tensor.Spec{Name: "scalar", DataType: tensor.FP32, Shape: []int64{}})

	a, err := buildInputs(specs, DataRandom, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := buildInputs(specs, DataRandom, 7)
	c, _ := buildInputs(specs, DataRandom, 8)
	zero, _ := buildInputs(specs, DataZero, 7)
	differs := false
	for i := range a {
		if err := a[i].Check(); err != nil {
			t.Errorf("random %s: %v", a[i].Name, err)
		}
		if err := zero[i].Check(); err != nil {
			t.Errorf("zero %s: %v", zero[i].Name, err)
		}
		if !bytes.Equal(a[i].Data, b[i].Data) || !slices.EqualFunc(a[i].Strings, b[i].Strings, bytes.Equal) {
			t.Errorf("%s: same seed gave different data", a[i].Name)
		}
		if !bytes.Equal(a[i].Data, c[i].Data) {
			differs = true
		}
		if slices.ContainsFunc(zero[i].Data, func(x byte) bool { return x != 0 }) {
			t.Errorf("zero %s: data %v", zero[i].Name, zero[i].Data)
		}
	}
	if !differs {
		t.Error("seeds 7 and 8 gave the same data")
	}
	for _, v := range a[slices.IndexFunc(a, func(x tensor.Tensor) bool { return x.DataType == tensor.FP32 })].Float32s() {
		if v < 0 || v >= 1 {
			t.Errorf("random FP32 %v outside [0, 1)", v)
		}
	}

	huge := []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{1 << 20, 1 << 20}}}
	if _, err := buildInputs(huge, DataZero, 1); !errors.Is(err, ErrInput) {
		t.Errorf("huge input: err = %v, want ErrInput", err)
	}
}
