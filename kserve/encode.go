package kserve

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/inferd/inferd/tensor"
)

// ResponseParts encodes a response for writing without copying its binary outputs: it appends
// the JSON part to dst (header) and returns the binary parts to send after it, in order. When
// no output is binary (r.Binary), parts is nil and header is the whole body, JSON:
//
//	{"model_name","model_version","id"?,"parameters"?,"outputs":[{"name","datatype","shape","data"}]}
//
// id is omitted when empty, parameters when empty; data is flat and row-major. Otherwise binary
// outputs have "parameters":{"binary_data_size":N} instead of data, and their bytes follow the
// JSON in output order (the binary tensor data extension): the caller sends header with the
// Inference-Header-Content-Length header set to its length (not counting what dst held before)
// and Content-Type application/octet-stream, then the parts. Fixed-size outputs are their own
// Data (not copied); BOOL and BYTES outputs are encoded into new buffers.
//
// The outputs must pass tensor.Check; the encoder writes the elements their Data (or Strings)
// holds and never panics on a short buffer.
func ResponseParts(dst []byte, r *InferResponse) (header []byte, parts [][]byte) {
	dst = slices.Grow(dst, 128+estimateSize(r))
	header, anyBinary := appendResponseJSON(dst, r)
	if !anyBinary {
		return header, nil
	}
	for i := range r.Outputs {
		if !r.binary(i) {
			continue
		}
		t := &r.Outputs[i]
		if t.DataType == tensor.Bytes || t.DataType == tensor.Bool {
			parts = append(parts, appendBinary(make([]byte, 0, binaryLen(t)), t))
		} else {
			parts = append(parts, t.Data)
		}
	}
	return header, parts
}

// appendResponseJSON appends the JSON part of the response and reports whether any output is
// binary.
func appendResponseJSON(dst []byte, r *InferResponse) ([]byte, bool) {
	anyBinary := false
	dst = append(dst, `{"model_name":`...)
	dst = appendString(dst, r.ModelName)
	dst = append(dst, `,"model_version":`...)
	dst = appendString(dst, r.ModelVersion)
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, r.ID)
	}
	if len(r.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendAny(dst, r.Parameters)
	}
	dst = append(dst, `,"outputs":[`...)
	for i := range r.Outputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		bin := r.binary(i)
		anyBinary = anyBinary || bin
		dst = appendTensor(dst, &r.Outputs[i], nil, bin)
	}
	return append(dst, "]}"...), anyBinary
}

// binary reports whether output i is to be sent in binary form.
func (r *InferResponse) binary(i int) bool { return i < len(r.Binary) && r.Binary[i] }

