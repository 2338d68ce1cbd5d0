package ort

import (
	"bytes"
	"fmt"
	"unsafe"

	onnx "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/tensor"
)

// inputValue wraps a checked, non-empty tensor as an ORT value. Fixed-size data is shared with
// ORT, not copied: ORT reads t.Data during the run, so the caller keeps t reachable until the
// run returns (the value also holds the slice until it is destroyed; Go's heap does not move).
func inputValue(t *tensor.Tensor) (onnx.Value, error) {
	if t.DataType == tensor.Bytes {
		return stringValue(t)
	}
	if len(t.Shape) == 0 {
		return scalarValue(t.DataType, t.Data)
	}
	et, ok := ortTypes[t.DataType]
	if !ok {
		return nil, fmt.Errorf("%w: input %q: datatype %s", ErrUnsupportedInput, t.Name, t.DataType)
	}
	data := t.Data
	if t.DataType == tensor.Bool && !zeroOrOne(data) {
		data = normalizedBools(data)
	} else if uintptr(unsafe.Pointer(unsafe.SliceData(data)))%uintptr(t.DataType.Size()) != 0 {
		// A slice of a request body may start anywhere; C++ kernels expect aligned elements.
		data = append(alignedBytes(len(data))[:0], data...)
	}
	v, err := onnx.NewCustomDataTensor(onnx.Shape(t.Shape), data, onnx.TensorElementDataType(et))
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", t.Name, err)
	}
	return v, nil
}

// stringValue copies a BYTES tensor into an ORT string tensor. The binding passes elements as C
// strings, which end at the first NUL: such elements are refused rather than cut short.
func stringValue(t *tensor.Tensor) (onnx.Value, error) {
	strs := make([]string, len(t.Strings))
	for i, s := range t.Strings {
		if bytes.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("%w: input %q element %d contains a NUL byte", ErrUnsupportedInput, t.Name, i)
		}
		strs[i] = string(s)
	}
	v, err := onnx.NewStringTensor(onnx.Shape(t.Shape))
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", t.Name, err)
	}
	if err := v.SetContents(strs); err != nil {
		v.Destroy()
		return nil, fmt.Errorf("input %q: %w", t.Name, err)
	}
	return v, nil
}

// scalarValue makes a rank-0 input: the binding's Tensor refuses an empty shape.
func scalarValue(dt tensor.DataType, b []byte) (onnx.Value, error) {
	switch dt {
	case tensor.FP32:
		return scalarOf[float32](b)
	case tensor.FP64:
		return scalarOf[float64](b)
	case tensor.Int8:
		return scalarOf[int8](b)
	case tensor.Int16:
		return scalarOf[int16](b)
	case tensor.Int32:
		return scalarOf[int32](b)
	case tensor.Int64:
		return scalarOf[int64](b)
	case tensor.Uint8:
		return scalarOf[uint8](b)
	case tensor.Uint16:
		return scalarOf[uint16](b)
	case tensor.Uint32:
		return scalarOf[uint32](b)
	case tensor.Uint64:
		return scalarOf[uint64](b)
	case tensor.Bool:
		return scalarOf[bool](normalizedBools(b))
	}
	return nil, fmt.Errorf("%w: rank-0 %s", ErrUnsupportedInput, dt)
}

func scalarOf[T onnx.TensorData](b []byte) (onnx.Value, error) {
	var v T
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v)), b)
	s, err := onnx.NewScalar(v)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// preallocate returns the output value Run must not allocate itself, or nil for the others
