package testmodels

import (
	"encoding/binary"
	"math"
	"strconv"

	"github.com/inferd/inferd/internal/onnxgen"
)

// Hostile models: each is a few hundred bytes with the signature of an ordinary batchable model
// ("input" FP32 [batch,4] -> "output" FP32 [batch,4], like AddConst), and each attacks the
// process that runs it in one way an operator's dropped file or a client's request could. They
// exist to prove that inferd contains them (the hostile e2e suite); hostile_test.go proves on
// raw ONNX Runtime 1.29, in a child process under a small RLIMIT_DATA, that each really does what
// its comment claims.
//
// What ORT 1.29 survives (checked while writing these): integer Div by zero (its Div kernel
// checks), external data outside the model's folder (absolute, "..", or a symlink: refused at
// load), a protobuf length larger than the file and nesting deeper than protobuf's recursion
// limit (parse errors), shape products that overflow 64 bits (SafeInt). What kills it: kernels
// that divide by a dimension of an empty intermediate tensor (LpNormalization over a [batch,0]
// tensor, TopK along axis 1 of a [0,4] one: SIGFPE), LSTM and GRU on an empty batch (SIGABRT);
// and without a memory bound any tensor sized by the graph or the request.

// balloonRowsPerBatchRow is how many rows of 4 floats Balloon allocates per row of its input:
// 1<<29 rows of 4 floats = 8 GiB for a batch of 1.
const balloonRowsPerBatchRow = 1 << 29

// Balloon builds an intermediate tensor of batch * 2^31 floats (8 GiB per row of the batch) with
// ConstantOfShape of a shape computed from the input's shape, so that it cannot be folded when
// the session is created: the first run (warmup) allocates without bound. Its output is input +
// the sum of that tensor (zeros), so a run that succeeded would return its input.
func Balloon() []byte { return balloon(balloonRowsPerBatchRow) }

// BalloonOf is Balloon sized by the caller: perRow bytes (rounded down to a multiple of 16) per
// row of its input instead of 8 GiB, so that a test can place it between two bounds, above a
// worker's own limit for a cgroup's to stop it, or the other way round.
func BalloonOf(perRow int64) []byte { return balloon(perRow / 16) }

// balloon is Balloon with rows rows of 4 floats per input row; small values prove the graph
// itself is sound.
func balloon(rows int64) []byte {
	return hostileGraph("balloon", []onnxgen.Node{
		node("Shape", "shape", "input"),
		node("Mul", "big_shape", "shape", "factor"),
		node("ConstantOfShape", "big", "big_shape"),
		node("ReduceSum", "total", "big", attrKeepDims(0)),
		node("Add", "output", "input", "total"),
	}, onnxgen.Int64Tensor("factor", []int64{2}, []int64{rows, 1}))
}

// DivideByZero is row-wise L2 normalization (LpNormalization) of the input's first k columns,
// with k = 0: ONNX Runtime 1.29's LpNormalization divides by the normalized axis' length, an
// integer division by zero on the empty [batch,0] intermediate tensor, which raises SIGFPE and
// kills the process at the first run (warmup), whatever the input. (ORT's Div kernel checks
// integer division by zero itself; its shape arithmetic does not.)
func DivideByZero() []byte {
	return hostileGraph("divide_by_zero", []onnxgen.Node{
		node("Slice", "first_k", "input", "zero1", "zero1", "one1"),
		node("LpNormalization", "output", "first_k", onnxgen.IntAttr("axis", 1)),
	}, onnxgen.Int64Tensor("zero1", []int64{1}, []int64{0}), onnxgen.Int64Tensor("one1", []int64{1}, []int64{1}))
}

// DivideByZeroTrigger is the input value at which DivideByZeroFromInput divides by zero.
const DivideByZeroTrigger = 7

