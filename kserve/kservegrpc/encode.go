package kservegrpc

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tensor"
)

// EncodeResponse builds the response to request id of a model version with these outputs,
// each output's data in raw_output_contents. Fixed-size outputs are not copied: the response
// refers to the outputs' buffers, which must stay untouched until it is sent.
func EncodeResponse(model, version, id string, outputs []tensor.Tensor) *kservepb.ModelInferResponse {
	resp := &kservepb.ModelInferResponse{
		ModelName: model, ModelVersion: version, Id: id,
		Outputs:           make([]*kservepb.ModelInferResponse_InferOutputTensor, len(outputs)),
		RawOutputContents: make([][]byte, len(outputs)),
	}
	for i := range outputs {
		t := &outputs[i]
		resp.Outputs[i] = &kservepb.ModelInferResponse_InferOutputTensor{Name: t.Name, Datatype: string(t.DataType), Shape: t.Shape}
		resp.RawOutputContents[i] = rawBytes(t)
	}
	return resp
}

// rawBytes is t's data in raw form: Data itself for fixed-size types (BOOL bytes other than 0
// and 1 made 1, in a copy), the length-prefixed elements for BYTES.
func rawBytes(t *tensor.Tensor) []byte {
	switch t.DataType {
	case tensor.Bytes:
		n := 4 * len(t.Strings)
		for _, s := range t.Strings {
			n += len(s)
		}
		b := make([]byte, 0, n)
		for _, s := range t.Strings {
			b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
			b = append(b, s...)
		}
		return b
	case tensor.Bool:
		for i, c := range t.Data {
			if c > 1 {
				b := append([]byte(nil), t.Data...)
				for j := i; j < len(b); j++ {
					b[j] = min(b[j], 1)
				}
				return b
			}
		}
	}
	if t.Data == nil {
		return []byte{}
	}
	return t.Data
}

// EncodeRequest builds a request of the given inputs for a client: raw puts every input's data
// in raw_input_contents, otherwise each goes in its typed contents field (FP16 and BF16 inputs
// make the whole request raw, as they have no typed field). Fixed-size raw data is not copied.
func EncodeRequest(req *kserve.InferRequest, model, version string, raw bool) (*kservepb.ModelInferRequest, error) {
	m := &kservepb.ModelInferRequest{ModelName: model, ModelVersion: version, Id: req.ID,
		Inputs: make([]*kservepb.ModelInferRequest_InferInputTensor, len(req.Inputs))}
	var err error
	if m.Parameters, err = EncodeParameters(req.Parameters); err != nil {
		return nil, err
	}
	for _, in := range req.Inputs {
		if typedField(in.Tensor.DataType) == "" {
			raw = true
		}
	}
	for i := range req.Inputs {
		t := &req.Inputs[i].Tensor
		p, err := EncodeParameters(req.Inputs[i].Parameters)
		if err != nil {
			return nil, err
		}
		in := &kservepb.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: string(t.DataType), Shape: t.Shape, Parameters: p}
		if raw {
			m.RawInputContents = append(m.RawInputContents, rawBytes(t))
		} else {
			in.Contents = typedContents(t)
		}
		m.Inputs[i] = in
	}
	for _, o := range req.Outputs {
		p, err := EncodeParameters(o.Parameters)
		if err != nil {
			return nil, err
		}
		m.Outputs = append(m.Outputs, &kservepb.ModelInferRequest_InferRequestedOutputTensor{Name: o.Name, Parameters: p})
	}
	return m, nil
}

