// Package mlpmodel builds inferd's deterministic dense MLP as ONNX bytes: "input" FP32
// [batch, dims[0]] -> MatMul+Add layers with Relu between them -> "output" FP32
// [batch, dims[last]], and computes its output in plain Go as an independent reference.
//
// It is its own package because the shipped binary needs it (inferd devices opens one on each
// GPU and compares it with the CPU) while the rest of the project's generated models serve only
// tests, benchmarks and the demo repository (internal/testmodels, which builds its MLPs here).
// Weights come from fixed formulas, so the same dims always give the same bytes.
package mlpmodel

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/inferd/inferd/internal/onnxgen"
)

// batchDim is the symbolic batch dimension; ONNX Runtime reports it as -1.
const batchDim = "batch"

// weightPeriod is the period of every weight matrix's row-major elements: a layer has only 17
// distinct weights, which lets a 100 MB model be built by doubling copies instead of element by
// element.
const weightPeriod = 17

// weight is element k (row-major) of layer l's [fanIn, fanOut] matrix: an integer in [-8, 8]
// scaled by 1/(8*sqrt(fanIn)), so no product of layers grows without bound.
func weight(l, fanIn, k int) float32 {
	v := (k*7+l*13)%weightPeriod - 8
	return float32(float64(v) / (8 * math.Sqrt(float64(fanIn))))
}

// fillPeriodic repeats s[:period] over all of s.
func fillPeriodic[T any](s []T, period int) {
	for n := period; n < len(s); n *= 2 {
		copy(s[n:], s[:n])
	}
}

// bias is element j of layer l's bias vector, in [-0.5, 0.5].
func bias(l, j int) float32 { return float32((j*5+l*3)%11-5) / 10 }

// Build returns the model named name whose layer widths, from input to output, are dims (at
// least two). Weights go straight into raw bytes so large models build quickly.
func Build(name string, dims []int) []byte {
	g := onnxgen.Graph{
		Name:    name,
		Inputs:  []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.P(batchDim), {Value: int64(dims[0])}}}},
		Outputs: []onnxgen.ValueInfo{{Name: "output", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.P(batchDim), {Value: int64(dims[len(dims)-1])}}}},
	}
	prev := "input"
	for l := 1; l < len(dims); l++ {
		fanIn, fanOut := dims[l-1], dims[l]
		w, b := fmt.Sprintf("W%d", l), fmt.Sprintf("B%d", l)
		raw := make([]byte, 4*fanIn*fanOut)
		for k := range min(weightPeriod, fanIn*fanOut) {
			binary.LittleEndian.PutUint32(raw[4*k:], math.Float32bits(weight(l, fanIn, k)))
		}
		fillPeriodic(raw, 4*weightPeriod)
		bs := make([]float32, fanOut)
		for j := range bs {
			bs[j] = bias(l, j)
		}
		g.Initializers = append(g.Initializers,
			onnxgen.Tensor{Name: w, DataType: onnxgen.Float, Dims: []int64{int64(fanIn), int64(fanOut)}, Raw: raw},
			onnxgen.FloatTensor(b, []int64{int64(fanOut)}, bs))

		mm, sum := fmt.Sprintf("matmul%d", l), fmt.Sprintf("add%d", l)
		last := l == len(dims)-1
		if last {
			sum = "output"
		}
		g.Nodes = append(g.Nodes,
			onnxgen.Node{OpType: "MatMul", Name: mm, Inputs: []string{prev, w}, Outputs: []string{mm}},
			onnxgen.Node{OpType: "Add", Name: sum, Inputs: []string{mm, b}, Outputs: []string{sum}})
		prev = sum
		if !last {
			relu := fmt.Sprintf("relu%d", l)
			g.Nodes = append(g.Nodes, onnxgen.Node{OpType: "Relu", Name: relu, Inputs: []string{sum}, Outputs: []string{relu}})
			prev = relu
		}
	}
	return onnxgen.Marshal(g)
}

// Forward computes Build(_, dims) on the rows of x (each dims[0] values) with plain loops.
func Forward(dims []int, x []float32) []float32 {
	rows := len(x) / dims[0]
	act := x
	for l := 1; l < len(dims); l++ {
		fanIn, fanOut := dims[l-1], dims[l]
		w := make([]float32, fanIn*fanOut)
		for k := range w {
			w[k] = weight(l, fanIn, k)
		}
		next := make([]float32, rows*fanOut)
		for r := range rows {
			out := next[r*fanOut : (r+1)*fanOut]
			for i, a := range act[r*fanIn : (r+1)*fanIn] {
				for j, wij := range w[i*fanOut : (i+1)*fanOut] {
					out[j] += a * wij
				}
			}
			for j := range out {
				out[j] += bias(l, j)
				if l < len(dims)-1 && out[j] < 0 {
					out[j] = 0
				}
			}
		}
		act = next
	}
	return act
}