// EncodeError returns the error body {"error": msg}.
func EncodeError(msg string) []byte {
	dst := append(make([]byte, 0, len(msg)+16), `{"error":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

// estimateSize guesses the size of the JSON of the response's outputs, to grow the buffer once.
func estimateSize(r *InferResponse) int {
	n := 0
	for i := range r.Outputs {
		t := &r.Outputs[i]
		n += 64 + len(t.Name)
		if !r.binary(i) {
			n += estimateData(t)
		}
	}
	return n
}

// estimateData guesses the size of the JSON data of t.
func estimateData(t *tensor.Tensor) int {
	switch t.DataType {
	case tensor.Bytes:
		n := 0
		for _, s := range t.Strings {
			n += len(s) + 3
		}
		return n
	case tensor.Bool:
		return 6 * len(t.Data)
	default:
		return 3 * len(t.Data)
	}
}

// appendTensor writes the JSON object of a response output or a request input:
// {"name","datatype","shape","parameters"?,"data"}, where parameters are params (without any
// binary_data_size of theirs) and, when binary, parameters.binary_data_size replaces data.
func appendTensor(dst []byte, t *tensor.Tensor, params map[string]any, binary bool) []byte {
	dst = append(dst, `{"name":`...)
	dst = appendString(dst, t.Name)
	dst = append(dst, `,"datatype":`...)
	dst = appendString(dst, string(t.DataType))
	dst = append(dst, `,"shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = strconv.AppendInt(dst, d, 10)
	}
	dst = append(dst, ']')
	if binary {
		var num [20]byte
		dst = appendParams(dst, params, "binary_data_size", strconv.AppendInt(num[:0], int64(binaryLen(t)), 10))
		return append(dst, '}')
	}
	dst = appendParams(dst, params, "binary_data_size", nil)
	dst = append(dst, `,"data":[`...)
	dst = appendData(dst, t)
	return append(dst, "]}"...)
}

// appendParams writes `,"parameters":{...}` with the members of m in sorted key order and key
// set to the JSON value val (replacing m's own), or left out when val is nil; nothing when no
// member remains.
func appendParams(dst []byte, m map[string]any, key string, val []byte) []byte {
	n := len(m)
	if _, has := m[key]; has {
		n--
	}
	if n == 0 { // the usual case, without sorting
		if val == nil {
			return dst
		}
		dst = append(dst, `,"parameters":{`...)
		dst = appendString(dst, key)
		dst = append(dst, ':')
		dst = append(dst, val...)
		return append(dst, '}')
	}
	keys := make([]string, 0, len(m)+1)
	for k := range m {
		if k != key {
			keys = append(keys, k)
		}
	}
	if val != nil {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	dst = append(dst, `,"parameters":{`...)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		if k == key {
			dst = append(dst, val...)
		} else {
			dst = appendAny(dst, m[k])
		}
	}
	return append(dst, '}')
}

// appendData writes the elements of t separated by commas.
func appendData(dst []byte, t *tensor.Tensor) []byte {
	le := binary.LittleEndian
	if t.DataType == tensor.Bytes {
		for i, s := range t.Strings {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, s)
		}
		return dst
	}
	size := t.DataType.Size()
	if size == 0 {
		return dst
	}
	for i := 0; i+size <= len(t.Data); i += size {
		if i > 0 {
			dst = append(dst, ',')
		}
		b := t.Data[i : i+size]
		switch t.DataType {
		case tensor.Bool:
			if b[0] != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		case tensor.Uint8:
			dst = strconv.AppendUint(dst, uint64(b[0]), 10)
		case tensor.Uint16:
			dst = strconv.AppendUint(dst, uint64(le.Uint16(b)), 10)
		case tensor.Uint32:
			dst = strconv.AppendUint(dst, uint64(le.Uint32(b)), 10)
		case tensor.Uint64:
			dst = strconv.AppendUint(dst, le.Uint64(b), 10)
		case tensor.Int8:
			dst = strconv.AppendInt(dst, int64(int8(b[0])), 10)
		case tensor.Int16:
			dst = strconv.AppendInt(dst, int64(int16(le.Uint16(b))), 10)
		case tensor.Int32:
			dst = strconv.AppendInt(dst, int64(int32(le.Uint32(b))), 10)
		case tensor.Int64:
			dst = strconv.AppendInt(dst, int64(le.Uint64(b)), 10)
		case tensor.FP16:
			dst = appendFloat(dst, float64(halfToFloat32(le.Uint16(b))), 32)
		case tensor.BF16:
			dst = appendFloat(dst, float64(math.Float32frombits(uint32(le.Uint16(b))<<16)), 32)
		case tensor.FP32:
			dst = appendFloat(dst, float64(math.Float32frombits(le.Uint32(b))), 32)
		case tensor.FP64:
			dst = appendFloat(dst, math.Float64frombits(le.Uint64(b)), 64)
		}
	}
	return dst
}

// appendFloat writes f in the shortest form that reads back as the same float of the given
// bits; non-finite values as the bare tokens NaN, Infinity, -Infinity (see the package doc).
func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "NaN"...)
	case math.IsInf(f, 1):
		return append(dst, "Infinity"...)
	case math.IsInf(f, -1):
		return append(dst, "-Infinity"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Control characters, quotes and backslashes are
// escaped, and so are U+2028 and U+2029 (JavaScript line terminators); each byte that is not
// part of valid UTF-8 becomes \ufffd, so the result is always valid JSON.
func appendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendAny writes a parameter value. The usual JSON-shaped types are written directly, map keys
// in sorted order; anything else goes through encoding/json, and a value it cannot encode is
// written as null rather than breaking the body.
func appendAny(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, v)
	case string:
		return appendString(dst, v)
	case float64:
		return appendFloat(dst, v, 64)
	case float32:
		return appendFloat(dst, float64(v), 32)
	case int:
		return strconv.AppendInt(dst, int64(v), 10)
	case int32:
		return strconv.AppendInt(dst, int64(v), 10)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case uint32:
		return strconv.AppendUint(dst, uint64(v), 10)
	case uint64:
		return strconv.AppendUint(dst, v, 10)
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendAny(dst, e)
		}
		return append(dst, ']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendAny(dst, v[k])
		}
		return append(dst, '}')
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}