// (whose shape is only known after the run): rank-0 outputs, which the binding cannot build,
// and FP16/BF16 outputs, which it truncates. plan gives the latter's shape from the inputs'.
// inspect refused the cases neither can handle.
func preallocate(spec tensor.Spec, plan []dimSource, inputs []*tensor.Tensor) (onnx.Value, error) {
	if len(spec.Shape) == 0 {
		switch spec.DataType {
		case tensor.FP32:
			return emptyScalar[float32]()
		case tensor.FP64:
			return emptyScalar[float64]()
		case tensor.Int8:
			return emptyScalar[int8]()
		case tensor.Int16:
			return emptyScalar[int16]()
		case tensor.Int32:
			return emptyScalar[int32]()
		case tensor.Int64:
			return emptyScalar[int64]()
		case tensor.Uint8:
			return emptyScalar[uint8]()
		case tensor.Uint16:
			return emptyScalar[uint16]()
		case tensor.Uint32:
			return emptyScalar[uint32]()
		case tensor.Uint64:
			return emptyScalar[uint64]()
		case tensor.Bool:
			return emptyScalar[bool]()
		}
		return nil, fmt.Errorf("rank-0 %s is not supported", spec.DataType)
	}
	if plan == nil {
		return nil, nil
	}
	shape := make([]int64, len(plan))
	for i, src := range plan {
		shape[i] = src.size
		if src.input >= 0 {
			shape[i] = inputs[src.input].Shape[src.dim]
		}
	}
	n, err := tensor.Elements(shape)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("cannot pre-allocate %s %s", spec.DataType, tensor.FormatShape(shape))
	}
	v, err := onnx.NewCustomDataTensor(onnx.Shape(shape), alignedBytes(int(n)*spec.DataType.Size()),
		onnx.TensorElementDataType(ortTypes[spec.DataType]))
	if err != nil {
		return nil, err
	}
	return v, nil
}

func emptyScalar[T onnx.TensorData]() (onnx.Value, error) {
	s, err := onnx.NewEmptyScalar[T]()
	if err != nil {
		return nil, err
	}
	return s, nil
}

// outputTensor converts an output value into a tensor in Go memory. The binding has already
// copied the data of values it allocated into Go slices, which are reinterpreted as bytes here
// rather than copied again; they stay valid after the value is destroyed.
func outputTensor(spec tensor.Spec, v onnx.Value) (tensor.Tensor, error) {
	t := tensor.Tensor{Name: spec.Name, DataType: spec.DataType}
	if v == nil {
		return t, fmt.Errorf("output %q was not produced", spec.Name)
	}
	if got, ok := elementTypes[onnx.TensorElementDataType(v.DataType())]; !ok || got != spec.DataType {
		return t, fmt.Errorf("output %q: ORT produced element type %s, model declares %s",
			spec.Name, onnx.TensorElementDataType(v.DataType()), spec.DataType)
	}
	t.Shape = []int64(v.GetShape())
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	switch v := v.(type) {
	case *onnx.StringTensor:
		strs, err := v.GetContents()
		if err != nil {
			return t, fmt.Errorf("output %q: %w", spec.Name, err)
		}
		t.Strings = make([][]byte, len(strs))
		for i, s := range strs {
			t.Strings[i] = []byte(s)
		}
		return t, nil
	case *onnx.CustomDataTensor:
		t.Data = v.GetData()
		return t, nil
	}
	data, ok := numericBytes(v)
	if !ok {
		return t, fmt.Errorf("output %q: unexpected value %T", spec.Name, v)
	}
	t.Data = data
	return t, nil
}

// numericBytes returns the data of the binding's typed tensors and scalars as bytes.
func numericBytes(v onnx.Value) ([]byte, bool) {
	switch v := v.(type) {
	case *onnx.Tensor[float32]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[float64]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[int8]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[int16]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[int32]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[int64]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[uint8]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[uint16]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[uint32]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[uint64]:
		return sliceBytes(v.GetData()), true
	case *onnx.Tensor[bool]:
		return sliceBytes(v.GetData()), true
	case *onnx.Scalar[float32]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[float64]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[int8]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[int16]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[int32]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[int64]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[uint8]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[uint16]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[uint32]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[uint64]:
		return valueBytes(v.GetData()), true
	case *onnx.Scalar[bool]:
		return valueBytes(v.GetData()), true
	}
	return nil, false
}

// sliceBytes views a slice of fixed-size elements as its little-endian bytes (the machine is
// little-endian: New checks).
func sliceBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(zero)))
}

func valueBytes[T any](v T) []byte {
	return append([]byte(nil), sliceBytes([]T{v})...)
}

// alignedBytes returns n zero bytes whose first byte is 8-byte aligned, enough for every
// fixed-size element type.
func alignedBytes(n int) []byte {
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
}

func zeroOrOne(b []byte) bool {
	for _, x := range b {
		if x > 1 {
			return false
		}
	}
	return true
}

// normalizedBools copies BOOL bytes as 0 or 1, the only values a C++ bool may hold.
func normalizedBools(b []byte) []byte {
	out := alignedBytes(len(b))
	for i, x := range b {
		if x != 0 {
			out[i] = 1
		}
	}
	return out
}
