package ort

import (
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

// Inspect reads the signature of the model at path with a throwaway, unoptimized session. A
// missing, unreadable or corrupt file, an input or output that is not a tensor, or one this
// engine cannot carry (see the package doc) is an error wrapping engine.ErrInvalidModel.
func (r *Runtime) Inspect(path string) (engine.Signature, error) {
	if err := r.hold(); err != nil {
		return engine.Signature{}, err
	}
	defer releaseEnv()
	sig, _, err := inspect(path)
	return sig, err
}

// modelIO is what inspect learns beyond the signature: the ORT names in session order.
type modelIO struct {
	inputNames, outputNames []string
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
	static := true
	for i, d := range info.Dimensions {
		if d < 0 {
			d, static = -1, false
		}
		shape[i] = d
	}
	spec := tensor.Spec{Name: info.Name, DataType: dt, Shape: shape}
	noGoType := dt == tensor.FP16 || dt == tensor.BF16 || dt == tensor.Bytes
	switch {
	case len(shape) == 0 && noGoType:
		return tensor.Spec{}, fmt.Errorf("%s %q: rank-0 %s is not supported by onnxruntime_go", kind, info.Name, dt)
	case !input && !static && (dt == tensor.FP16 || dt == tensor.BF16):
		return tensor.Spec{}, fmt.Errorf("output %q: %s with dynamic shape %s is not supported by onnxruntime_go "+
			"(it truncates outputs it allocates for 16-bit floats)", info.Name, dt, tensor.FormatShape(shape))
	}
	return spec, nil
}