// typedContents is t's data in the contents field of its datatype (which has one).
func typedContents(t *tensor.Tensor) *kservepb.InferTensorContents {
	c := &kservepb.InferTensorContents{}
	size := t.DataType.Size()
	n := 0
	if size > 0 {
		n = len(t.Data) / size
	}
	le := func(j int) uint64 {
		var v uint64
		for k := range size {
			v |= uint64(t.Data[j*size+k]) << (8 * k)
		}
		return v
	}
	switch t.DataType {
	case tensor.Bytes:
		c.BytesContents = t.Strings
	case tensor.Bool:
		for j := range n {
			c.BoolContents = append(c.BoolContents, t.Data[j] != 0)
		}
	case tensor.Int8:
		for j := range n {
			c.IntContents = append(c.IntContents, int32(int8(le(j))))
		}
	case tensor.Int16:
		for j := range n {
			c.IntContents = append(c.IntContents, int32(int16(le(j))))
		}
	case tensor.Int32:
		for j := range n {
			c.IntContents = append(c.IntContents, int32(le(j)))
		}
	case tensor.Int64:
		for j := range n {
			c.Int64Contents = append(c.Int64Contents, int64(le(j)))
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32:
		for j := range n {
			c.UintContents = append(c.UintContents, uint32(le(j)))
		}
	case tensor.Uint64:
		for j := range n {
			c.Uint64Contents = append(c.Uint64Contents, le(j))
		}
	case tensor.FP32:
		for j := range n {
			c.Fp32Contents = append(c.Fp32Contents, math.Float32frombits(uint32(le(j))))
		}
	case tensor.FP64:
		for j := range n {
			c.Fp64Contents = append(c.Fp64Contents, math.Float64frombits(le(j)))
		}
	}
	return c
}

// EncodeParameters converts parameters to the protocol's: bool, string, float64 and the signed
// and unsigned integer types have a field each, nil is a parameter without a value; other
// values are an error.
func EncodeParameters(params map[string]any) (map[string]*kservepb.InferParameter, error) {
	if len(params) == 0 {
		return nil, nil
	}
	out := make(map[string]*kservepb.InferParameter, len(params))
	for k, v := range params {
		p := &kservepb.InferParameter{}
		switch v := v.(type) {
		case nil: // a parameter without a value, as DecodeRequest reads one
		case bool:
			p.ParameterChoice = &kservepb.InferParameter_BoolParam{BoolParam: v}
		case string:
			p.ParameterChoice = &kservepb.InferParameter_StringParam{StringParam: v}
		case float64:
			p.ParameterChoice = &kservepb.InferParameter_DoubleParam{DoubleParam: v}
		case int:
			p.ParameterChoice = &kservepb.InferParameter_Int64Param{Int64Param: int64(v)}
		case int64:
			p.ParameterChoice = &kservepb.InferParameter_Int64Param{Int64Param: v}
		case uint64:
			p.ParameterChoice = &kservepb.InferParameter_Uint64Param{Uint64Param: v}
		default:
			return nil, fmt.Errorf("parameter %q: %T has no protocol type", k, v)
		}
		out[k] = p
	}
	return out, nil
}

// DecodeResponse reads a response's outputs, from raw_output_contents when it has them, else
// from each output's typed contents. Errors wrap kserve.ErrInvalidResponse.
func DecodeResponse(m *kservepb.ModelInferResponse) ([]tensor.Tensor, error) {
	raw := m.GetRawOutputContents()
	if len(raw) > 0 && len(raw) != len(m.GetOutputs()) {
		return nil, fmt.Errorf("%w: raw_output_contents has %d entries for %d outputs", kserve.ErrInvalidResponse, len(raw), len(m.GetOutputs()))
	}
	out := make([]tensor.Tensor, len(m.GetOutputs()))
	for i, o := range m.GetOutputs() {
		dt, err := tensor.ParseDataType(o.GetDatatype())
		if err != nil {
			return nil, fmt.Errorf("%w: output %q: %w", kserve.ErrInvalidResponse, o.GetName(), err)
		}
		n, err := tensor.Elements(o.GetShape())
		if err != nil {
			return nil, fmt.Errorf("%w: output %q: %w", kserve.ErrInvalidResponse, o.GetName(), err)
		}
		t := tensor.Tensor{Name: o.GetName(), DataType: dt, Shape: o.GetShape()}
		label := fmt.Sprintf("output %q", o.GetName())
		if len(raw) > 0 {
			err = decodeRaw(&t, raw[i], n, label, 0)
		} else {
			err = decodeTyped(&t, o.GetContents(), n, label, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", kserve.ErrInvalidResponse, err)
		}
		out[i] = t
	}
	return out, nil
}
