package kserve

import (
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// DecodeRequest parses a JSON inference request. Every error wraps ErrInvalidRequest and says
// which input (or field) is wrong and why; shape errors also wrap tensor.ErrShape and count
// mismatches tensor.ErrDataSize. Each decoded input passes tensor.Check.
//
// Inputs whose data follows the JSON (parameters.binary_data_size, the binary tensor extension)
// are rejected here: such a body needs the Inference-Header-Content-Length header to find the
// end of the JSON part.
func DecodeRequest(body []byte) (*InferRequest, error) {
	req, pending, err := decodeHeader(body)
	if err != nil {
		return nil, err
	}
	if len(pending) > 0 {
		p := pending[0]
		return nil, invalidf("input %q: parameters.binary_data_size=%d says its data follows the JSON in binary form, "+
			"which needs the Inference-Header-Content-Length header", req.Inputs[p.input].Tensor.Name, p.size)
	}
	return req, nil
}

// binaryInput is an input whose data is not in the JSON but in the binary part of the body, in
// the order these appear. A reader of the binary extension fills Tensor.Data (or Strings) of
// req.Inputs[input] from the next size bytes and then runs tensor.Check.
type binaryInput struct {
	input int
	size  int64
}

// decodeHeader parses the JSON part of a request: everything but the data of binary inputs.
func decodeHeader(body []byte) (*InferRequest, []binaryInput, error) {
	d := &decoder{buf: body}
	req, pending, err := d.request()
	if err != nil {
		return nil, nil, err
	}
	if d.skipWS(); d.pos < len(d.buf) {
		return nil, nil, invalidf("malformed JSON at offset %d: found %s after the request object",
			d.pos, describe(d.buf[d.pos]))
	}
	return req, pending, nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidRequest, fmt.Sprintf(format, args...))
}

// decoder reads JSON from buf. depth counts the arrays and objects open at pos.
type decoder struct {
	buf     []byte
	pos     int
	depth   int
	scratch []byte
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
	if d.depth > MaxDepth {
		return invalidf("JSON nesting deeper than %d at offset %d", MaxDepth, d.pos)
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
		return "", fmt.Errorf("%w: %w", ErrInvalidRequest, err)
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
	return nil, invalidf("%s\"parameters\" must be an object, found %s", owner, describe(d.peek()))
}

// request reads the top-level object.
func (d *decoder) request() (*InferRequest, []binaryInput, error) {
	if d.peek() != '{' {
		return nil, nil, d.expected("the request object")
	}
	req := &InferRequest{}
	var pending []binaryInput
	var seen fieldSet
	names := map[string]bool{}
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
			return invalidf("\"id\" must be a string, found %s", describe(d.peek()))
		case "parameters":
			var err error
			req.Parameters, err = d.parameters("")
			return err
		case "inputs":
			if d.peek() != '[' {
				return invalidf("\"inputs\" must be an array, found %s", describe(d.peek()))
			}
			sawInputs = true
			return d.array(func(i int) error {
				in, size, err := d.input(i)
				if err != nil {
					return err
				}
				if names[in.Tensor.Name] {
					return invalidf("input %q appears more than once", in.Tensor.Name)
				}
				names[in.Tensor.Name] = true
				if size >= 0 {
					pending = append(pending, binaryInput{input: len(req.Inputs), size: size})
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
		return invalidf("\"outputs\" must be an array, found %s", describe(d.peek()))
	}
	names := map[string]bool{}
	return d.array(func(i int) error {
		if d.peek() != '{' {
			return invalidf("outputs[%d] must be an object, found %s", i, describe(d.peek()))
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
					return invalidf("%s: \"name\" must be a string, found %s", label(), describe(d.peek()))
				}
				hasName = true
				var err error
				out.Name, err = d.string()
				return err
			case "parameters":
				var err error
				out.Parameters, err = d.parameters(label() + ": ")
				return err
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
		if names[out.Name] {
			return invalidf("output %q is requested more than once", out.Name)
		}
		names[out.Name] = true
		req.Outputs = append(req.Outputs, out)
		return nil
	})
}
