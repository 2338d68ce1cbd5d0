// Package kservegrpc converts between the Open Inference Protocol's gRPC messages (package
// kservepb) and tensor.Tensor values, under the same kserve.Limits as the HTTP decoder, both
// ways round: requests to tensors and outputs to responses for the server, and the reverse for
// clients (tests, inferd perf). It does no I/O and knows nothing of models: checks against a
// model's signature are the model's (models.Version.CheckRequest).
//
// The choices it makes where the protocol is silent:
//
//   - Raw or typed, never both. With raw_input_contents there must be exactly one entry per
//     input, and no input may carry elements in contents (an empty contents message counts as
//     absent). Without it, each input's elements must be in the contents field of its datatype
//     (fp32_contents for FP32, int_contents for INT8, INT16 and INT32, ...), every other field
//     empty, and as many as the shape holds. FP16 and BF16 travel raw only, as the protocol says.
//   - Raw data is used where it lies. A raw input's Data is the message's own byte slice, not a
//     copy; a server that decodes with UnmarshalRequest and places the entries aligned (as
//     grpcapi's codec does) lets ONNX Runtime take them without copying. A raw entry must be exactly as long as the
//     shape and datatype need; BOOL bytes must be 0 or 1; BYTES elements are each a 4-byte
//     little-endian length and that many bytes, filling the entry exactly. A typed BYTES
//     element aliases its bytes_contents entry.
//   - Typed integers narrower than their field (INT8, INT16, UINT8, UINT16) must be in their
//     datatype's range.
//   - Parameters decode to bool, int64, uint64, string or float64 by their oneof; one with no
//     value set decodes to nil (and fails where a value is needed, as priority and timeout do).
//   - Responses always carry their outputs in raw_output_contents, as Triton's do: fixed-size
//     outputs as their own bytes (not copied; MarshalResponse hands them to the transport as
//     they are), BYTES length-prefixed.
//
// Every error wraps kserve.ErrInvalidRequest and names the input and what is wrong; a request
// over a limit is a *kserve.LimitError naming the limit's key, shape errors wrap tensor.ErrShape
// and size mismatches tensor.ErrDataSize.
package kservegrpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tensor"
)

// DecodeRequest converts m into the protocol's request, checking its wire format under lim.
// The request's tensors alias m's byte fields: m must not change while the request is in use.
func DecodeRequest(m *kservepb.ModelInferRequest, lim kserve.Limits) (*kserve.InferRequest, error) {
	if lim.MaxInputs > 0 && len(m.GetInputs()) > lim.MaxInputs {
		return nil, kserve.LimitErrorf("max_inputs", "%d inputs, more than %d (max_inputs)", len(m.GetInputs()), lim.MaxInputs)
	}
	raw := m.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(m.GetInputs()) {
		return nil, invalidf("raw_input_contents has %d entries for %d inputs: it needs one per input, in the order of inputs",
			len(raw), len(m.GetInputs()))
	}
	params, err := parameters(m.GetParameters(), "")
	if err != nil {
		return nil, err
	}
	req := &kserve.InferRequest{ID: m.GetId(), Parameters: params, Inputs: make([]kserve.Input, len(m.GetInputs()))}
	for i, in := range m.GetInputs() {
		if req.Inputs[i], err = decodeInput(i, in, raw, lim); err != nil {
			return nil, err
		}
	}
	if outs := m.GetOutputs(); len(outs) > 0 {
		req.Outputs = make([]kserve.RequestedOutput, len(outs))
		for i, o := range outs {
			if o.GetName() == "" {
				return nil, invalidf("outputs[%d]: missing name", i)
			}
			p, err := parameters(o.GetParameters(), fmt.Sprintf("output %q: ", o.GetName()))
			if err != nil {
				return nil, err
			}
			req.Outputs[i] = kserve.RequestedOutput{Name: o.GetName(), Parameters: p}
		}
	}
	return req, nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %w", kserve.ErrInvalidRequest, fmt.Errorf(format, args...))
}

