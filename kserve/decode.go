package kserve

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/inferd/inferd/tensor"
)

// DecodeLimited parses an inference request under the given limits. body is the request body
// in the parts it was read in: they follow each other on the wire, but a reader may place them
// apart in memory so that each binary tensor starts aligned (see BinarySizes); one part, the
// whole body, is the plain case. headerLength is the value of the Inference-Header-Content-Length
// header (ParseHeaderLength), -1 when the request has none.
//
// Without the header the body is one JSON object, and an input with parameters.binary_data_size
// is an error: its data would follow the JSON, and only the header says where the JSON ends.
// With the header, the body's first headerLength bytes are the JSON object (trailing whitespace
// allowed) and the rest is the binary data of the inputs that have parameters.binary_data_size,
// back to back in the order they appear (the binary tensor data extension); other inputs carry
// JSON "data" as usual. The binary data must be exactly as long as their sizes add up to.
//
// The request aliases body: the Data of every binary input that lies within one part, and each
// element of a binary BYTES input, is a sub-slice of it (capped, so appending to one never
// overwrites the next), not a copy; data split across parts is copied. The caller must not
// modify or reuse body while the request is in use. Such Data is as aligned as the reader
// placed it. Offsets in errors count bytes on the wire, whatever the parts.
//
// Every error wraps ErrInvalidRequest and says which input (or field) is wrong and why; shape
// errors also wrap tensor.ErrShape and count or size mismatches tensor.ErrDataSize. Each
// decoded input passes tensor.Check. Names are not checked for duplicates: that, like every
// check against a model's signature, is the model's (models.Version.CheckRequest).
func DecodeLimited(body [][]byte, headerLength int, lim Limits) (*InferRequest, error) {
	if lim.MaxDepth <= 0 || lim.MaxDepth > MaxDepth {
		lim.MaxDepth = MaxDepth
	}
	d := &decoder{lim: lim}
	w := newWire(body)
	var req *InferRequest
	pending, err := d.parseBody(w, headerLength, func() ([]binaryInput, error) {
		var err error
		var pending []binaryInput
		req, pending, err = d.request()
		return pending, err
	})
	if err != nil {
		return nil, err
	}
	err = fillBinary(w, headerLength, pending, lim.MaxStringBytes, func(i int) *tensor.Tensor { return &req.Inputs[i].Tensor })
	if err != nil {
		return nil, err
	}
	return req, nil
}

// BinarySizes reads the JSON part of a request with binary tensor data (the body's first
// Inference-Header-Content-Length bytes) and returns the binary_data_size of each tensor whose
// bytes follow it, in order, so that a reader can place each tensor's bytes at an aligned
// address before they arrive. ok is false when header is not a valid JSON part of a request
// (under no limits but MaxDepth); the reader then reads the rest as it comes, and DecodeLimited
// reports what is wrong.
func BinarySizes(header []byte) (sizes []int64, ok bool) {
	d := &decoder{lim: Limits{MaxDepth: MaxDepth}}
	pending, err := d.parseBody(newWire([][]byte{header}), len(header), func() ([]binaryInput, error) {
		_, pending, err := d.request()
		return pending, err
	})
	if err != nil {
		return nil, false
	}
	sizes = make([]int64, len(pending))
	for i, p := range pending {
		sizes[i] = p.size
	}
	return sizes, true
}

// wire is a body in the parts it was read in; offsets into it count bytes on the wire.
type wire struct {
	parts [][]byte
	size  int
}

func newWire(parts [][]byte) wire {
	w := wire{parts: parts}
	for _, p := range parts {
		w.size += len(p)
	}
	return w
}

// span returns the n bytes at wire offset off (the caller has checked that they lie in the
// body), capped: a sub-slice of the part that holds them all, else a copy gathered from the
// parts.
func (w wire) span(off, n int) []byte {
	for i, p := range w.parts {
		if off > len(p) || off == len(p) && n > 0 {
			off -= len(p)
			continue
		}
		if off+n <= len(p) {
			return p[off : off+n : off+n]
		}
		out := make([]byte, 0, n)
		for _, q := range w.parts[i:] {
			out = append(out, q[off:min(len(q), off+n-len(out))]...)
			off = 0
		}
		return out
	}
	return []byte{}
}

