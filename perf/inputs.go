package perf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/inferd/inferd/tensor"
)

// DataMode chooses what input tensors hold.
type DataMode string

// Data modes.
const (
	// DataRandom fills inputs from a generator seeded with Config.Seed: floats uniform in
	// [0, 1), integers in [0, 10) (small enough to be valid indices for most embedding and
	// gather inputs), BOOL 0 or 1, BYTES 8 lowercase letters.
	DataRandom DataMode = "random"
	// DataZero fills inputs with zeros (empty strings for BYTES).
	DataZero DataMode = "zero"
)

// ErrInput marks input settings that do not fit the model (unknown input, wrong rank, a
// dimension the model fixes otherwise, a datatype perf cannot generate).
var ErrInput = errors.New("invalid input settings")

// maxInputBytes bounds one generated input so that a typo in --shape fails clearly instead of
// exhausting memory.
const maxInputBytes = 1 << 30

// ParseDataMode returns the DataMode named s.
func ParseDataMode(s string) (DataMode, error) {
	switch m := DataMode(s); m {
	case DataRandom, DataZero:
		return m, nil
	}
	return "", fmt.Errorf("%w: data %q: want random or zero", ErrSyntax, s)
}

// resolveShapes turns the model's input specs into concrete ones: the shape from shapes (by
// input name) or the spec's with -1 replaced by 1, then dimension 0 set to batch (when batch > 0)
// for inputs whose declared dimension 0 is variable. It returns the concrete specs and the rows
// per request (dimension 0 of the first input, 1 for a scalar).
func resolveShapes(specs []tensor.Spec, shapes map[string][]int64, batch int) ([]tensor.Spec, int64, error) {
	for name := range shapes {
		if !slices.ContainsFunc(specs, func(s tensor.Spec) bool { return s.Name == name }) {
			return nil, 0, fmt.Errorf("%w: --shape names input %q; the model's inputs are %s", ErrInput, name, inputNames(specs))
		}
	}
	if len(specs) == 0 {
		return nil, 0, fmt.Errorf("%w: the model declares no inputs", ErrInput)
	}
	out := make([]tensor.Spec, len(specs))
	for i, s := range specs {
		shape, given := shapes[s.Name]
		if given {
			shape = slices.Clone(shape)
		} else {
			shape = make([]int64, len(s.Shape))
			for d, v := range s.Shape {
				shape[d] = max(v, 1)
			}
		}
		if batch > 0 && len(s.Shape) > 0 && s.Shape[0] < 0 && len(shape) > 0 {
			shape[0] = int64(batch)
		}
		if err := s.Accepts(s.DataType, shape); err != nil {
			return nil, 0, fmt.Errorf("%w: %w", ErrInput, err)
		}
		out[i] = tensor.Spec{Name: s.Name, DataType: s.DataType, Shape: shape}
	}
	rows := int64(1)
	if len(out[0].Shape) > 0 {
		rows = out[0].Shape[0]
	}
	return out, rows, nil
}

func inputNames(specs []tensor.Spec) string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = fmt.Sprintf("%q", s.Name)
	}
	return strings.Join(names, ", ")
}

// buildInputs makes one tensor per concrete spec, filled as mode says. The same seed gives the
// same tensors.
func buildInputs(specs []tensor.Spec, mode DataMode, seed uint64) ([]tensor.Tensor, error) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([]tensor.Tensor, len(specs))
	for i, s := range specs {
		n, err := tensor.Elements(s.Shape)
		if err != nil {
			return nil, fmt.Errorf("%w: input %q: %w", ErrInput, s.Name, err)
		}
		if !s.DataType.Valid() {
			return nil, fmt.Errorf("%w: input %q: datatype %q", ErrInput, s.Name, s.DataType)
		}
		size := max(int64(s.DataType.Size()), 8)
		if n > maxInputBytes/size {
			return nil, fmt.Errorf("%w: input %q: shape %s is over %d bytes", ErrInput, s.Name, tensor.FormatShape(s.Shape), maxInputBytes)
		}
		t := tensor.Tensor{Name: s.Name, DataType: s.DataType, Shape: s.Shape}
		if s.DataType == tensor.Bytes {
			t.Strings = make([][]byte, n)
			for k := range t.Strings {
				t.Strings[k] = []byte{}
				if mode == DataRandom {
					t.Strings[k] = randomWord(rng)
				}
			}
		} else {
			t.Data = make([]byte, n*int64(s.DataType.Size()))
			if mode == DataRandom {
				fillRandom(t.Data, s.DataType, rng)
			}
		}
		if err := t.Check(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		out[i] = t
	}
	return out, nil
}

func randomWord(rng *rand.Rand) []byte {
	w := make([]byte, 8)
	for i := range w {
		w[i] = byte('a' + rng.IntN(26))
	}
	return w
}

// fillRandom writes random little-endian elements of datatype dt into b.
func fillRandom(b []byte, dt tensor.DataType, rng *rand.Rand) {
	size := dt.Size()
	le := binary.LittleEndian
	for off := 0; off < len(b); off += size {
		e := b[off : off+size]
		switch dt {
		case tensor.FP32:
			le.PutUint32(e, math.Float32bits(rng.Float32()))
		case tensor.FP64:
			le.PutUint64(e, math.Float64bits(rng.Float64()))
		case tensor.FP16:
			// Sign 0, exponent 14 (2^-1), random mantissa: a value in [0.5, 1).
			le.PutUint16(e, 14<<10|uint16(rng.IntN(1<<10)))
		case tensor.BF16:
			le.PutUint16(e, uint16(math.Float32bits(0.5+rng.Float32()/2)>>16))
		case tensor.Bool:
			e[0] = byte(rng.IntN(2))
		default: // integers: small non-negative values, little-endian in size bytes
			v := uint64(rng.IntN(10))
			for k := range e {
				e[k] = byte(v >> (8 * k))
			}
		}
	}
}
