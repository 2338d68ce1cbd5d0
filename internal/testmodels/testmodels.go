// Package testmodels builds the project's small ONNX models (for tests, benchmarks and the demo
// repository served by `make run`) with onnxgen, and computes their expected outputs in plain Go
// so that tests can check ONNX Runtime's answers against an independent reference.
//
// Every model is deterministic: weights come from fixed formulas, so the same call always returns
// the same bytes and the committed demo repository can be checked for drift. This package must
// not import ONNX Runtime (only its tests do) nor any package of ours other than tensor.
package testmodels

import (
	"errors"
	"fmt"
	"strings"

	"github.com/inferd/inferd/internal/mlpmodel"
	"github.com/inferd/inferd/internal/onnxgen"
	"github.com/inferd/inferd/tensor"
)

// ErrUnsupportedDataType is returned by Identity for a datatype it has no model for.
var ErrUnsupportedDataType = errors.New("testmodels: unsupported datatype")

// The symbolic dimensions the models declare; ONNX Runtime reports them as -1.
const (
	batchDim = "batch"
	nDim     = "n"
)

// mlpDims are the layer widths of MLP: 4 inputs, 8 hidden, 3 outputs.
func mlpDims() []int { return []int{4, 8, 3} }

// MLP is "input" FP32 [batch,4] -> MatMul W1[4,8] + B1[8] -> Relu -> MatMul W2[8,3] + B2[3] ->
// "output" FP32 [batch,3]. MLPForward computes its output.
func MLP() []byte { return mlpmodel.Build("mlp", mlpDims()) }

// MLPForward is MLP's reference: x holds rows of 4 values, the result rows of 3.
func MLPForward(x []float32) []float32 { return mlpmodel.Forward(mlpDims(), x) }

// Wide is an FP32 MLP for benchmarks: "input" [batch,in] -> three MatMul+Add layers (in->hidden,
// hidden->hidden, hidden->out) with Relu between them -> "output" [batch,out]. Weights are scaled
// by 1/sqrt(fan-in) so outputs stay finite at any size. WideForward computes its output.
func Wide(in, hidden, out int) []byte {
	return mlpmodel.Build("wide", []int{in, hidden, hidden, out})
}

// WideForward is Wide's reference: x holds rows of in values, the result rows of out.
func WideForward(in, hidden, out int, x []float32) []float32 {
	return mlpmodel.Forward([]int{in, hidden, hidden, out}, x)
}

// MultiIO has inputs "x" FP32 [batch,3] and "y" INT64 [batch,3] and four outputs of four types:
// "sum" FP32 = x + float(y), "twice" INT64 = y*2, "greater" BOOL = x > float(y),
// "wide" FP64 = double(x). MultiIOForward computes them.
func MultiIO() []byte {
	dims := []onnxgen.Dim{onnxgen.P(batchDim), {Value: 3}}
	vi := func(name string, t onnxgen.DataType) onnxgen.ValueInfo {
		return onnxgen.ValueInfo{Name: name, ElemType: t, Shape: dims}
	}
	node := func(op string, in []string, out string, attrs ...onnxgen.Attr) onnxgen.Node {
		return onnxgen.Node{OpType: op, Name: out, Inputs: in, Outputs: []string{out}, Attrs: attrs}
	}
	return onnxgen.Marshal(onnxgen.Graph{
		Name: "multi_io",
		Nodes: []onnxgen.Node{
			node("Cast", []string{"y"}, "y_float", onnxgen.IntAttr("to", int64(onnxgen.Float))),
			node("Add", []string{"x", "y_float"}, "sum"),
			node("Mul", []string{"y", "two"}, "twice"),
			node("Greater", []string{"x", "y_float"}, "greater"),
			node("Cast", []string{"x"}, "wide", onnxgen.IntAttr("to", int64(onnxgen.Double))),
		},
		Initializers: []onnxgen.Tensor{onnxgen.Int64Tensor("two", nil, []int64{2})},
		Inputs:       []onnxgen.ValueInfo{vi("x", onnxgen.Float), vi("y", onnxgen.Int64)},
		Outputs: []onnxgen.ValueInfo{
			vi("sum", onnxgen.Float), vi("twice", onnxgen.Int64),
			vi("greater", onnxgen.Bool), vi("wide", onnxgen.Double),
		},
	})
}

// MultiIOForward is MultiIO's reference, element by element; x and y have the same length.
func MultiIOForward(x []float32, y []int64) (sum []float32, twice []int64, greater []bool, wide []float64) {
	sum, twice = make([]float32, len(x)), make([]int64, len(y))
	greater, wide = make([]bool, len(x)), make([]float64, len(x))
	for i := range x {
		yf := float32(y[i])
		sum[i] = x[i] + yf
		twice[i] = y[i] * 2
		greater[i] = x[i] > yf
		wide[i] = float64(x[i])
	}
	return sum, twice, greater, wide
}

// Strings has input "text" STRING [n] and outputs "upper" STRING [n] (StringNormalizer with
// case_change_action UPPER) and "same" STRING [n] (Identity). StringsForward computes them.
//
// The normalizer runs in the "C" locale: ORT's default, en_US.UTF-8, is missing on minimal
// machines and containers, where ORT then refuses to load the model. In "C" only ASCII letters
// change case.
func Strings() []byte {
	vi := func(name string) onnxgen.ValueInfo {
		return onnxgen.ValueInfo{Name: name, ElemType: onnxgen.String, Shape: []onnxgen.Dim{onnxgen.P(nDim)}}
	}
	upper := onnxgen.Node{
		OpType: "StringNormalizer", Name: "upper", Inputs: []string{"text"}, Outputs: []string{"upper"},
		Attrs: []onnxgen.Attr{
			onnxgen.StringAttr("case_change_action", "UPPER"),
			onnxgen.StringAttr("locale", "C"),
		},
	}
	return onnxgen.Marshal(onnxgen.Graph{
		Name: "strings",
		Nodes: []onnxgen.Node{
			upper,
			{OpType: "Identity", Name: "same", Inputs: []string{"text"}, Outputs: []string{"same"}},
		},
		Inputs:  []onnxgen.ValueInfo{vi("text")},
		Outputs: []onnxgen.ValueInfo{vi("upper"), vi("same")},
	})
}