// binaryInput is an input (or output, in a response) whose data is not in the JSON but in the
// binary part of the body, in the order these appear. fillBinary gives the tensor at index i
// (of the request's inputs or the response's outputs) its size bytes.
type binaryInput struct {
	index int
	size  int64
	label string // input "x", for errors
}

// parseBody runs parse, which reads the top-level JSON object, over the JSON part of body: all
// of it when headerLength is -1, else its first headerLength bytes. It checks that nothing but
// whitespace follows the object in that part, and that without the header no tensor waits for
// binary data.
func (d *decoder) parseBody(body wire, headerLength int, parse func() ([]binaryInput, error)) ([]binaryInput, error) {
	switch {
	case headerLength == -1:
		d.buf = body.span(0, body.size)
	case headerLength < 0:
		return nil, invalidf("%s %d is negative", HeaderContentLength, headerLength)
	case headerLength > body.size:
		return nil, invalidf("%s %d is past the end of the %d-byte body", HeaderContentLength, headerLength, body.size)
	default:
		d.buf = body.span(0, headerLength)
	}
	pending, err := parse()
	if err != nil {
		var de *decodeError
		if headerLength >= 0 && d.pos >= len(d.buf) && errors.As(err, &de) {
			de.detail = fmt.Errorf("%w (the JSON part is the first %d bytes, per %s)", de.detail, headerLength, HeaderContentLength)
		}
		return nil, err
	}
	// Checked before trailing bytes: the binary data would be those.
	if headerLength == -1 && len(pending) > 0 {
		p := pending[0]
		return nil, invalidf("%s: parameters.binary_data_size=%d says its data follows the JSON in binary form, "+
			"which needs the %s header", p.label, p.size, HeaderContentLength)
	}
	if d.skipWS(); d.pos < len(d.buf) {
		if headerLength >= 0 {
			return nil, invalidf("the JSON part (the first %d bytes, per %s) does not end with the %s object: found %s at offset %d",
				headerLength, HeaderContentLength, d.kind(), describe(d.buf[d.pos]), d.pos)
		}
		return nil, invalidf("malformed JSON at offset %d: found %s after the %s object",
			d.pos, describe(d.buf[d.pos]), d.kind())
	}
	return pending, nil
}

// invalidf returns a decoding error; format may wrap causes with %w (tensor.ErrShape, ...).
func invalidf(format string, args ...any) error {
	return &decodeError{sentinel: ErrInvalidRequest, detail: fmt.Errorf(format, args...)}
}

// decodeError is the error of every decoding function: the sentinel of the side whose body is
// malformed (ErrInvalidRequest; DecodeResponse relabels its errors ErrInvalidResponse) and the
// detail, which may wrap further sentinels.
type decodeError struct {
	sentinel error
	detail   error
}

func (e *decodeError) Error() string   { return e.sentinel.Error() + ": " + e.detail.Error() }
func (e *decodeError) Unwrap() []error { return []error{e.sentinel, e.detail} }

// decoder reads JSON from buf. depth counts the arrays and objects open at pos.
type decoder struct {
	buf     []byte
	pos     int
	depth   int
	scratch []byte
	// response is set when reading an inference response: its tensors are outputs, and FP16
	// and BF16 data may be JSON numbers (inferd writes them so).
	response bool
	lim      Limits
}

func (d *decoder) maxDepth() int {
	if d.lim.MaxDepth > 0 {
		return d.lim.MaxDepth
	}
	return MaxDepth
}

// kind names the object being read, for errors.
func (d *decoder) kind() string {
	if d.response {
		return "response"
	}
	return "request"
}

// tensorKind names the tensors being read, for errors.
func (d *decoder) tensorKind() string {
	if d.response {
		return "output"
	}
	return "input"
}

func (d *decoder) skipWS() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, or 0 at the end of the input.
func (d *decoder) peek() byte {
	d.skipWS()
	if d.pos >= len(d.buf) {
		return 0
	}
	return d.buf[d.pos]
}