// decodeInput converts inputs[i]; raw is the request's raw_input_contents (empty or one per
// input).
func decodeInput(i int, in *kservepb.ModelInferRequest_InferInputTensor, raw [][]byte, lim kserve.Limits) (kserve.Input, error) {
	if in.GetName() == "" {
		return kserve.Input{}, invalidf("inputs[%d]: missing name", i)
	}
	label := fmt.Sprintf("input %q", in.GetName())
	dt, err := tensor.ParseDataType(in.GetDatatype())
	if err != nil {
		return kserve.Input{}, invalidf("%s: %w", label, err)
	}
	shape := in.GetShape()
	if lim.MaxRank > 0 && len(shape) > lim.MaxRank {
		return kserve.Input{}, kserve.LimitErrorf("max_rank", "%s: shape has %d dimensions, more than %d (max_rank)", label, len(shape), lim.MaxRank)
	}
	n, err := tensor.Elements(shape)
	if err != nil {
		return kserve.Input{}, invalidf("%s: %w", label, err)
	}
	if lim.MaxElements > 0 && n > lim.MaxElements {
		return kserve.Input{}, kserve.LimitErrorf("max_elements", "%s: shape %s has %d elements, more than %d (max_elements)",
			label, tensor.FormatShape(shape), n, lim.MaxElements)
	}
	params, err := parameters(in.GetParameters(), label+": ")
	if err != nil {
		return kserve.Input{}, err
	}
	t := tensor.Tensor{Name: in.GetName(), DataType: dt, Shape: shape}
	if len(raw) > 0 {
		if field, count := typedCount(in.GetContents()); count > 0 {
			return kserve.Input{}, invalidf("%s: has %d values in contents.%s and an entry in raw_input_contents: a request carries its data one way, raw or typed",
				label, count, field)
		}
		err = decodeRaw(&t, raw[i], n, fmt.Sprintf("%s (raw_input_contents[%d])", label, i), lim.MaxStringBytes)
	} else {
		err = decodeTyped(&t, in.GetContents(), n, label, lim.MaxStringBytes)
	}
	if err != nil {
		if le := (*kserve.LimitError)(nil); errors.As(err, &le) {
			return kserve.Input{}, err
		}
		return kserve.Input{}, invalidf("%w", err)
	}
	if err := t.Check(); err != nil {
		return kserve.Input{}, invalidf("%s: %w", label, err)
	}
	return kserve.Input{Tensor: t, Parameters: params}, nil
}

// decodeRaw makes b the data of t, which has n elements.
func decodeRaw(t *tensor.Tensor, b []byte, n int64, label string, maxString int) error {
	if t.DataType == tensor.Bytes {
		return splitStrings(t, b, n, label, maxString)
	}
	if want := n * int64(t.DataType.Size()); int64(len(b)) != want {
		return fmt.Errorf("%s: %w: %d bytes; shape %s of %s needs %d", label, tensor.ErrDataSize, len(b),
			tensor.FormatShape(t.Shape), t.DataType, want)
	}
	if t.DataType == tensor.Bool {
		for j, c := range b {
			if c > 1 {
				return fmt.Errorf("%s: BOOL element %d is byte %#02x, must be 0 or 1", label, j, c)
			}
		}
	}
	t.Data = b
	return nil
}

