package kserve

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/inferd/inferd/tensor"
)

// inputState collects the fields of one input object, which may come in any order.
type inputState struct {
	kind                                string // "input", or "output" in a response
	index                               int
	in                                  Input
	hasName, hasType, hasShape, hasData bool
	// deferredAt is the offset of a "data" array seen before the name and datatype (-1 if none);
	// it is parsed once the object is complete, at deferredDepth.
	deferredAt, deferredDepth int
	// BYTES elements are decoded into one buffer; strEnds[i] is where element i ends.
	strBuf  []byte
	strEnds []int
}

func (s *inputState) label() string {
	if s.hasName {
		return fmt.Sprintf("%s %q", s.kind, s.in.Tensor.Name)
	}
	return fmt.Sprintf("%ss[%d]", s.kind, s.index)
}

// count is the number of data elements decoded so far.
func (s *inputState) count() int {
	t := &s.in.Tensor
	if t.DataType == tensor.Bytes {
		return len(t.Strings) + len(s.strEnds) // strEnds while parsing, Strings after
	}
	return len(t.Data) / t.DataType.Size()
}

// elemErr reports a problem with the data element that starts at pos.
func (s *inputState) elemErr(d *decoder, format string, args ...any) error {
	return invalidf("%s: \"data\" element %d (offset %d): %s",
		s.label(), s.count(), d.pos, fmt.Sprintf(format, args...))
}

// input reads inputs[i]. size is parameters.binary_data_size when the input's data is in the
// binary part of the body, else -1.
func (d *decoder) input(i int) (in Input, size int64, err error) {
	if d.peek() != '{' {
		return Input{}, -1, invalidf("%ss[%d] must be an object, found %s", d.tensorKind(), i, d.describeNext())
	}
	s := &inputState{kind: d.tensorKind(), index: i, deferredAt: -1}
	var seen fieldSet
	t := &s.in.Tensor
	err = d.object(func(key string) error {
		if !seen.add(key) {
			return invalidf("%s: duplicate field %q", s.label(), key)
		}
		var err error
		switch key {
		case "name":
			if d.peek() != '"' {
				return invalidf("%s: \"name\" must be a string, found %s", s.label(), d.describeNext())
			}
			t.Name, err = d.string()
			s.hasName = true
		case "datatype":
			if d.peek() != '"' {
				return invalidf("%s: \"datatype\" must be a string, found %s", s.label(), d.describeNext())
			}
			var name string
			if name, err = d.string(); err != nil {
				return err
			}
			if t.DataType, err = tensor.ParseDataType(name); err != nil {
				return invalidf("%s: %w", s.label(), err)
			}
			s.hasType = true
		case "shape":
			t.Shape, err = d.shape(s)
			s.hasShape = true
		case "parameters":
			s.in.Parameters, err = d.parameters(s.label() + ": ")
		case "data":
			s.hasData = true
			if s.hasName && s.hasType {
				return d.data(s)
			}
			if d.peek() != '[' {
				return invalidf("%s: \"data\" must be an array, found %s", s.label(), d.describeNext())
			}
			s.deferredAt, s.deferredDepth = d.pos, d.depth
			return d.skipArray()
		default:
			return invalidf("%s: unknown field %q (allowed: name, shape, datatype, parameters, data)", s.label(), key)
		}
		return err
	})
	if err != nil {
		return Input{}, -1, err
	}
	size, err = d.finishInput(s)
	if err != nil {
		return Input{}, -1, err
	}
	return s.in, size, nil
}

// shape reads an input's shape: an array of integers. Negative dimensions are caught later by
// tensor.Elements, with the rest of the shape checks.
func (d *decoder) shape(s *inputState) ([]int64, error) {
	if d.peek() != '[' {
		return nil, invalidf("%s: \"shape\" must be an array of integers, found %s", s.label(), d.describeNext())
	}
	shape := []int64{}
	err := d.array(func(i int) error {
		if d.lim.MaxRank > 0 && i >= d.lim.MaxRank {
			return limitf("max_rank", "%s: \"shape\" has more than %d dimensions (max_rank)", s.label(), d.lim.MaxRank)
		}
		c := d.peek()
		if c != '-' && !isDigit(c) {
			return invalidf("%s: \"shape\"[%d] must be an integer, found %s", s.label(), i, describe(c))
		}
		n, ok := d.number()
		if !ok {
			d.pos = n.end
			return d.expected("a digit (malformed number)")
		}
		end := n.end
		v, err := strconv.ParseInt(string(d.buf[d.pos:end]), 10, 64)
		if !n.integer || err != nil {
			return invalidf("%s: \"shape\"[%d] = %s is not a 64-bit integer", s.label(), i, d.buf[d.pos:end])
		}
		d.pos = end
		shape = append(shape, v)
		return nil
	})
	return shape, err
}