// DivideByZeroFromInput is row-wise L2 normalization of the input (DivideByZeroFromInputForward)
// computed on its first k columns, where k is 4 unless some element of the batch equals
// DivideByZeroTrigger, and then 0: it loads, warms up (on zeros) and answers ordinary requests,
// and the first request holding the trigger value raises SIGFPE in the process that runs it (as
// in DivideByZero).
func DivideByZeroFromInput() []byte {
	return hostileGraph("divide_by_zero_from_input", []onnxgen.Node{
		// k = 4 * ceil(min(min |x - trigger|, 1)): 4, or 0 exactly when x holds the trigger.
		node("Sub", "dist", "input", "trigger"),
		node("Abs", "absdist", "dist"),
		node("ReduceMin", "mindist", "absdist", attrKeepDims(0)),
		node("Min", "clipped", "mindist", "onef"),
		node("Ceil", "hit", "clipped"),
		node("Mul", "kf", "hit", "fourf"),
		node("Cast", "k", "kf", onnxgen.IntAttr("to", int64(onnxgen.Int64))),
		node("Reshape", "k1", "k", "one1"),
		node("Slice", "first_k", "input", "zero1", "k1", "one1"),
		node("LpNormalization", "output", "first_k", onnxgen.IntAttr("axis", 1)),
	},
		onnxgen.FloatTensor("trigger", nil, []float32{DivideByZeroTrigger}),
		onnxgen.FloatTensor("onef", nil, []float32{1}),
		onnxgen.FloatTensor("fourf", nil, []float32{4}),
		onnxgen.Int64Tensor("zero1", []int64{1}, []int64{0}),
		onnxgen.Int64Tensor("one1", []int64{1}, []int64{1}))
}

// DivideByZeroFromInputForward is DivideByZeroFromInput's reference for inputs without the
// trigger value: each row of 4 divided by its L2 norm (rows must not be all zero).
func DivideByZeroFromInputForward(x []float32) []float32 {
	out := make([]float32, len(x))
	for r := 0; r+4 <= len(x); r += 4 {
		var sum float64
		for _, v := range x[r : r+4] {
			sum += float64(v) * float64(v)
		}
		norm := math.Sqrt(sum)
		for i, v := range x[r : r+4] {
			out[r+i] = float32(float64(v) / norm)
		}
	}
	return out
}

// OutputFromInput is "input" FP32 [batch,1] -> "output" FP32 [batch,m] with m = trunc(max |x|)
// + 1, every row repeating its input (Expand to a shape taken from the input's values): the
// size of the answer, and of what the run allocates, is whatever a client asks for. A request
// holding 1e12 asks for 4 TB. OutputFromInputForward computes it.
func OutputFromInput() []byte {
	return onnxgen.Marshal(onnxgen.Graph{
		Name: "output_from_input",
		Nodes: []onnxgen.Node{
			node("Abs", "abs", "input"),
			node("ReduceMax", "max", "abs", attrKeepDims(0)),
			node("Cast", "maxi", "max", onnxgen.IntAttr("to", int64(onnxgen.Int64))),
			node("Add", "width", "maxi", "one"),
			node("Reshape", "width1", "width", "shape1"),
			node("Concat", "out_shape", "one1", "width1", onnxgen.IntAttr("axis", 0)),
			node("Expand", "output", "input", "out_shape"),
		},
		Initializers: []onnxgen.Tensor{
			onnxgen.Int64Tensor("one", nil, []int64{1}),
			onnxgen.Int64Tensor("one1", []int64{1}, []int64{1}),
			onnxgen.Int64Tensor("shape1", []int64{1}, []int64{1}),
		},
		Inputs: []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float,
			Shape: []onnxgen.Dim{onnxgen.P(batchDim), {Value: 1}}}},
		Outputs: []onnxgen.ValueInfo{{Name: "output", ElemType: onnxgen.Float,
			Shape: []onnxgen.Dim{onnxgen.P(batchDim), onnxgen.P("width")}}},
	})
}

// OutputFromInputForward is OutputFromInput's reference: x holds one value per row; the result
// has width columns per row.
func OutputFromInputForward(x []float32) (out []float32, width int) {
	var m float32
	for _, v := range x {
		m = max(m, max(v, -v))
	}
	width = int(m) + 1
	out = make([]float32, 0, len(x)*width)
	for _, v := range x {
		for range width {
			out = append(out, v)
		}
	}
	return out, width
}

// AbortOnEmptyBatch runs an LSTM over an empty batch (the input's first 0 rows): ONNX Runtime
// 1.29's LSTM kernel then calls std::terminate, and the process that runs it dies of SIGABRT
// at the first run (warmup). Output = input + the sum of the (empty) LSTM output.
func AbortOnEmptyBatch() []byte {
	return hostileGraph("abort_on_empty_batch", []onnxgen.Node{
		node("Slice", "no_rows", "input", "zero1", "zero1", "zero1"),
		node("Unsqueeze", "seq", "no_rows", "zero1"),
		node("LSTM", "y", "seq", "w", "r", onnxgen.IntAttr("hidden_size", 1)),
		node("ReduceSum", "total", "y", attrKeepDims(0)),
		node("Add", "output", "input", "total"),
	},
		onnxgen.Int64Tensor("zero1", []int64{1}, []int64{0}),
		onnxgen.FloatTensor("w", []int64{1, 4, 4}, make([]float32, 16)),
		onnxgen.FloatTensor("r", []int64{1, 4, 1}, make([]float32, 4)))
}

