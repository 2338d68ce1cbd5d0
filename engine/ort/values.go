package ort

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	onnx "github.com/yalue/onnxruntime_go"

	"github.com/inferd/inferd/tensor"
)

// inputValue wraps a checked, non-empty tensor as an ORT value. Fixed-size data is shared with
// ORT, not copied: ORT reads t.Data during the run, so the caller keeps t reachable until the
// run returns (the value also holds the slice until it is destroyed; Go's heap does not move).
//
// copies counts the inputs whose data had to be copied first (misaligned, or BOOL bytes other
// than 0 and 1): a request body read by kservehttp has none, and a test holds it to that.
func inputValue(t *tensor.Tensor, copies *atomic.Uint64) (onnx.Value, error) {
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
		copies.Add(1)
	} else if uintptr(unsafe.Pointer(unsafe.SliceData(data)))%uintptr(t.DataType.Size()) != 0 {
		// C++ kernels expect aligned elements, and a slice of a body read some other way than
		// kservehttp's may start anywhere.
		data = append(alignedBytes(len(data))[:0], data...)
		copies.Add(1)
	}
	v, err := onnx.NewCustomDataTensor(onnx.Shape(t.Shape), data, onnx.TensorElementDataType(et))
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", t.Name, err)
	}
	return v, nil
}

// stringValue copies a BYTES tensor into an ORT string tensor. The binding passes elements as C
// strings, which end at the first NUL: models.Version.CheckRequest refuses such elements, and
// one that reached here would be cut short, not crash.
func stringValue(t *tensor.Tensor) (onnx.Value, error) {
	strs := make([]string, len(t.Strings))
	for i, s := range t.Strings {
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

// elementKind is what this package does with the binding's Go type for one datatype; kinds
// holds one per fixed-size datatype the binding has a Go type for (not FP16 or BF16).
type elementKind struct {
	scalar      func(b []byte) (onnx.Value, error) // a rank-0 input holding b
	emptyScalar func() (onnx.Value, error)         // a rank-0 output to fill
	bytes       func(v onnx.Value) ([]byte, bool)  // the data of a Tensor or Scalar the binding made
}

func kindOf[T onnx.TensorData]() elementKind {
	return elementKind{scalar: scalarOf[T], emptyScalar: emptyScalar[T], bytes: valueData[T]}
}

var kinds = map[tensor.DataType]elementKind{
	tensor.FP32: kindOf[float32](), tensor.FP64: kindOf[float64](),
	tensor.Int8: kindOf[int8](), tensor.Int16: kindOf[int16](), tensor.Int32: kindOf[int32](), tensor.Int64: kindOf[int64](),
	tensor.Uint8: kindOf[uint8](), tensor.Uint16: kindOf[uint16](), tensor.Uint32: kindOf[uint32](), tensor.Uint64: kindOf[uint64](),
	tensor.Bool: kindOf[bool](),
}

// scalarValue makes a rank-0 input: the binding's Tensor refuses an empty shape.
func scalarValue(dt tensor.DataType, b []byte) (onnx.Value, error) {
	k, ok := kinds[dt]
	if !ok {
		return nil, fmt.Errorf("%w: rank-0 %s", ErrUnsupportedInput, dt)
	}
	if dt == tensor.Bool {
		b = normalizedBools(b)
	}
	return k.scalar(b)
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

// preallocate returns the output value Run must not allocate itself, or nil for those ORT
// allocates: rank-0 outputs, which the binding cannot build, are empty scalars; FP16/BF16
// outputs, which it truncates, go where plan says (inspect refused the ones without a plan),
// in Go memory; with place, the other planned outputs go into the memory place gives, unless
// it gives none. placed says the value is place's.
func preallocate(spec tensor.Spec, plan []dimSource, inputs []*tensor.Tensor, place func(string, int) []byte) (v onnx.Value, placed bool, err error) {
	if len(spec.Shape) == 0 {
		k, ok := kinds[spec.DataType]
		if !ok {
			return nil, false, fmt.Errorf("rank-0 %s is not supported", spec.DataType)
		}
		v, err := k.emptyScalar()
		return v, false, err
	}
	half := spec.DataType == tensor.FP16 || spec.DataType == tensor.BF16
	if plan == nil || (!half && place == nil) {
		return nil, false, nil
	}
	shape := make([]int64, len(plan))
	for i, src := range plan {
		shape[i] = src.size
		if src.input >= 0 {
			shape[i] = inputs[src.input].Shape[src.dim]
		}
	}
	n, err := tensor.Elements(shape)
	size := int(n) * spec.DataType.Size()
	var data []byte
	switch {
	case err != nil || n == 0 || size/spec.DataType.Size() != int(n):
		if !half {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("cannot pre-allocate %s %s", spec.DataType, tensor.FormatShape(shape))
	case !half:
		if data = place(spec.Name, size); data == nil {
			return nil, false, nil
		}
	default:
		data = alignedBytes(size)
	}
	v, err = onnx.NewCustomDataTensor(onnx.Shape(shape), data, onnx.TensorElementDataType(ortTypes[spec.DataType]))
	if err != nil {
		return nil, false, err
	}
	return v, !half, nil
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
	k, ok := kinds[spec.DataType]
	var data []byte
	if ok {
		data, ok = k.bytes(v)
	}
	if !ok {
		return t, fmt.Errorf("output %q: unexpected value %T", spec.Name, v)
	}
	t.Data = data
	return t, nil
}

// valueData returns the data of the binding's typed tensors and scalars of T as bytes.
func valueData[T onnx.TensorData](v onnx.Value) ([]byte, bool) {
	switch v := v.(type) {
	case *onnx.Tensor[T]:
		return sliceBytes(v.GetData()), true
	case *onnx.Scalar[T]:
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