// expected reports a syntax error at pos.
func (d *decoder) expected(what string) error {
	if d.pos >= len(d.buf) {
		return invalidf("malformed JSON: unexpected end of input at offset %d, expected %s", d.pos, what)
	}
	return invalidf("malformed JSON at offset %d: expected %s, found %s", d.pos, what, describe(d.buf[d.pos]))
}

// describeNext names what comes next (after whitespace), for error messages.
func (d *decoder) describeNext() string {
	if d.peek() == 0 && d.pos >= len(d.buf) {
		return "the end of the input"
	}
	return describe(d.buf[d.pos])
}

// describe names the JSON value that starts with c, for error messages.
func describe(c byte) string {
	switch {
	case c == '"':
		return "a string"
	case c == '[':
		return "an array"
	case c == '{':
		return "an object"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || isDigit(c):
		return "a number"
	case c >= 0x20 && c < 0x7f:
		return fmt.Sprintf("%q", c)
	default:
		return fmt.Sprintf("byte %#02x", c)
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (d *decoder) enter() error {
	d.depth++
	if d.depth > d.maxDepth() {
		return limitf("max_depth", "JSON nesting deeper than %d at offset %d (max_depth)", d.maxDepth(), d.pos)
	}
	return nil
}

// object reads the object at pos (the caller has seen '{'), calling member with pos at each
// member's value; member must consume the value.
func (d *decoder) object(member func(key string) error) error {
	d.pos++
	if err := d.enter(); err != nil {
		return err
	}
	if d.peek() == '}' {
		d.pos++
		d.depth--
		return nil
	}
	for {
		if d.peek() != '"' {
			return d.expected("a string (object key)")
		}
		key, err := d.string()
		if err != nil {
			return err
		}
		if d.peek() != ':' {
			return d.expected("':' after object key")
		}
		d.pos++
		d.skipWS()
		if err := member(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.depth--
			return nil
		default:
			return d.expected("',' or '}' after object member")
		}
	}
}

// array reads the array at pos (the caller has seen '['), calling elem with pos at each element;
// elem must consume the element.
func (d *decoder) array(elem func(i int) error) error {
	d.pos++
	if err := d.enter(); err != nil {
		return err
	}
	if d.peek() == ']' {
		d.pos++
		d.depth--
		return nil
	}
	for i := 0; ; i++ {
		d.skipWS()
		if err := elem(i); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case ']':
			d.pos++
			d.depth--
			return nil
		default:
			return d.expected("',' or ']' after array element")
		}
	}
}

// string reads the string at pos (the caller has seen '"').
func (d *decoder) string() (string, error) {
	var err error
	if d.scratch, err = d.appendString(d.scratch[:0]); err != nil {
		return "", invalidf("%w", err)
	}
	return string(d.scratch), nil
}

// appendString decodes the string at pos (the caller has seen '"') and appends its UTF-8 bytes
// to dst. Lone surrogate escapes become U+FFFD, as in encoding/json; raw invalid UTF-8 is an
// error. Its errors do not wrap ErrInvalidRequest: callers add context and the sentinel.
func (d *decoder) appendString(dst []byte) ([]byte, error) {
	start := d.pos
	d.pos++
	for {
		i := d.pos
		for i < len(d.buf) {
			c := d.buf[i]
			if c == '"' || c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
				break
			}
			i++
		}
		dst = append(dst, d.buf[d.pos:i]...)
		d.pos = i
		if i >= len(d.buf) {
			return dst, fmt.Errorf("malformed JSON: unterminated string starting at offset %d", start)
		}
		switch c := d.buf[i]; {
		case c == '"':
			d.pos++
			return dst, nil
		case c == '\\':
			var err error
			if dst, err = d.appendEscape(dst); err != nil {
				return dst, err
			}
		case c < 0x20:
			return dst, fmt.Errorf("malformed JSON at offset %d: control character %#02x in a string must be escaped", i, c)
		default:
			r, size := utf8.DecodeRune(d.buf[i:])
			if r == utf8.RuneError && size == 1 {
				return dst, fmt.Errorf("malformed JSON at offset %d: invalid UTF-8 in a string", i)
			}
			dst = append(dst, d.buf[i:i+size]...)
			d.pos += size
		}
	}
}