// finishInput checks an input once all its fields are read and parses deferred data.
func (d *decoder) finishInput(s *inputState) (size int64, err error) {
	t := &s.in.Tensor
	switch {
	case !s.hasName:
		return -1, invalidf("%ss[%d]: missing \"name\"", s.kind, s.index)
	case t.Name == "":
		return -1, invalidf("%ss[%d]: \"name\" must not be empty", s.kind, s.index)
	case !s.hasType:
		return -1, invalidf("%s: missing \"datatype\"", s.label())
	case !s.hasShape:
		return -1, invalidf("%s: missing \"shape\"", s.label())
	}
	n, err := tensor.Elements(t.Shape)
	if err != nil {
		return -1, invalidf("%s: %w", s.label(), err)
	}
	if d.lim.MaxElements > 0 && n > d.lim.MaxElements {
		return -1, limitf("max_elements", "%s: shape %s has %d elements, more than %d (max_elements)",
			s.label(), tensor.FormatShape(t.Shape), n, d.lim.MaxElements)
	}
	if v, ok := s.in.Parameters["binary_data_size"]; ok {
		return s.binarySize(v, n)
	}
	if !s.hasData {
		return -1, invalidf("%s: missing \"data\" (or parameters.binary_data_size)", s.label())
	}
	if s.deferredAt >= 0 {
		pos, depth := d.pos, d.depth
		d.pos, d.depth = s.deferredAt, s.deferredDepth
		if err := d.data(s); err != nil {
			return -1, err
		}
		d.pos, d.depth = pos, depth
	}
	if got := int64(s.count()); got != n {
		return -1, invalidf("%s: %w: shape %s needs %d elements, \"data\" has %d",
			s.label(), tensor.ErrDataSize, tensor.FormatShape(t.Shape), n, got)
	}
	return -1, nil
}

// binarySize validates parameters.binary_data_size of an input with n elements.
func (s *inputState) binarySize(v any, n int64) (int64, error) {
	t := &s.in.Tensor
	if s.hasData {
		return -1, invalidf("%s: has both \"data\" and parameters.binary_data_size", s.label())
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > 1<<53 {
		return -1, invalidf("%s: parameters.binary_data_size must be a non-negative integer, found %s", s.label(), appendAny(nil, v))
	}
	size := int64(f)
	if es := int64(t.DataType.Size()); es > 0 && size != n*es {
		return -1, invalidf("%s: %w: binary_data_size is %d bytes, shape %s of %s needs %d",
			s.label(), tensor.ErrDataSize, size, tensor.FormatShape(t.Shape), t.DataType, n*es)
	}
	return size, nil
}

// skipArray moves past the array at pos without interpreting it; data parsed later is checked
// then. Strings are skipped as units so that brackets inside them do not count.
func (d *decoder) skipArray() error {
	start, level := d.pos, 0
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case '[', '{':
			level++
		case ']', '}':
			level--
			if level == 0 {
				d.pos++
				return nil
			}
		case '"':
			for d.pos++; d.pos < len(d.buf) && d.buf[d.pos] != '"'; d.pos++ {
				if d.buf[d.pos] == '\\' {
					d.pos++
				}
			}
		}
		d.pos++
	}
	return invalidf("malformed JSON: unterminated \"data\" array starting at offset %d", start)
}

