package kserve

import (
	"encoding/binary"
	"strconv"

	"github.com/inferd/inferd/tensor"
)

// The binary tensor data extension: a body is a JSON header followed by the raw bytes of the
// tensors that carry parameters.binary_data_size, back to back in the order the tensors appear in
// the JSON, little-endian and unpadded; BOOL is one byte (0 or 1) per element and each BYTES
// element is a 4-byte little-endian length followed by its bytes.

// HeaderContentLength is the HTTP header that gives the length of the JSON part of a body with
// binary tensor data, in requests and in responses.
const HeaderContentLength = "Inference-Header-Content-Length"

// ParseHeaderLength reads the value of the Inference-Header-Content-Length header for DecodeLimited
// and DecodeResponse: "" (no header) is -1; anything but a non-negative decimal integer is an error
// wrapping ErrInvalidRequest.
func ParseHeaderLength(v string) (int, error) {
	if v == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, invalidf("%s %q is not a non-negative integer", HeaderContentLength, v)
	}
	return n, nil
}

// BinaryOutput reports whether the client asked for the named output in binary form: the
// output's own parameters.binary_data when the request lists it with that parameter, else the
// request's binary_data_output. DecodeLimited has checked that both are booleans where present.
func (r *InferRequest) BinaryOutput(name string) bool {
	for _, o := range r.Outputs {
		if o.Name == name {
			if v, ok := o.Parameters["binary_data"].(bool); ok {
				return v
			}
			break
		}
	}
	v, _ := r.Parameters["binary_data_output"].(bool)
	return v
}

// BinaryOutputs returns InferResponse.Binary for these outputs: BinaryOutput of each name, or
// nil when none is binary.
func (r *InferRequest) BinaryOutputs(outputs []tensor.Tensor) []bool {
	var bin []bool
	for i := range outputs {
		if r.BinaryOutput(outputs[i].Name) {
			if bin == nil {
				bin = make([]bool, len(outputs))
			}
			bin[i] = true
		}
	}
	return bin
}

// checkBoolParam rejects a parameter that, when present, must be a boolean.
func checkBoolParam(params map[string]any, key, owner string) error {
	if v, ok := params[key]; ok {
		if _, ok := v.(bool); !ok {
			return invalidf("%sparameters.%s must be a boolean, found %s", owner, key, appendAny(nil, v))
		}
	}
	return nil
}

// fillBinary gives each pending tensor its bytes from the binary part of body, which starts at
// headerLength (-1: there is none, and then pending is empty). tensorAt returns the tensor a
// binaryInput's index names. Fixed-size data and BYTES elements alias body where a tensor lies
// within one of its parts.
func fillBinary(body wire, headerLength int, pending []binaryInput, maxString int, tensorAt func(int) *tensor.Tensor) error {
	if headerLength < 0 {
		return nil
	}
	binLen := body.size - headerLength
	off := 0
	for _, p := range pending {
		if p.size > int64(binLen-off) {
			return invalidf("%s: binary_data_size %d needs bytes %d to %d of the body, but it ends at %d "+
				"(%d bytes of binary data after the %d-byte JSON header)",
				p.label, p.size, headerLength+off, int64(headerLength+off)+p.size, body.size, binLen, headerLength)
		}
		n := int(p.size)
		region := body.span(headerLength+off, n)
		t := tensorAt(p.index)
		if err := setBinary(t, region, p.label, headerLength+off, maxString); err != nil {
			return err
		}
		if err := t.Check(); err != nil {
			return invalidf("%s: %w", p.label, err)
		}
		off += n
	}
	if extra := binLen - off; extra > 0 {
		if len(pending) == 0 {
			return invalidf("%d bytes follow the %d-byte JSON header (%s), but no tensor has parameters.binary_data_size",
				extra, headerLength, HeaderContentLength)
		}
		return invalidf("%d bytes follow the %d-byte JSON header, but the binary_data_size of the %d binary tensors "+
			"add up to %d (the last is %s): %d extra bytes", binLen, headerLength, len(pending), off, pending[len(pending)-1].label, extra)
	}
	return nil
}

// setBinary makes region, which starts at offset at of the body, the data of t. Its size has
// already been checked against the shape for fixed-size types.
func setBinary(t *tensor.Tensor, region []byte, label string, at, maxString int) error {
	switch t.DataType {
	case tensor.Bytes:
		return setBinaryStrings(t, region, label, at, maxString)
	case tensor.Bool:
		for i, c := range region {
			if c > 1 {
				return invalidf("%s: BOOL element %d (body offset %d) is byte %#02x, must be 0 or 1", label, i, at+i, c)
			}
		}
	}
	t.Data = region
	return nil
}

// setBinaryStrings splits region into the length-prefixed elements of a BYTES tensor.
func setBinaryStrings(t *tensor.Tensor, region []byte, label string, at, maxString int) error {
	n := t.NumElements()
	// Each element takes at least its 4-byte length, which bounds the allocation whatever the shape.
	t.Strings = make([][]byte, 0, min(n, int64(len(region)/4)))
	for off := 0; off < len(region); {
		i := len(t.Strings)
		if int64(i) == n {
			return invalidf("%s: %w: shape %s needs %d BYTES elements, but %d bytes of binary data remain after them (body offset %d)",
				label, tensor.ErrDataSize, tensor.FormatShape(t.Shape), n, len(region)-off, at+off)
		}
		if len(region)-off < 4 {
			return invalidf("%s: BYTES element %d: its 4-byte length at body offset %d runs past the end of the tensor's "+
				"binary data (%d bytes left)", label, i, at+off, len(region)-off)
		}
		size := binary.LittleEndian.Uint32(region[off:])
		off += 4
		if int64(size) > int64(len(region)-off) {
			return invalidf("%s: BYTES element %d: length %d at body offset %d runs past the end of the tensor's "+
				"binary data (%d bytes left)", label, i, size, at+off-4, len(region)-off)
		}
		if maxString > 0 && int64(size) > int64(maxString) {
			return limitf("max_string_bytes", "%s: BYTES element %d is %d bytes, more than %d (max_string_bytes)", label, i, size, maxString)
		}
		end := off + int(size)
		t.Strings = append(t.Strings, region[off:end:end])
		off = end
	}
	if got := int64(len(t.Strings)); got != n {
		return invalidf("%s: %w: shape %s needs %d BYTES elements, binary data holds %d",
			label, tensor.ErrDataSize, tensor.FormatShape(t.Shape), n, got)
	}
	return nil
}

// binaryLen is the number of bytes appendBinary writes for t.
func binaryLen(t *tensor.Tensor) int {
	if t.DataType != tensor.Bytes {
		return len(t.Data)
	}
	n := 4 * len(t.Strings)
	for _, s := range t.Strings {
		n += len(s)
	}
	return n
}

// appendBinary appends the binary form of t's data.
func appendBinary(dst []byte, t *tensor.Tensor) []byte {
	switch t.DataType {
	case tensor.Bytes:
		for _, s := range t.Strings {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(s)))
			dst = append(dst, s...)
		}
		return dst
	case tensor.Bool:
		start := len(dst)
		dst = append(dst, t.Data...)
		for i, c := range dst[start:] {
			if c > 1 {
				dst[start+i] = 1
			}
		}
		return dst
	}
	return append(dst, t.Data...)
}
