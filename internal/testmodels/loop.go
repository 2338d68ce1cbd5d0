package testmodels

import "github.com/inferd/inferd/internal/onnxgen"

// EndlessTrips is the trip count of Endless: at any speed ONNX Runtime can run a loop
// iteration, more than a day of work, so the run only ends when it is stopped.
const EndlessTrips = int64(1) << 40

// Endless is "input" FP32 [batch,4] -> Loop of EndlessTrips iterations, each adding 1 ->
// "output" FP32 [batch,4]: a model whose run never finishes by itself, for the tests of run
// deadlines and cancellation. Its signature is an ordinary batchable one.
func Endless() []byte {
	return loopModel("endless", []onnxgen.ValueInfo{floatRows("input")}, nil,
		[]onnxgen.Tensor{onnxgen.Int64Tensor("trips", nil, []int64{EndlessTrips})})
}

// Steered is "input" FP32 [batch,4] and "n" INT64 [batch] -> Loop of max(n) iterations, each
// adding 1 -> "output" FP32 [batch,4] = input + max(n): a request chooses how long its run
// takes. A batch runs as long as its largest n asks, and every row gets that many additions.
// SteeredForward computes its output.
func Steered() []byte {
	n := onnxgen.ValueInfo{Name: "n", ElemType: onnxgen.Int64, Shape: []onnxgen.Dim{onnxgen.P(batchDim)}}
	reduce := onnxgen.Node{
		OpType: "ReduceMax", Name: "trips", Inputs: []string{"n"}, Outputs: []string{"trips"},
		Attrs: []onnxgen.Attr{onnxgen.IntAttr("keepdims", 0)},
	}
	return loopModel("steered", []onnxgen.ValueInfo{floatRows("input"), n}, []onnxgen.Node{reduce}, nil)
}

// SteeredForward is Steered's reference: x plus the largest n, for every element.
func SteeredForward(x []float32, n []int64) []float32 {
	var trips int64
	for _, v := range n {
		trips = max(trips, v)
	}
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v + float32(trips)
	}
	return out
}

func floatRows(name string) onnxgen.ValueInfo {
	return onnxgen.ValueInfo{Name: name, ElemType: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.P(batchDim), {Value: 4}}}
}

// loopModel is a graph whose "output" is "input" after a Loop of "trips" iterations (a scalar
// INT64 made by pre or given in inits), each adding 1.
func loopModel(name string, inputs []onnxgen.ValueInfo, pre []onnxgen.Node, inits []onnxgen.Tensor) []byte {
	scalar := func(name string, t onnxgen.DataType) onnxgen.ValueInfo {
		return onnxgen.ValueInfo{Name: name, ElemType: t}
	}
	body := onnxgen.Graph{
		Name: name + "_body",
		Nodes: []onnxgen.Node{
			{OpType: "Identity", Name: "keep_going", Inputs: []string{"cond_in"}, Outputs: []string{"cond_out"}},
			{OpType: "Add", Name: "step", Inputs: []string{"x_in", "one"}, Outputs: []string{"x_out"}},
		},
		Initializers: []onnxgen.Tensor{onnxgen.FloatTensor("one", nil, []float32{1})},
		Inputs:       []onnxgen.ValueInfo{scalar("iter", onnxgen.Int64), scalar("cond_in", onnxgen.Bool), floatRows("x_in")},
		Outputs:      []onnxgen.ValueInfo{scalar("cond_out", onnxgen.Bool), floatRows("x_out")},
	}
	loop := onnxgen.Node{
		OpType: "Loop", Name: "loop", Inputs: []string{"trips", "cond", "input"}, Outputs: []string{"output"},
		Attrs: []onnxgen.Attr{onnxgen.GraphAttr("body", body)},
	}
	cond := onnxgen.Tensor{Name: "cond", DataType: onnxgen.Bool, Raw: []byte{1}}
	return onnxgen.Marshal(onnxgen.Graph{
		Name:         name,
		Nodes:        append(pre, loop),
		Initializers: append(inits, cond),
		Inputs:       inputs,
		Outputs:      []onnxgen.ValueInfo{floatRows("output")},
	})
}