// BalloonTile is Balloon by Tile: the input repeated 2^28 times along the batch (4 GiB per row
// of the batch), reduced to a sum added to the input.
func BalloonTile() []byte {
	return hostileGraph("balloon_tile", []onnxgen.Node{
		node("Tile", "big", "input", "repeats"),
		node("ReduceSum", "total", "big", attrKeepDims(0)),
		node("Add", "output", "input", "total"),
	}, onnxgen.Int64Tensor("repeats", []int64{2}, []int64{1 << 28, 1}))
}

// BalloonPad is Balloon by Pad: 2^30 rows of zeros padded after the input (16 GiB whatever the
// batch), reduced to a sum added to the input.
func BalloonPad() []byte {
	return hostileGraph("balloon_pad", []onnxgen.Node{
		node("Pad", "big", "input", "pads"),
		node("ReduceSum", "total", "big", attrKeepDims(0)),
		node("Add", "output", "input", "total"),
	}, onnxgen.Int64Tensor("pads", []int64{4}, []int64{0, 0, 1 << 30, 0}))
}

// ShapeOverflow asks ConstantOfShape for batch*2^32 x 2^32 floats, a size that overflows 64
// bits: the run must fail on the size arithmetic, not wrap around to a small buffer.
func ShapeOverflow() []byte {
	return hostileGraph("shape_overflow", []onnxgen.Node{
		node("Shape", "shape", "input"),
		node("Mul", "big_shape", "shape", "factor"),
		node("ConstantOfShape", "big", "big_shape"),
		node("ReduceSum", "total", "big", attrKeepDims(0)),
		node("Add", "output", "input", "total"),
	}, onnxgen.Int64Tensor("factor", []int64{2}, []int64{1 << 32, 1 << 30}))
}

// ExternalData is output = input + w, with the 4 floats of initializer w stored outside the
// model at location (ONNX external data), offset 0, length bytes. Hostile locations: a path
// climbing out of the model's folder ("../../../../etc/passwd"), which would leak a file's bytes
// through the output; an absolute one ("/etc/passwd", "/dev/zero" with a huge length).
func ExternalData(location string, length int64) []byte {
	model := hostileGraph("external_data", []onnxgen.Node{
		node("Add", "output", "input", "w"),
	})
	entry := func(k, v string) []byte { return pbString(pbString(nil, 1, k), 2, v) }
	var w []byte
	w = pbVarint(w, 1, 4)                     // dims
	w = pbVarint(w, 2, uint64(onnxgen.Float)) // data_type
	w = pbString(w, 8, "w")                   // name
	w = pbBytes(w, 13, entry("location", location))
	w = pbBytes(w, 13, entry("offset", "0"))
	w = pbBytes(w, 13, entry("length", strconv.FormatInt(length, 10)))
	w = pbVarint(w, 14, 1) // data_location EXTERNAL
	return withGraphFields(model, pbBytes(nil, 5, w))
}

// ClaimedLength is an ordinary model (AddConst) followed by a second graph field that claims to
// be claimed bytes long and holds a few: a parser that trusts the length allocates it.
func ClaimedLength(claimed uint64) []byte {
	b := AddConst(1)
	b = pbTag(b, 7, 2)
	b = binary.AppendUvarint(b, claimed)
	return append(b, pbString(nil, 2, "truncated")...)
}

