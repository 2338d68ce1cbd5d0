// Package tensor holds the data types that cross every boundary inside inferd: the HTTP API,
// the scheduler, the model repository and the engine all speak in tensor.Tensor and
// tensor.Spec. It imports nothing of ours and nothing cgo, so every other package can be tested
// without ONNX Runtime.
//
// Fixed-size element types are stored as little-endian, row-major bytes (the layout of the
// binary tensor extension and of ORT's own buffers), so a batch is a byte concatenation and the
// engine can hand the bytes to ORT without conversion. BYTES tensors hold one []byte per element.
package tensor

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// DataType is a KServe v2 tensor datatype name.
type DataType string

// The datatypes of the Open Inference Protocol, with Triton's BF16.
const (
	Bool   DataType = "BOOL"
	Uint8  DataType = "UINT8"
	Uint16 DataType = "UINT16"
	Uint32 DataType = "UINT32"
	Uint64 DataType = "UINT64"
	Int8   DataType = "INT8"
	Int16  DataType = "INT16"
	Int32  DataType = "INT32"
	Int64  DataType = "INT64"
	FP16   DataType = "FP16"
	FP32   DataType = "FP32"
	FP64   DataType = "FP64"
	BF16   DataType = "BF16"
	Bytes  DataType = "BYTES"
)

var elementSizes = map[DataType]int{
	Bool: 1, Uint8: 1, Uint16: 2, Uint32: 4, Uint64: 8,
	Int8: 1, Int16: 2, Int32: 4, Int64: 8,
	FP16: 2, FP32: 4, FP64: 8, BF16: 2,
	Bytes: 0,
}

// ParseDataType returns the DataType named s, or ErrUnknownDataType.
func ParseDataType(s string) (DataType, error) {
	d := DataType(s)
	if _, ok := elementSizes[d]; !ok {
		return "", fmt.Errorf("%w %q", ErrUnknownDataType, s)
	}
	return d, nil
}

// Size is the number of bytes of one element, or 0 for BYTES (variable length).
func (d DataType) Size() int { return elementSizes[d] }

// Valid reports whether d is one of the protocol's datatypes.
func (d DataType) Valid() bool { _, ok := elementSizes[d]; return ok }

// Sentinel errors; callers match them with errors.Is.
var (
	ErrUnknownDataType = errors.New("unknown datatype")
	ErrShape           = errors.New("invalid shape")
	ErrDataSize        = errors.New("data size does not match shape")
)

// MaxElements bounds the element count of one tensor so that shape products never overflow and a
// declared shape cannot ask for more memory than any request body could carry.
const MaxElements = 1 << 40

// Tensor is one named tensor with its data.
type Tensor struct {
	Name     string
	DataType DataType
	Shape    []int64
	// Data holds the elements of fixed-size types: little-endian, row-major, unpadded;
	// BOOL is one byte per element (0 or 1).
	Data []byte
	// Strings holds the elements of a BYTES tensor, row-major.
	Strings [][]byte
}

// Elements returns the number of elements the shape describes, or an error wrapping ErrShape for
// negative dimensions or a product over MaxElements. A rank-0 shape is a scalar (1 element).
func Elements(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension %d in %v", ErrShape, d, shape)
		}
		if d != 0 && n > MaxElements/d {
			return 0, fmt.Errorf("%w: %v has more than %d elements", ErrShape, shape, int64(MaxElements))
		}
		n *= d
	}
	return n, nil
}

// Check verifies that the tensor's data matches its shape and datatype.
func (t *Tensor) Check() error {
	if !t.DataType.Valid() {
		return fmt.Errorf("tensor %q: %w %q", t.Name, ErrUnknownDataType, t.DataType)
	}
	n, err := Elements(t.Shape)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if t.DataType == Bytes {
		if int64(len(t.Strings)) != n {
			return fmt.Errorf("tensor %q: %w: shape %v needs %d elements, got %d",
				t.Name, ErrDataSize, t.Shape, n, len(t.Strings))
		}
		return nil
	}
	if want := n * int64(t.DataType.Size()); int64(len(t.Data)) != want {
		return fmt.Errorf("tensor %q: %w: shape %v of %s needs %d bytes, got %d",
			t.Name, ErrDataSize, t.Shape, t.DataType, want, len(t.Data))
	}
	return nil
}

// NumElements returns the element count of a tensor whose shape has already been checked.
func (t *Tensor) NumElements() int64 {
	n, err := Elements(t.Shape)
	if err != nil {
		return 0
	}
	return n
}

// Spec describes one input or output of a model: name, datatype and shape, with -1 for a
// dimension the model accepts at any size.
type Spec struct {
	Name     string   `json:"name"`
	DataType DataType `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// Accepts reports, with a reason, whether a tensor of this datatype and shape can be fed to the
// input this spec describes.
func (s Spec) Accepts(d DataType, shape []int64) error {
	if d != s.DataType {
		return fmt.Errorf("input %q: datatype %s, model expects %s", s.Name, d, s.DataType)
	}
	if len(shape) != len(s.Shape) {
		return fmt.Errorf("input %q: shape %s has rank %d, model expects %s (rank %d)",
			s.Name, FormatShape(shape), len(shape), FormatShape(s.Shape), len(s.Shape))
	}
	for i, want := range s.Shape {
		if want >= 0 && shape[i] != want {
			return fmt.Errorf("input %q: shape %s, model expects %s (dimension %d must be %d)",
				s.Name, FormatShape(shape), FormatShape(s.Shape), i, want)
		}
	}
	return nil
}

// FormatShape writes a shape as [a,b,c], with -1 for variable dimensions.
func FormatShape(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Float32s decodes the data of an FP32 tensor (a convenience for tests and tools; the hot path
// works on bytes).
func (t *Tensor) Float32s() []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		b := t.Data[4*i:]
		out[i] = math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
	}
	return out
}

// FromFloat32s builds an FP32 tensor.
func FromFloat32s(name string, shape []int64, v []float32) Tensor {
	data := make([]byte, 4*len(v))
	for i, f := range v {
		u := math.Float32bits(f)
		data[4*i], data[4*i+1], data[4*i+2], data[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return Tensor{Name: name, DataType: FP32, Shape: shape, Data: data}
}
