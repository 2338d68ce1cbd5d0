package ort

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// This file reads the names of symbolic dimensions ("batch") of a model's graph inputs and
// outputs straight from the ONNX file. ORT reports such dimensions as -1 and onnxruntime_go
// does not expose their names, but a FP16/BF16 output must be pre-allocated (see the package
// doc), so its shape must be known before the run: a dimension named like an input dimension
// takes that input's size. The reader walks protobuf fields and seeks over everything else
// (initializers can be gigabytes); ORT has already parsed and validated the file by then.

// graphDims maps each graph input or output name to the dim_param of each of its dimensions
// ("" for a fixed or unnamed dimension).
type graphDims struct {
	inputs, outputs map[string][]string
}

// Field numbers of onnx.proto.
const (
	modelGraph        = 7  // ModelProto.graph
	graphInput        = 11 // GraphProto.input
	graphOutput       = 12 // GraphProto.output
	valueInfoName     = 1  // ValueInfoProto.name
	valueInfoType     = 2  // ValueInfoProto.type
	typeTensor        = 1  // TypeProto.tensor_type
	tensorTypeShape   = 2  // TypeProto.Tensor.shape
	shapeDim          = 1  // TensorShapeProto.dim
	dimParam          = 2  // TensorShapeProto.Dimension.dim_param
	maxValueInfoBytes = 1 << 20
)

var errProto = errors.New("malformed ONNX protobuf")

func readGraphDims(path string) (graphDims, error) {
	f, err := os.Open(path)
	if err != nil {
		return graphDims{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return graphDims{}, err
	}
	gd := graphDims{inputs: map[string][]string{}, outputs: map[string][]string{}}
	err = walk(f, 0, st.Size(), func(field, wire int, start, n int64) error {
		if field != modelGraph || wire != 2 {
			return nil
		}
		return walk(f, start, start+n, func(field, wire int, start, n int64) error {
			if (field != graphInput && field != graphOutput) || wire != 2 {
				return nil
			}
			if n > maxValueInfoBytes {
				return fmt.Errorf("%w: value info of %d bytes", errProto, n)
			}
			buf := make([]byte, n)
			if _, err := f.ReadAt(buf, start); err != nil {
				return err
			}
			name, dims, err := valueInfoDims(buf)
			if err != nil {
				return err
			}
			if field == graphInput {
				gd.inputs[name] = dims
			} else {
				gd.outputs[name] = dims
			}
			return nil
		})
	})
	return gd, err
}

// valueInfoDims decodes a ValueInfoProto's name and its tensor dimensions' dim_params.
func valueInfoDims(buf []byte) (name string, dims []string, err error) {
	r := bytes.NewReader(buf)
	sub := func(start, n int64) []byte { return buf[start : start+n] }
	err = walk(r, 0, int64(len(buf)), func(field, wire int, start, n int64) error {
		switch {
		case field == valueInfoName && wire == 2:
			name = string(sub(start, n))
		case field == valueInfoType && wire == 2:
			return walk(r, start, start+n, func(field, wire int, start, n int64) error {
				if field != typeTensor || wire != 2 {
					return nil
				}
				return walk(r, start, start+n, func(field, wire int, start, n int64) error {
					if field != tensorTypeShape || wire != 2 {
						return nil
					}
					return walk(r, start, start+n, func(field, wire int, start, n int64) error {
						if field != shapeDim || wire != 2 {
							return nil
						}
						param := ""
						err := walk(r, start, start+n, func(field, wire int, start, n int64) error {
							if field == dimParam && wire == 2 {
								param = string(sub(start, n))
							}
							return nil
						})
						dims = append(dims, param)
						return err
					})
				})
			})
		}
		return nil
	})
	return name, dims, err
}

// walk calls fn for each field of the message in [start, end) of r, with the payload's range
// for length-delimited fields (wire type 2), skipping the payload of the others.
func walk(r io.ReaderAt, start, end int64, fn func(field, wire int, start, n int64) error) error {
	for off := start; off < end; {
		tag, k, err := varintAt(r, off, end)
		if err != nil {
			return err
		}
		off += k
		field, wire := int(tag>>3), int(tag&7)
		var n int64
		switch wire {
		case 0:
			_, k, err := varintAt(r, off, end)
			if err != nil {
				return err
			}
			off += k
			continue
		case 1:
			n = 8
		case 2:
			l, k, err := varintAt(r, off, end)
			if err != nil {
				return err
			}
			off += k
			if l > uint64(end-off) {
				return fmt.Errorf("%w: field %d overruns its message", errProto, field)
			}
			n = int64(l)
		case 5:
			n = 4
		default:
			return fmt.Errorf("%w: wire type %d", errProto, wire)
		}
		if off+n > end {
			return fmt.Errorf("%w: field %d overruns its message", errProto, field)
		}
		if wire == 2 {
			if err := fn(field, wire, off, n); err != nil {
				return err
			}
		}
		off += n
	}
	return nil
}

func varintAt(r io.ReaderAt, off, end int64) (uint64, int64, error) {
	var buf [binary.MaxVarintLen64]byte
	b := buf[:min(int64(len(buf)), end-off)]
	n, err := r.ReadAt(b, off)
	if n < len(b) && err != nil {
		return 0, 0, err
	}
	v, k := binary.Uvarint(b[:n])
	if k <= 0 {
		return 0, 0, fmt.Errorf("%w: bad varint at offset %d", errProto, off)
	}
	return v, int64(k), nil
}