// DeepNesting is a model whose output comes from depth If nodes nested in each other's
// then/else branches (protobuf messages nested 3*depth deep): recursion in a parser or in graph
// resolution that is not bounded overflows its stack.
func DeepNesting(depth int) []byte {
	// The innermost branch is Identity(input); every level is If(cond) with the level below as its
	// then branch and Identity(input) as its else branch, so the model grows linearly.
	leaf := func(out string) []byte {
		return subgraph("leaf", pbBytes(nil, 1, nodeProto("Identity", []string{"input"}, out, nil)), out)
	}
	out := "o0"
	branch := leaf(out)
	for i := 1; i <= depth; i++ {
		out = "o" + strconv.Itoa(i)
		attrs := [][]byte{graphAttr("then_branch", branch), graphAttr("else_branch", leaf(out))}
		branch = subgraph("b"+strconv.Itoa(i), pbBytes(nil, 1, nodeProto("If", []string{"cond"}, out, attrs)), out)
	}
	// The top graph: cond, and If(cond) over the deepest branch -> "output".
	model := onnxgen.Marshal(onnxgen.Graph{
		Name:         "deep_nesting",
		Initializers: []onnxgen.Tensor{{Name: "cond", DataType: onnxgen.Bool, Raw: []byte{1}}},
		Inputs:       []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.P(batchDim), {Value: 4}}}},
		Outputs:      []onnxgen.ValueInfo{{Name: "output", ElemType: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.P(batchDim), {Value: 4}}}},
	})
	attrs := [][]byte{graphAttr("then_branch", branch), graphAttr("else_branch", leaf("output"))}
	return withGraphFields(model, pbBytes(nil, 1, nodeProto("If", []string{"cond"}, "output", attrs)))
}

// nodeProto encodes a NodeProto with encoded AttributeProtos attrs.
func nodeProto(op string, in []string, out string, attrs [][]byte) []byte {
	var b []byte
	for _, s := range in {
		b = pbString(b, 1, s)
	}
	b = pbString(b, 2, out)
	b = pbString(b, 3, out)
	b = pbString(b, 4, op)
	for _, a := range attrs {
		b = pbBytes(b, 5, a)
	}
	return b
}

// subgraph encodes a GraphProto named name with the encoded nodes and one FP32 output out.
func subgraph(name string, nodes []byte, out string) []byte {
	typ := pbBytes(nil, 1, pbVarint(nil, 1, uint64(onnxgen.Float))) // TypeProto.tensor_type.elem_type
	b := pbString(append([]byte(nil), nodes...), 2, name)
	return pbBytes(b, 12, pbBytes(pbString(nil, 1, out), 2, typ))
}

// graphAttr encodes a GRAPH AttributeProto.
func graphAttr(name string, g []byte) []byte {
	b := pbString(nil, 1, name)
	b = pbBytes(b, 6, g)
	return pbVarint(b, 20, 5) // type GRAPH
}

// hostileGraph is a graph of nodes with the ordinary signature "input" FP32 [batch,4] ->
// "output" FP32 [batch,4].
func hostileGraph(name string, nodes []onnxgen.Node, inits ...onnxgen.Tensor) []byte {
	dims := []onnxgen.Dim{onnxgen.P(batchDim), {Value: 4}}
	return onnxgen.Marshal(onnxgen.Graph{
		Name:         name,
		Nodes:        nodes,
		Initializers: inits,
		Inputs:       []onnxgen.ValueInfo{{Name: "input", ElemType: onnxgen.Float, Shape: dims}},
		Outputs:      []onnxgen.ValueInfo{{Name: "output", ElemType: onnxgen.Float, Shape: dims}},
	})
}

// node is a node named after its single output.
func node(op, out string, in ...any) onnxgen.Node {
	n := onnxgen.Node{OpType: op, Name: out, Outputs: []string{out}}
	for _, a := range in {
		switch a := a.(type) {
		case string:
			n.Inputs = append(n.Inputs, a)
		case onnxgen.Attr:
			n.Attrs = append(n.Attrs, a)
		}
	}
	return n
}

func attrKeepDims(v int64) onnxgen.Attr { return onnxgen.IntAttr("keepdims", v) }

// Hand-written protobuf for what onnxgen cannot say (external data, graph attributes, lies about
// lengths). Protobuf merges a repeated occurrence of a singular message field into the first,
// so extra GraphProto fields appended to a model as a second ModelProto.graph (field 7) join
// the graph onnxgen wrote.

func pbTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

func pbVarint(b []byte, field int, v uint64) []byte {
	return binary.AppendUvarint(pbTag(b, field, 0), v)
}

func pbBytes(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(pbTag(b, field, 2), uint64(len(v)))
	return append(b, v...)
}

func pbString(b []byte, field int, s string) []byte { return pbBytes(b, field, []byte(s)) }

// withGraphFields returns model with graph (GraphProto fields) merged into its graph.
func withGraphFields(model, graph []byte) []byte {
	return pbBytes(append([]byte(nil), model...), 7, graph)
}