// data parses the data array at pos into the input's tensor, flattening any nesting.
func (d *decoder) data(s *inputState) error {
	t := &s.in.Tensor
	if (t.DataType == tensor.FP16 || t.DataType == tensor.BF16) && !d.response {
		return invalidf("%s: %s data cannot be sent as JSON numbers (binary only, as in Triton); "+
			"send it with the binary tensor data extension (parameters.binary_data_size)", s.label(), t.DataType)
	}
	if d.peek() != '[' {
		return invalidf("%s: \"data\" must be an array, found %s", s.label(), d.describeNext())
	}
	s.prealloc(len(d.buf) - d.pos)
	level := 0
	for {
		if d.peek() == '[' {
			d.pos++
			level++
			if d.depth+level > d.maxDepth() {
				return limitf("max_depth", "JSON nesting deeper than %d at offset %d (max_depth)", d.maxDepth(), d.pos-1)
			}
			if d.peek() != ']' {
				continue
			}
			d.pos++
			level--
		} else if err := d.element(s); err != nil {
			return err
		}
		for level > 0 {
			c := d.peek()
			if c == ',' {
				d.pos++
				break
			}
			if c != ']' {
				if c == 0 {
					return invalidf("%s: malformed JSON: unexpected end of input in \"data\"", s.label())
				}
				return invalidf("%s: malformed JSON at offset %d in \"data\": expected ',' or ']', found %s",
					s.label(), d.pos, describe(c))
			}
			d.pos++
			level--
		}
		if level == 0 {
			s.finishStrings()
			return nil
		}
	}
}

// prealloc sizes the data buffer for the declared shape, bounded by what the rest of the body
// (avail bytes) can hold at two bytes per element, so that a huge declared shape costs nothing.
func (s *inputState) prealloc(avail int) {
	t := &s.in.Tensor
	if !s.hasShape || t.DataType == tensor.Bytes {
		return
	}
	n, err := tensor.Elements(t.Shape)
	if err != nil {
		return
	}
	n = min(n, int64(avail/2+1))
	t.Data = make([]byte, 0, n*int64(t.DataType.Size()))
}

// finishStrings turns the decoded BYTES elements into the tensor's Strings.
func (s *inputState) finishStrings() {
	t := &s.in.Tensor
	if t.DataType != tensor.Bytes {
		return
	}
	t.Strings = make([][]byte, len(s.strEnds))
	start := 0
	for i, end := range s.strEnds {
		t.Strings[i] = s.strBuf[start:end:end]
		start = end
	}
	s.strBuf, s.strEnds = nil, nil
}

// element parses one data element at pos (not an array) and appends it to the tensor.
func (d *decoder) element(s *inputState) error {
	if d.pos >= len(d.buf) {
		return invalidf("%s: malformed JSON: unexpected end of input in \"data\"", s.label())
	}
	t := &s.in.Tensor
	switch t.DataType {
	case tensor.FP32:
		f, err := d.float(s, 32)
		if err != nil {
			return err
		}
		t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(float32(f)))
	case tensor.FP64:
		f, err := d.float(s, 64)
		if err != nil {
			return err
		}
		t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(f))
	case tensor.FP16, tensor.BF16: // responses only (see data)
		f, err := d.float(s, 32)
		if err != nil {
			return err
		}
		h := float32ToBF16(float32(f))
		if t.DataType == tensor.FP16 {
			h = float32ToHalf(float32(f))
		}
		t.Data = binary.LittleEndian.AppendUint16(t.Data, h)
	case tensor.Bool:
		switch {
		case d.literal("true"):
			t.Data = append(t.Data, 1)
		case d.literal("false"):
			t.Data = append(t.Data, 0)
		default:
			return s.elemErr(d, "expected true or false for BOOL, found %s", describe(d.buf[d.pos]))
		}
	case tensor.Bytes:
		if d.buf[d.pos] != '"' {
			return s.elemErr(d, "expected a string for BYTES, found %s", describe(d.buf[d.pos]))
		}
		var err error
		before := len(s.strBuf)
		if s.strBuf, err = d.appendString(s.strBuf); err != nil {
			return invalidf("%s: \"data\" element %d: %w", s.label(), s.count(), err)
		}
		if n := len(s.strBuf) - before; d.lim.MaxStringBytes > 0 && n > d.lim.MaxStringBytes {
			return limitf("max_string_bytes", "%s: BYTES element %d is %d bytes, more than %d (max_string_bytes)",
				s.label(), s.count(), n, d.lim.MaxStringBytes)
		}
		s.strEnds = append(s.strEnds, len(s.strBuf))
	default:
		return d.integer(s)
	}
	return nil
}

