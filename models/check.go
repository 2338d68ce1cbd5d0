package models

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/inferd/inferd/tensor"
)

// CheckRequest validates a request's inputs and requested outputs against the version's
// signature, so that every problem is answered precisely before the engine runs. Errors wrap
// ErrInvalidInput.
func (v *Version) CheckRequest(inputs []tensor.Tensor, outputs []string) error {
	if len(inputs) == 0 {
		return fmt.Errorf("%w: request has no inputs; model %q expects %s", ErrInvalidInput, v.Model, names(v.Signature.Inputs))
	}
	seen := make(map[string]bool, len(inputs))
	batch := int64(-1)
	// Without batching, a leading dimension that every input leaves dynamic is still taken as
	// the batch: the inputs must agree on it, or ONNX Runtime would broadcast one against the
	// other and answer for a batch nobody sent.
	leadingDynamic := len(v.Signature.Inputs) > 1
	for _, s := range v.Signature.Inputs {
		leadingDynamic = leadingDynamic && len(s.Shape) > 0 && s.Shape[0] < 0
	}
	for i := range inputs {
		t := &inputs[i]
		spec, ok := v.Signature.Input(t.Name)
		if !ok {
			return fmt.Errorf("%w: unexpected input %q; model %q expects %s", ErrInvalidInput, t.Name, v.Model, names(v.Signature.Inputs))
		}
		if seen[t.Name] {
			return fmt.Errorf("%w: input %q given more than once", ErrInvalidInput, t.Name)
		}
		seen[t.Name] = true
		if err := spec.Accepts(t.DataType, t.Shape); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidInput, err)
		}
		if err := t.Check(); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidInput, err)
		}
		if t.DataType == tensor.Bytes {
			for j, e := range t.Strings {
				if bytes.IndexByte(e, 0) >= 0 {
					return fmt.Errorf("%w: input %q element %d contains a NUL byte, which ONNX Runtime strings cannot carry", ErrInvalidInput, t.Name, j)
				}
			}
		}
		if t.NumElements() == 0 {
			return fmt.Errorf("%w: input %q has no elements (shape %s)", ErrInvalidInput, t.Name, tensor.FormatShape(t.Shape))
		}
		if v.Config.MaxBatchSize > 0 || leadingDynamic {
			rows := t.Shape[0]
			if v.Config.MaxBatchSize > 0 && rows > int64(v.Config.MaxBatchSize) {
				return fmt.Errorf("%w: input %q has batch size %d, over the model's max_batch_size %d",
					ErrInvalidInput, t.Name, rows, v.Config.MaxBatchSize)
			}
			if batch >= 0 && rows != batch {
				return fmt.Errorf("%w: input %q has batch size %d, but other inputs have %d",
					ErrInvalidInput, t.Name, rows, batch)
			}
			batch = rows
		}
	}
	for _, s := range v.Signature.Inputs {
		if !seen[s.Name] {
			return fmt.Errorf("%w: missing input %q (%s %s)", ErrInvalidInput, s.Name, s.DataType, tensor.FormatShape(s.Shape))
		}
	}
	wanted := make(map[string]bool, len(outputs))
	for _, o := range outputs {
		if _, ok := v.Signature.Output(o); !ok {
			return fmt.Errorf("%w: unknown output %q; model %q has %s", ErrInvalidInput, o, v.Model, names(v.Signature.Outputs))
		}
		if wanted[o] {
			return fmt.Errorf("%w: output %q requested more than once", ErrInvalidInput, o)
		}
		wanted[o] = true
	}
	return nil
}

// ErrInvalidInput marks a request that does not fit the model's signature.
var ErrInvalidInput = errors.New("invalid input")

func names(specs []tensor.Spec) string {
	s := ""
	for i, sp := range specs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q (%s %s)", sp.Name, sp.DataType, tensor.FormatShape(sp.Shape))
	}
	return s
}