// splitStrings reads the length-prefixed elements of a raw BYTES tensor of n elements.
func splitStrings(t *tensor.Tensor, b []byte, n int64, label string, maxString int) error {
	// Each element takes at least its 4-byte length, which bounds the allocation whatever the shape.
	t.Strings = make([][]byte, 0, min(n, int64(len(b)/4)))
	for off := 0; off < len(b); {
		j := len(t.Strings)
		if int64(j) == n {
			return fmt.Errorf("%s: %w: shape %s needs %d BYTES elements, but %d bytes remain after them",
				label, tensor.ErrDataSize, tensor.FormatShape(t.Shape), n, len(b)-off)
		}
		if len(b)-off < 4 {
			return fmt.Errorf("%s: BYTES element %d: its 4-byte length at offset %d runs past the end (%d bytes left)", label, j, off, len(b)-off)
		}
		size := binary.LittleEndian.Uint32(b[off:])
		off += 4
		if int64(size) > int64(len(b)-off) {
			return fmt.Errorf("%s: BYTES element %d: length %d at offset %d runs past the end (%d bytes left)", label, j, size, off-4, len(b)-off)
		}
		if maxString > 0 && int64(size) > int64(maxString) {
			return kserve.LimitErrorf("max_string_bytes", "%s: BYTES element %d is %d bytes, more than %d (max_string_bytes)", label, j, size, maxString)
		}
		end := off + int(size)
		t.Strings = append(t.Strings, b[off:end:end])
		off = end
	}
	if got := int64(len(t.Strings)); got != n {
		return fmt.Errorf("%s: %w: shape %s needs %d BYTES elements, the raw contents hold %d",
			label, tensor.ErrDataSize, tensor.FormatShape(t.Shape), n, got)
	}
	return nil
}

// typedField names the contents field that carries a datatype's elements; "" for FP16 and
// BF16, which have none.
func typedField(dt tensor.DataType) string {
	switch dt {
	case tensor.Bool:
		return "bool_contents"
	case tensor.Int8, tensor.Int16, tensor.Int32:
		return "int_contents"
	case tensor.Int64:
		return "int64_contents"
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		return "uint_contents"
	case tensor.Uint64:
		return "uint64_contents"
	case tensor.FP32:
		return "fp32_contents"
	case tensor.FP64:
		return "fp64_contents"
	case tensor.Bytes:
		return "bytes_contents"
	}
	return ""
}

// fieldCount is the element count of one contents field.
type fieldCount struct {
	name string
	n    int
}

// fieldCounts lists the element count of each of c's fields.
func fieldCounts(c *kservepb.InferTensorContents) [8]fieldCount {
	return [8]fieldCount{
		{"bool_contents", len(c.GetBoolContents())}, {"int_contents", len(c.GetIntContents())},
		{"int64_contents", len(c.GetInt64Contents())}, {"uint_contents", len(c.GetUintContents())},
		{"uint64_contents", len(c.GetUint64Contents())}, {"fp32_contents", len(c.GetFp32Contents())},
		{"fp64_contents", len(c.GetFp64Contents())}, {"bytes_contents", len(c.GetBytesContents())},
	}
}

// typedCount returns the first contents field that holds elements and how many, or 0.
func typedCount(c *kservepb.InferTensorContents) (string, int) {
	for _, f := range fieldCounts(c) {
		if f.n > 0 {
			return f.name, f.n
		}
	}
	return "", 0
}