// StringsForward is Strings' reference: ASCII letters upper-cased (as the "C" locale does),
// everything else unchanged; "same" is a copy of text.
func StringsForward(text []string) (upper, same []string) {
	upper = make([]string, len(text))
	for i, s := range text {
		upper[i] = strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' {
				return r - 'a' + 'A'
			}
			return r
		}, s)
	}
	return upper, append([]string(nil), text...)
}

// onnxType is the ONNX element type of a KServe datatype (BYTES is ONNX STRING).
func onnxType(dt tensor.DataType) (onnxgen.DataType, bool) {
	switch dt {
	case tensor.Bool:
		return onnxgen.Bool, true
	case tensor.Uint8:
		return onnxgen.Uint8, true
	case tensor.Uint16:
		return onnxgen.Uint16, true
	case tensor.Uint32:
		return onnxgen.Uint32, true
	case tensor.Uint64:
		return onnxgen.Uint64, true
	case tensor.Int8:
		return onnxgen.Int8, true
	case tensor.Int16:
		return onnxgen.Int16, true
	case tensor.Int32:
		return onnxgen.Int32, true
	case tensor.Int64:
		return onnxgen.Int64, true
	case tensor.FP16:
		return onnxgen.Float16, true
	case tensor.FP32:
		return onnxgen.Float, true
	case tensor.FP64:
		return onnxgen.Double, true
	case tensor.BF16:
		return onnxgen.BFloat16, true
	case tensor.Bytes:
		return onnxgen.String, true
	}
	return 0, false
}

// IdentityDataTypes lists the datatypes Identity accepts, in a fixed order.
func IdentityDataTypes() []tensor.DataType {
	return []tensor.DataType{
		tensor.Bool, tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64,
		tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64,
		tensor.FP16, tensor.FP32, tensor.FP64, tensor.BF16, tensor.Bytes,
	}
}

// Identity is "in" [batch,n] -> Identity -> "out" [batch,n] of datatype dt (a KServe name such
// as "FP32"; BYTES is ONNX STRING). Its reference is the input itself.
func Identity(dt tensor.DataType) ([]byte, error) {
	et, ok := onnxType(dt)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnsupportedDataType, dt)
	}
	shape := []onnxgen.Dim{onnxgen.P(batchDim), onnxgen.P(nDim)}
	return onnxgen.Marshal(onnxgen.Graph{
		Name:    "identity_" + strings.ToLower(string(dt)),
		Nodes:   []onnxgen.Node{{OpType: "Identity", Name: "identity", Inputs: []string{"in"}, Outputs: []string{"out"}}},
		Inputs:  []onnxgen.ValueInfo{{Name: "in", ElemType: et, Shape: shape}},
		Outputs: []onnxgen.ValueInfo{{Name: "out", ElemType: et, Shape: shape}},
	}), nil
}

// Scalar has inputs "scale" FP32 rank 0 (shape []) and "v" FP32 [n], and outputs "scaled" FP32
// [n] = v*scale and "next" FP32 rank 0 = scale+1. ScalarForward computes them.
func Scalar() []byte {
	scalar := func(name string) onnxgen.ValueInfo {
		return onnxgen.ValueInfo{Name: name, ElemType: onnxgen.Float}
	}
	vector := func(name string) onnxgen.ValueInfo {
		return onnxgen.ValueInfo{Name: name, ElemType: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.P(nDim)}}
	}
	return onnxgen.Marshal(onnxgen.Graph{
		Name: "scalar",
		Nodes: []onnxgen.Node{
			{OpType: "Mul", Name: "scaled", Inputs: []string{"v", "scale"}, Outputs: []string{"scaled"}},
			{OpType: "Add", Name: "next", Inputs: []string{"scale", "one"}, Outputs: []string{"next"}},
		},
		Initializers: []onnxgen.Tensor{onnxgen.FloatTensor("one", nil, []float32{1})},
		Inputs:       []onnxgen.ValueInfo{scalar("scale"), vector("v")},
		Outputs:      []onnxgen.ValueInfo{vector("scaled"), scalar("next")},
	})
}

// ScalarForward is Scalar's reference.
func ScalarForward(scale float32, v []float32) (scaled []float32, next float32) {
	scaled = make([]float32, len(v))
	for i, x := range v {
		scaled[i] = x * scale
	}
	return scaled, scale + 1
}

// AddConst returns a model whose output is its input plus c: "input" FP32 [batch,4] →
// "output" FP32 [batch,4]. Each generation of a model in the reload tests adds its own c, so a
// response tells which generation served it.
func AddConst(c float32) []byte {
	dims := []onnxgen.Dim{onnxgen.P(batchDim), {Value: 4}}
	return onnxgen.Marshal(onnxgen.Graph{
		Name:         "add_const",
		Nodes:        []onnxgen.Node{{OpType: "Add", Name: "add", Inputs: []string{"input", "c"}, Outputs: []string{"output"}}},
		Initializers: []onnxgen.Tensor{onnxgen.FloatTensor("c", nil, []float32{c})},
		Inputs:       []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float, Shape: dims}},
		Outputs:      []onnxgen.ValueInfo{{Name: "output", ElemType: onnxgen.Float, Shape: dims}},
	})
}