// appendEscape decodes the escape sequence at pos (a backslash).
func (d *decoder) appendEscape(dst []byte) ([]byte, error) {
	at := d.pos
	if at+1 >= len(d.buf) {
		return dst, fmt.Errorf("malformed JSON: unterminated escape at offset %d", at)
	}
	d.pos += 2
	switch c := d.buf[at+1]; c {
	case '"', '\\', '/':
		return append(dst, c), nil
	case 'b':
		return append(dst, '\b'), nil
	case 'f':
		return append(dst, '\f'), nil
	case 'n':
		return append(dst, '\n'), nil
	case 'r':
		return append(dst, '\r'), nil
	case 't':
		return append(dst, '\t'), nil
	case 'u':
		r, ok := d.hex4()
		if !ok {
			return dst, fmt.Errorf("malformed JSON at offset %d: \\u must be followed by 4 hex digits", at)
		}
		if utf16.IsSurrogate(r) {
			r2 := utf8.RuneError
			if d.pos+6 <= len(d.buf) && d.buf[d.pos] == '\\' && d.buf[d.pos+1] == 'u' {
				if v, ok := hexValue(d.buf[d.pos+2 : d.pos+6]); ok {
					r2 = v
				}
			}
			if r = utf16.DecodeRune(r, r2); r != utf8.RuneError {
				d.pos += 6
			}
		}
		return utf8.AppendRune(dst, r), nil
	default:
		return dst, fmt.Errorf("malformed JSON at offset %d: invalid escape \\%c", at, c)
	}
}

// hex4 reads 4 hex digits at pos.
func (d *decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.buf) {
		return 0, false
	}
	v, ok := hexValue(d.buf[d.pos : d.pos+4])
	if ok {
		d.pos += 4
	}
	return v, ok
}