// decodeTyped converts the typed contents c of t, which has n elements.
func decodeTyped(t *tensor.Tensor, c *kservepb.InferTensorContents, n int64, label string, maxString int) error {
	want := typedField(t.DataType)
	if want == "" {
		return fmt.Errorf("%s: %s data travels in raw_input_contents only (the contents message has no field for it)", label, t.DataType)
	}
	got := 0
	for _, f := range fieldCounts(c) {
		switch {
		case f.name == want:
			got = f.n
		case f.n > 0:
			return fmt.Errorf("%s: %d values in contents.%s; %s data goes in contents.%s", label, f.n, f.name, t.DataType, want)
		}
	}
	if int64(got) != n {
		if got == 0 && n > 0 {
			return fmt.Errorf("%s: no data: shape %s needs %d elements in contents.%s, or the request's raw_input_contents",
				label, tensor.FormatShape(t.Shape), n, want)
		}
		return fmt.Errorf("%s: %w: shape %s needs %d elements, contents.%s has %d",
			label, tensor.ErrDataSize, tensor.FormatShape(t.Shape), n, want, got)
	}
	switch t.DataType {
	case tensor.Bytes:
		t.Strings = make([][]byte, got)
		for j, s := range c.GetBytesContents() {
			if maxString > 0 && len(s) > maxString {
				return kserve.LimitErrorf("max_string_bytes", "%s: BYTES element %d is %d bytes, more than %d (max_string_bytes)", label, j, len(s), maxString)
			}
			t.Strings[j] = s[:len(s):len(s)]
		}
		return nil
	case tensor.Bool:
		t.Data = make([]byte, got)
		for j, v := range c.GetBoolContents() {
			if v {
				t.Data[j] = 1
			}
		}
		return nil
	case tensor.Int8, tensor.Int16, tensor.Int32:
		return putInts(t, c.GetIntContents(), label)
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		return putUints(t, c.GetUintContents(), label)
	case tensor.Int64:
		t.Data = make([]byte, 0, 8*got)
		for _, v := range c.GetInt64Contents() {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, uint64(v))
		}
	case tensor.Uint64:
		t.Data = make([]byte, 0, 8*got)
		for _, v := range c.GetUint64Contents() {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, v)
		}
	case tensor.FP32:
		t.Data = make([]byte, 0, 4*got)
		for _, v := range c.GetFp32Contents() {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(v))
		}
	case tensor.FP64:
		t.Data = make([]byte, 0, 8*got)
		for _, v := range c.GetFp64Contents() {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(v))
		}
	}
	return nil
}

// putInts stores int_contents as INT8, INT16 or INT32, range-checked.
func putInts(t *tensor.Tensor, vs []int32, label string) error {
	size := t.DataType.Size()
	lo, hi := int32(math.MinInt32), int32(math.MaxInt32)
	switch t.DataType {
	case tensor.Int8:
		lo, hi = math.MinInt8, math.MaxInt8
	case tensor.Int16:
		lo, hi = math.MinInt16, math.MaxInt16
	}
	t.Data = make([]byte, size*len(vs))
	for j, v := range vs {
		if v < lo || v > hi {
			return fmt.Errorf("%s: contents.int_contents[%d] = %d is out of range for %s", label, j, v, t.DataType)
		}
		putLE(t.Data[j*size:], uint64(uint32(v)), size)
	}
	return nil
}

// putUints stores uint_contents as UINT8, UINT16 or UINT32, range-checked.
func putUints(t *tensor.Tensor, vs []uint32, label string) error {
	size := t.DataType.Size()
	hi := uint32(math.MaxUint32)
	switch t.DataType {
	case tensor.Uint8:
		hi = math.MaxUint8
	case tensor.Uint16:
		hi = math.MaxUint16
	}
	t.Data = make([]byte, size*len(vs))
	for j, v := range vs {
		if v > hi {
			return fmt.Errorf("%s: contents.uint_contents[%d] = %d is out of range for %s", label, j, v, t.DataType)
		}
		putLE(t.Data[j*size:], uint64(v), size)
	}
	return nil
}

// putLE writes the low size bytes of v little-endian.
func putLE(b []byte, v uint64, size int) {
	for k := range size {
		b[k] = byte(v >> (8 * k))
	}
}

// parameters converts a parameter map; owner prefixes errors.
func parameters(in map[string]*kservepb.InferParameter, owner string) (map[string]any, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]any, len(in))
	for k, p := range in {
		if k == "" {
			return nil, invalidf("%sa parameter has an empty name", owner)
		}
		switch v := p.GetParameterChoice().(type) {
		case *kservepb.InferParameter_BoolParam:
			out[k] = v.BoolParam
		case *kservepb.InferParameter_Int64Param:
			out[k] = v.Int64Param
		case *kservepb.InferParameter_Uint64Param:
			out[k] = v.Uint64Param
		case *kservepb.InferParameter_StringParam:
			out[k] = v.StringParam
		case *kservepb.InferParameter_DoubleParam:
			out[k] = v.DoubleParam
		default:
			out[k] = nil
		}
	}
	return out, nil
}
