package kserve

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/inferd/inferd/tensor"
)

// The client side of the protocol, for inferd perf and for tests: encoding requests and
// decoding responses, with the server side's rules read the other way round.

// EncodeRequest appends the encoded request to dst and returns the extended buffer with the
// length of its JSON part, headerLength (-1 when the whole body is JSON):
//
//	{"id"?,"parameters"?,"inputs":[{"name","datatype","shape","parameters"?,"data"}],"outputs"?:[{"name","parameters"?}]}
//
// With binary, every input travels in binary form (parameters.binary_data_size, its bytes after
// the JSON) and the request parameter binary_data_output is true, so that the server answers in
// binary too. Without it, data is flat JSON, except for FP16 and BF16 inputs, which the protocol
// accepts in binary form only: they are always binary. BYTES elements that are not valid UTF-8
// become \ufffd in JSON; send them binary to keep the bytes. A binary_data_size among an input's
// Parameters is ignored: the encoder writes its own. When headerLength is not -1, the body goes
// with the Inference-Header-Content-Length header. The buffer grows once.
func EncodeRequest(dst []byte, r *InferRequest, binary bool) (body []byte, headerLength int) {
	size, binSize, anyBinary := 64, 0, false
	for i := range r.Inputs {
		t := &r.Inputs[i].Tensor
		size += 64 + len(t.Name)
		if inputBinary(t, binary) {
			binSize += binaryLen(t)
			anyBinary = true
		} else {
			size += estimateData(t)
		}
	}
	for _, o := range r.Outputs {
		size += 16 + len(o.Name)
	}
	dst = slices.Grow(dst, size+binSize)

	start := len(dst)
	dst = append(dst, '{')
	// Each member is written with a leading comma, the first one's removed once they are known.
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendString(dst, r.ID)
	}
	if binary {
		dst = appendParams(dst, r.Parameters, "binary_data_output", []byte("true"))
	} else if len(r.Parameters) > 0 {
		dst = append(dst, `,"parameters":`...)
		dst = appendAny(dst, r.Parameters)
	}
	dst = append(dst, `,"inputs":[`...)
	dst = append(dst[:start+1], dst[start+2:]...)
	for i := range r.Inputs {
		if i > 0 {
			dst = append(dst, ',')
		}
		in := &r.Inputs[i]
		dst = appendTensor(dst, &in.Tensor, in.Parameters, inputBinary(&in.Tensor, binary))
	}
	dst = append(dst, ']')
	if len(r.Outputs) > 0 {
		dst = append(dst, `,"outputs":[`...)
		for i, o := range r.Outputs {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"name":`...)
			dst = appendString(dst, o.Name)
			if len(o.Parameters) > 0 {
				dst = append(dst, `,"parameters":`...)
				dst = appendAny(dst, o.Parameters)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, '}')
	if !anyBinary {
		return dst, -1
	}
	headerLength = len(dst) - start
	for i := range r.Inputs {
		if t := &r.Inputs[i].Tensor; inputBinary(t, binary) {
			dst = appendBinary(dst, t)
		}
	}
	return dst, headerLength
}

// inputBinary reports whether EncodeRequest sends t in binary form.
func inputBinary(t *tensor.Tensor, binary bool) bool {
	return binary || t.DataType == tensor.FP16 || t.DataType == tensor.BF16
}

// DecodeResponse parses an inference response, JSON or with binary outputs: headerLength is the
// value of its Inference-Header-Content-Length header, -1 when it has none. Outputs with
// parameters.binary_data_size take their bytes from after the JSON part, in order, and are
// marked in Binary (nil when there are none); the others carry JSON data, where FP16 and BF16
// may be numbers (inferd writes them so), rounded to nearest. Unknown top-level fields are
// skipped; an error body ({"error": ...}) is an error that quotes it.
//
// As with DecodeLimited, binary outputs alias body. Every error wraps ErrInvalidResponse.
func DecodeResponse(body []byte, headerLength int) (*InferResponse, error) {
	d := &decoder{response: true}
	w := newWire([][]byte{body})
	var resp *InferResponse
	pending, err := d.parseBody(w, headerLength, func() ([]binaryInput, error) {
		var err error
		var pending []binaryInput
		resp, pending, err = d.responseObject()
		return pending, err
	})
	if err == nil {
		err = fillBinary(w, headerLength, pending, 0, func(i int) *tensor.Tensor { return &resp.Outputs[i] })
	}
	if err != nil {
		var de *decodeError
		if errors.As(err, &de) {
			de.sentinel = ErrInvalidResponse
		}
		return nil, err
	}
	if len(pending) > 0 {
		resp.Binary = make([]bool, len(resp.Outputs))
		for _, p := range pending {
			resp.Binary[p.index] = true
		}
	}
	return resp, nil
}

// responseObject reads the top-level object of a response.
func (d *decoder) responseObject() (*InferResponse, []binaryInput, error) {
	if d.peek() != '{' {
		return nil, nil, d.expected("the response object")
	}
	resp := &InferResponse{}
	var pending []binaryInput
	var seen fieldSet
	names := map[string]bool{}
	sawOutputs := false
	err := d.object(func(key string) error {
		if !seen.add(key) {
			return invalidf("duplicate field %q in the response", key)
		}
		var err error
		switch key {
		case "model_name":
			resp.ModelName, err = d.optionalString(key)
		case "model_version":
			resp.ModelVersion, err = d.optionalString(key)
		case "id":
			resp.ID, err = d.optionalString(key)
		case "parameters":
			resp.Parameters, err = d.parameters("")
		case "error":
			msg, err := d.optionalString(key)
			if err != nil {
				return err
			}
			return invalidf("the body is an error response: %s", msg)
		case "outputs":
			if d.peek() != '[' {
				return invalidf("\"outputs\" must be an array, found %s", d.describeNext())
			}
			sawOutputs = true
			return d.array(func(i int) error {
				out, size, err := d.input(i)
				if err != nil {
					return err
				}
				if names[out.Tensor.Name] {
					return invalidf("output %q appears more than once", out.Tensor.Name)
				}
				names[out.Tensor.Name] = true
				if size >= 0 {
					pending = append(pending, binaryInput{index: len(resp.Outputs), size: size, label: fmt.Sprintf("output %q", out.Tensor.Name)})
				}
				resp.Outputs = append(resp.Outputs, out.Tensor)
				return nil
			})
		default: // a client reads what it knows
			_, err = d.value()
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if !sawOutputs {
		return nil, nil, invalidf("missing \"outputs\"")
	}
	return resp, pending, nil
}

// optionalString reads a string field; null is the empty string.
func (d *decoder) optionalString(key string) (string, error) {
	if d.peek() == '"' {
		return d.string()
	}
	if null, err := d.null(); null || err != nil {
		return "", err
	}
	return "", invalidf("%q must be a string, found %s", key, d.describeNext())
}

// ErrorMessage is the message of an error body ({"error": msg}), or the start of any other
// body (200 bytes, then "..."), for a client to quote.
func ErrorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	const limit = 200
	if len(body) > limit {
		return string(body[:limit]) + "..."
	}
	return string(body)
}