func hexValue(b []byte) (rune, bool) {
	var v rune
	for _, c := range b {
		switch {
		case isDigit(c):
			v = v<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// literal consumes word at pos if it is there.
func (d *decoder) literal(word string) bool {
	if len(d.buf)-d.pos >= len(word) && string(d.buf[d.pos:d.pos+len(word)]) == word {
		d.pos += len(word)
		return true
	}
	return false
}

// null consumes a null at pos. It fails on a malformed literal that starts like null, so that
// callers can report any other value as having the wrong type.
func (d *decoder) null() (bool, error) {
	if d.peek() != 'n' {
		return false, nil
	}
	if !d.literal("null") {
		return false, d.expected("a JSON value")
	}
	return true, nil
}

// value reads any JSON value the way encoding/json decodes into an any.
func (d *decoder) value() (any, error) {
	switch c := d.peek(); {
	case c == '{':
		m := map[string]any{}
		err := d.object(func(key string) error {
			if _, dup := m[key]; dup {
				return invalidf("duplicate key %q in an object at offset %d", key, d.pos)
			}
			v, err := d.value()
			m[key] = v
			return err
		})
		return m, err
	case c == '[':
		s := []any{}
		err := d.array(func(int) error {
			v, err := d.value()
			s = append(s, v)
			return err
		})
		return s, err
	case c == '"':
		return d.string()
	case c == '-' || isDigit(c):
		n, ok := d.number()
		if !ok {
			d.pos = n.end
			return nil, d.expected("a digit (malformed number)")
		}
		end := n.end
		f, err := strconv.ParseFloat(string(d.buf[d.pos:end]), 64)
		if err != nil {
			return nil, invalidf("number %s at offset %d is out of range", d.buf[d.pos:end], d.pos)
		}
		d.pos = end
		return f, nil
	case d.literal("true"):
		return true, nil
	case d.literal("false"):
		return false, nil
	case d.literal("null"):
		return nil, nil
	default:
		return nil, d.expected("a JSON value")
	}
}

// parameters reads a parameters object; null is no parameters. owner prefixes errors.
func (d *decoder) parameters(owner string) (map[string]any, error) {
	if d.peek() == '{' {
		v, err := d.value()
		if err != nil {
			return nil, err
		}
		return v.(map[string]any), nil
	}
	if null, err := d.null(); null || err != nil {
		return nil, err
	}
	return nil, invalidf("%s\"parameters\" must be an object, found %s", owner, d.describeNext())
}

// request reads the top-level object.
func (d *decoder) request() (*InferRequest, []binaryInput, error) {
	if d.peek() != '{' {
		return nil, nil, d.expected("the request object")
	}
	req := &InferRequest{}
	var pending []binaryInput
	var seen fieldSet
	sawInputs := false
	err := d.object(func(key string) error {
		if !seen.add(key) {
			return invalidf("duplicate field %q in the request", key)
		}
		switch key {
		case "id":
			if d.peek() == '"' {
				var err error
				req.ID, err = d.string()
				return err
			}
			if null, err := d.null(); null || err != nil {
				return err
			}
			return invalidf("\"id\" must be a string, found %s", d.describeNext())
		case "parameters":
			var err error
			if req.Parameters, err = d.parameters(""); err != nil {
				return err
			}
			return checkBoolParam(req.Parameters, "binary_data_output", "")
		case "inputs":
			if d.peek() != '[' {
				return invalidf("\"inputs\" must be an array, found %s", d.describeNext())
			}
			sawInputs = true
			return d.array(func(i int) error {
				if d.lim.MaxInputs > 0 && i >= d.lim.MaxInputs {
					return limitf("max_inputs", "more than %d inputs (max_inputs)", d.lim.MaxInputs)
				}
				in, size, err := d.input(i)
				if err != nil {
					return err
				}
				if size >= 0 {
					pending = append(pending, binaryInput{index: len(req.Inputs), size: size, label: fmt.Sprintf("input %q", in.Tensor.Name)})
				}
				req.Inputs = append(req.Inputs, in)
				return nil
			})
		case "outputs":
			return d.outputs(req)
		default:
			return invalidf("unknown field %q in the request (allowed: id, parameters, inputs, outputs)", key)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if !sawInputs {
		return nil, nil, invalidf("missing \"inputs\"")
	}
	return req, pending, nil
}

// fieldSet detects duplicate keys in an object whose keys are a small fixed set.
type fieldSet []string

// add records key and reports false if it was already there.
func (s *fieldSet) add(key string) bool {
	for _, k := range *s {
		if k == key {
			return false
		}
	}
	*s = append(*s, key)
	return true
}

func (d *decoder) outputs(req *InferRequest) error {
	if d.peek() != '[' {
		if null, err := d.null(); null || err != nil {
			return err
		}
		return invalidf("\"outputs\" must be an array, found %s", d.describeNext())
	}
	return d.array(func(i int) error {
		if d.peek() != '{' {
			return invalidf("outputs[%d] must be an object, found %s", i, d.describeNext())
		}
		var out RequestedOutput
		var seen fieldSet
		hasName := false
		label := func() string {
			if hasName {
				return fmt.Sprintf("output %q", out.Name)
			}
			return fmt.Sprintf("outputs[%d]", i)
		}
		err := d.object(func(key string) error {
			if !seen.add(key) {
				return invalidf("%s: duplicate field %q", label(), key)
			}
			switch key {
			case "name":
				if d.peek() != '"' {
					return invalidf("%s: \"name\" must be a string, found %s", label(), d.describeNext())
				}
				hasName = true
				var err error
				out.Name, err = d.string()
				return err
			case "parameters":
				var err error
				if out.Parameters, err = d.parameters(label() + ": "); err != nil {
					return err
				}
				return checkBoolParam(out.Parameters, "binary_data", label()+": ")
			default:
				return invalidf("%s: unknown field %q (allowed: name, parameters)", label(), key)
			}
		})
		if err != nil {
			return err
		}
		if !hasName || out.Name == "" {
			return invalidf("outputs[%d]: missing \"name\"", i)
		}
		req.Outputs = append(req.Outputs, out)
		return nil
	})
}
