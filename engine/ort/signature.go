package ort

import (
	"context"
	"fmt"
	"os"

	onnx "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// elementTypes maps ORT element types to the protocol's datatypes; anything else (complex,
// float8, int4) is refused.
var elementTypes = map[onnx.TensorElementDataType]tensor.DataType{
	onnx.TensorElementDataTypeFloat:    tensor.FP32,
	onnx.TensorElementDataTypeDouble:   tensor.FP64,
	onnx.TensorElementDataTypeFloat16:  tensor.FP16,
	onnx.TensorElementDataTypeBFloat16: tensor.BF16,
	onnx.TensorElementDataTypeString:   tensor.Bytes,
	onnx.TensorElementDataTypeBool:     tensor.Bool,
	onnx.TensorElementDataTypeInt8:     tensor.Int8,
	onnx.TensorElementDataTypeInt16:    tensor.Int16,
	onnx.TensorElementDataTypeInt32:    tensor.Int32,
	onnx.TensorElementDataTypeInt64:    tensor.Int64,
	onnx.TensorElementDataTypeUint8:    tensor.Uint8,
	onnx.TensorElementDataTypeUint16:   tensor.Uint16,
	onnx.TensorElementDataTypeUint32:   tensor.Uint32,
	onnx.TensorElementDataTypeUint64:   tensor.Uint64,
}

// ortTypes is elementTypes inverted.
var ortTypes = func() map[tensor.DataType]onnx.TensorElementDataType {
	m := make(map[tensor.DataType]onnx.TensorElementDataType, len(elementTypes))
	for o, d := range elementTypes {
		m[d] = o
	}
	return m
}()

// Inspect reads the signature of the model at path with a throwaway, unoptimized session (once
// per file: Open of the same file reuses it, see inspected.go). A
// missing, unreadable or corrupt file, an input or output that is not a tensor, or one this
// engine cannot carry (see the package doc) is an error wrapping engine.ErrInvalidModel.
func (r *Runtime) Inspect(_ context.Context, path string) (engine.Signature, error) {
	if err := r.hold(); err != nil {
		return engine.Signature{}, err
	}
	defer releaseEnv()
	sig, _, err := r.inspected.get(path)
	return sig, err
}

// modelIO is what inspect learns beyond the signature: the ORT names in session order, and for
// each output whose shape can be known before a run, where each dimension comes from (nil
// otherwise; see outputPlans).
type modelIO struct {
	inputNames, outputNames []string
	outputShapes            [][]dimSource
}

// dimSource is one dimension of a pre-allocated output: size when input < 0, else the size of
// dimension dim of input number input (in session order).
type dimSource struct {
	size       int64
	input, dim int
}

func inspect(path string) (engine.Signature, modelIO, error) {
	if st, err := os.Stat(path); err != nil {
		return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %w", engine.ErrInvalidModel, err)
	} else if !st.Mode().IsRegular() {
		return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %s is not a regular file", engine.ErrInvalidModel, path)
	}
	opts, err := onnx.NewSessionOptions()
	if err != nil {
		return engine.Signature{}, modelIO{}, fmt.Errorf("ort: session options: %w", err)
	}
	defer opts.Destroy()
	// Only the graph's declarations are read: skip the optimizer to load faster.
	if err := opts.SetGraphOptimizationLevel(onnx.GraphOptimizationLevelDisableAll); err != nil {
		return engine.Signature{}, modelIO{}, fmt.Errorf("ort: session options: %w", err)
	}
	ins, outs, err := onnx.GetInputOutputInfoWithOptions(path, opts)
	if err != nil {
		return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %s: %w", engine.ErrInvalidModel, path, err)
	}
	var sig engine.Signature
	var io modelIO
	for _, in := range ins {
		spec, err := specOf(in, true)
		if err != nil {
			return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %s: %w", engine.ErrInvalidModel, path, err)
		}
		sig.Inputs = append(sig.Inputs, spec)
		io.inputNames = append(io.inputNames, in.Name)
	}
	for _, out := range outs {
		spec, err := specOf(out, false)
		if err != nil {
			return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %s: %w", engine.ErrInvalidModel, path, err)
		}
		sig.Outputs = append(sig.Outputs, spec)
		io.outputNames = append(io.outputNames, out.Name)
	}
	if io.outputShapes, err = outputPlans(path, sig); err != nil {
		return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %s: %w", engine.ErrInvalidModel, path, err)
	}
	if len(sig.Inputs) == 0 || len(sig.Outputs) == 0 {
		return engine.Signature{}, modelIO{}, fmt.Errorf("%w: %s: a model needs at least one input and one output",
			engine.ErrInvalidModel, path)
	}
	return sig, io, nil
}

// specOf converts one ORT input or output description, refusing what Run could not carry.
func specOf(info onnx.InputOutputInfo, input bool) (tensor.Spec, error) {
	kind := "output"
	if input {
		kind = "input"
	}
	if info.OrtValueType != onnx.ONNXTypeTensor {
		return tensor.Spec{}, fmt.Errorf("%s %q is a %s, only dense tensors are supported",
			kind, info.Name, onnx.ONNXType(info.OrtValueType))
	}
	dt, ok := elementTypes[info.DataType]
	if !ok {
		return tensor.Spec{}, fmt.Errorf("%s %q has unsupported element type %s", kind, info.Name, info.DataType)
	}
	shape := make([]int64, len(info.Dimensions))
	for i, d := range info.Dimensions {
		shape[i] = max(d, -1)
	}
	spec := tensor.Spec{Name: info.Name, DataType: dt, Shape: shape}
	noGoType := dt == tensor.FP16 || dt == tensor.BF16 || dt == tensor.Bytes
	switch {
	case len(shape) == 0 && noGoType:
		return tensor.Spec{}, fmt.Errorf("%s %q: rank-0 %s is not supported by onnxruntime_go", kind, info.Name, dt)
	}
	return spec, nil
}

// outputPlans plans the shapes of outputs before the run, so that Run can pre-allocate them: a
// fixed dimension is taken as declared, a symbolic one ("batch") from the input dimension of
// the same name. FP16 and BF16 outputs need a plan, because onnxruntime_go truncates the ones
// it allocates: one with a dimension that no input names cannot be served. Every other
// fixed-size output of rank one or more gets a plan where one can be made (nil where not: ORT
// allocates it), so that ORT writes it where the caller wants it rather than into memory the
// binding then copies.
func outputPlans(path string, sig engine.Signature) ([][]dimSource, error) {
	plans := make([][]dimSource, len(sig.Outputs))
	var gd *graphDims
	var gdErr error
outputs:
	for i, out := range sig.Outputs {
		if out.DataType == tensor.Bytes || len(out.Shape) == 0 {
			continue
		}
		half := out.DataType == tensor.FP16 || out.DataType == tensor.BF16
		plan := make([]dimSource, len(out.Shape))
		for d, size := range out.Shape {
			plan[d] = dimSource{size: size, input: -1}
			if size >= 0 {
				continue
			}
			if gd == nil && gdErr == nil {
				g, err := readGraphDims(path)
				gd, gdErr = &g, err
			}
			if gdErr != nil {
				if half {
					return nil, fmt.Errorf("reading dimension names: %w", gdErr)
				}
				continue outputs
			}
			src, ok := namedInputDim(sig, *gd, gd.outputs[out.Name], d)
			if !ok {
				if half {
					return nil, fmt.Errorf("output %q: %s with dimension %d of %s not named after an input dimension "+
						"is not supported by onnxruntime_go (it truncates 16-bit float outputs it allocates)",
						out.Name, out.DataType, d, tensor.FormatShape(out.Shape))
				}
				continue outputs
			}
			plan[d] = src
		}
		plans[i] = plan
	}
	return plans, nil
}

// namedInputDim finds the input dimension named like dimension d of an output whose dimension
// names are names.
func namedInputDim(sig engine.Signature, gd graphDims, names []string, d int) (dimSource, bool) {
	if d >= len(names) || names[d] == "" {
		return dimSource{}, false
	}
	for i, in := range sig.Inputs {
		inNames := gd.inputs[in.Name]
		if len(inNames) != len(in.Shape) {
			continue
		}
		for j, name := range inNames {
			if name == names[d] && in.Shape[j] < 0 {
				return dimSource{input: i, dim: j}, true
			}
		}
	}
	return dimSource{}, false
}
