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

// EncodeResponse appends the JSON form of r to dst and returns the extended buffer:
//
//	{"model_name","model_version","id"?,"parameters"?,"outputs":[{"name","datatype","shape","data"}]}
//
// id is omitted when empty, parameters when empty; data is flat and row-major. The outputs must
// pass tensor.Check; the encoder writes the elements their Data (or Strings) holds and never
// panics on a short buffer.
func EncodeResponse(dst []byte, r *InferResponse) []byte {
	dst = slices.Grow(dst, 128+estimateSize(r.Outputs))
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
		dst = appendOutput(dst, &r.Outputs[i])
	}
	return append(dst, "]}"...)
}

// EncodeError returns the error body {"error": msg}.
func EncodeError(msg string) []byte {
	dst := append(make([]byte, 0, len(msg)+16), `{"error":`...)
	dst = appendString(dst, msg)
	return append(dst, '}')
}

// estimateSize guesses the encoded size of the outputs' data, to grow the buffer once.
func estimateSize(outputs []tensor.Tensor) int {
	n := 0
	for i := range outputs {
		t := &outputs[i]
		switch t.DataType {
		case tensor.Bytes:
			for _, s := range t.Strings {
				n += len(s) + 3
			}
		case tensor.Bool:
			n += 6 * len(t.Data)
		default:
			n += len(t.Data) * 3
		}
	}
	return n
}

func appendOutput(dst []byte, t *tensor.Tensor) []byte {
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
	dst = append(dst, `],"data":[`...)
	dst = appendData(dst, t)
	return append(dst, "]}"...)
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

// halfToFloat32 converts IEEE 754 binary16 bits to a float32 (exactly: every half is a float32).
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0: // zero or subnormal: mant × 2^-24
		f := float32(mant) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
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