// float parses an FP32 (bits 32) or FP64 element, NaN and infinities included.
func (d *decoder) float(s *inputState, bits int) (float64, error) {
	c := d.buf[d.pos]
	if c == 'N' || c == 'I' || (c == '-' && d.pos+1 < len(d.buf) && d.buf[d.pos+1] == 'I') {
		switch {
		case d.literal("NaN"):
			return math.NaN(), nil
		case d.literal("Infinity"), d.literal("Inf"):
			return math.Inf(1), nil
		case d.literal("-Infinity"), d.literal("-Inf"):
			return math.Inf(-1), nil
		}
	}
	if c != '-' && !isDigit(c) {
		return 0, s.elemErr(d, "expected a number for %s, found %s", s.in.Tensor.DataType, describe(c))
	}
	n, ok := d.number()
	if !ok {
		return 0, s.elemErr(d, "malformed number (offending byte at offset %d)", n.end)
	}
	if f, ok := n.fastFloat(bits); ok {
		d.pos = n.end
		return f, nil
	}
	// ParseFloat does not keep its argument unless it fails, so the conversion does not allocate.
	f, err := strconv.ParseFloat(string(d.buf[d.pos:n.end]), bits)
	if err != nil {
		return 0, s.elemErr(d, "%s is out of range for %s", d.buf[d.pos:n.end], s.in.Tensor.DataType)
	}
	d.pos = n.end
	return f, nil
}

// integer parses an element of an integer datatype: a JSON integer literal within range.
func (d *decoder) integer(s *inputState) error {
	t := &s.in.Tensor
	dt := t.DataType
	c := d.buf[d.pos]
	if c != '-' && !isDigit(c) {
		return s.elemErr(d, "expected an integer for %s, found %s", dt, describe(c))
	}
	n, ok := d.number()
	if !ok {
		return s.elemErr(d, "malformed number (offending byte at offset %d)", n.end)
	}
	end := n.end
	tok := d.buf[d.pos:end]
	if !n.integer {
		return s.elemErr(d, "%s is not an integer (%s data must be integers without fraction or exponent)", tok, dt)
	}
	neg := tok[0] == '-'
	digits := tok
	if neg {
		digits = tok[1:]
	}
	var u uint64
	overflow := false
	for _, c := range digits {
		v := uint64(c - '0')
		if u > (math.MaxUint64-v)/10 {
			overflow = true
			break
		}
		u = u*10 + v
	}
	size := dt.Size()
	bits := uint(8 * size)
	signed := dt == tensor.Int8 || dt == tensor.Int16 || dt == tensor.Int32 || dt == tensor.Int64
	var limit uint64
	switch {
	case !signed && neg && u != 0:
		return s.elemErr(d, "%s is negative, %s is unsigned", tok, dt)
	case !signed:
		limit = math.MaxUint64 >> (64 - bits)
	case neg:
		limit = 1 << (bits - 1)
	default:
		limit = 1<<(bits-1) - 1
	}
	if overflow || u > limit {
		lo, hi := "0", strconv.FormatUint(math.MaxUint64>>(64-bits), 10)
		if signed {
			lo, hi = strconv.FormatInt(-1<<(bits-1), 10), strconv.FormatInt(1<<(bits-1)-1, 10)
		}
		return s.elemErr(d, "%s is out of range for %s [%s, %s]", tok, dt, lo, hi)
	}
	if neg {
		u = -u // two's complement; the low size bytes are the signed value
	}
	switch size {
	case 1:
		t.Data = append(t.Data, byte(u))
	case 2:
		t.Data = binary.LittleEndian.AppendUint16(t.Data, uint16(u))
	case 4:
		t.Data = binary.LittleEndian.AppendUint32(t.Data, uint32(u))
	default:
		t.Data = binary.LittleEndian.AppendUint64(t.Data, u)
	}
	d.pos = end
	return nil
}
