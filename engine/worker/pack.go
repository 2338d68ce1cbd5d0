package worker

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/inferd/inferd/tensor"
)

// outputPlace gives a run's outputs memory in the arena before the run, from next on, so that
// ONNX Runtime writes them there itself and pack has nothing to copy.
type outputPlace struct {
	a      *arena
	next   int
	placed []region
}

// region is an output's memory handed out by outputPlace.
type region struct {
	data     *byte
	off, len int
}

// place gives n aligned bytes of the arena, growing it as needed; nil when it may not grow
// that far (the output is then ORT's, and pack reports the arena full).
func (p *outputPlace) place(_ string, n int) []byte {
	off := alignUp(p.next)
	if p.a.ensure(off+n) != nil {
		return nil
	}
	p.next = off + n
	b := p.a.mem[off : off+n : off+n]
	p.placed = append(p.placed, region{data: unsafe.SliceData(b), off: off, len: n})
	return b
}

// pack lays tensors into the arena from offset start, each at an aligned offset, growing the
// arena as needed, and returns their slots. A tensor whose data is memory outputPlace gave
// (in placed) already lies in the arena: its slot is that memory's, and nothing is copied.
// (The arena may have been mapped again since the memory was given; the old mapping, retired
// until the next run, shows the same pages.)
func pack(a *arena, start int, ts []tensor.Tensor, slots []slot, placed []region) ([]slot, error) {
	slots = slots[:0]
	end := start
	inPlace := make([]bool, len(ts))
	for i := range ts {
		n := tensorBytes(&ts[i])
		s := slot{name: ts[i].Name, dtype: ts[i].DataType, shape: ts[i].Shape, len: n}
		if p, ok := placedAt(placed, &ts[i]); ok {
			s.off, inPlace[i] = p.off, true
		} else {
			s.off = alignUp(end)
			end = s.off + n
		}
		slots = append(slots, s)
	}
	if err := a.ensure(end); err != nil {
		return nil, err
	}
	for i := range ts {
		if inPlace[i] {
			continue
		}
		dst := a.mem[slots[i].off : slots[i].off+slots[i].len]
		if ts[i].DataType != tensor.Bytes {
			copy(dst, ts[i].Data)
			continue
		}
		for _, s := range ts[i].Strings {
			binary.LittleEndian.PutUint32(dst, uint32(len(s)))
			copy(dst[4:], s)
			dst = dst[4+len(s):]
		}
	}
	return slots, nil
}

// placedAt finds the placed memory that is t's data, all of it.
func placedAt(placed []region, t *tensor.Tensor) (region, bool) {
	if t.DataType == tensor.Bytes || len(t.Data) == 0 {
		return region{}, false
	}
	for _, p := range placed {
		if p.data == unsafe.SliceData(t.Data) && p.len == len(t.Data) {
			return p, true
		}
	}
	return region{}, false
}

func tensorBytes(t *tensor.Tensor) int {
	if t.DataType != tensor.Bytes {
		return len(t.Data)
	}
	n := 0
	for _, s := range t.Strings {
		n += 4 + len(s)
	}
	return n
}

// unpack reads tensors back from their slots. With alias the fixed-size tensors point into the
// arena (the worker, whose arena holds still for the run); without it every byte is copied
// (the daemon, whose outputs outlive the next run). Each tensor is checked against its shape,
// so a worker in a bad state cannot hand the daemon a tensor that lies about its size.
func unpack(a *arena, slots []slot, alias bool) ([]tensor.Tensor, error) {
	ts := make([]tensor.Tensor, len(slots))
	for i, s := range slots {
		b, err := a.slice(s.off, s.len)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", s.name, err)
		}
		t := tensor.Tensor{Name: s.name, DataType: s.dtype, Shape: s.shape}
		if s.dtype == tensor.Bytes {
			n, err := tensor.Elements(s.shape)
			if err != nil {
				return nil, fmt.Errorf("%w: tensor %q: %v", errFrame, s.name, err)
			}
			if t.Strings, err = unpackStrings(b, n); err != nil {
				return nil, fmt.Errorf("tensor %q: %w", s.name, err)
			}
		} else if alias {
			t.Data = b
		} else {
			t.Data = append([]byte(nil), b...)
		}
		if err := t.Check(); err != nil {
			return nil, fmt.Errorf("%w: %v", errFrame, err)
		}
		ts[i] = t
	}
	return ts, nil
}

func unpackStrings(b []byte, n int64) ([][]byte, error) {
	if n > int64(len(b)/4) {
		return nil, fmt.Errorf("%w: %d strings cannot fit %d bytes", errFrame, n, len(b))
	}
	out := make([][]byte, n)
	for i := range out {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: string %d truncated", errFrame, i)
		}
		l := int(binary.LittleEndian.Uint32(b))
		if l > len(b)-4 {
			return nil, fmt.Errorf("%w: string %d of %d bytes past the end", errFrame, i, l)
		}
		out[i] = append([]byte(nil), b[4:4+l]...)
		b = b[4+l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last string", errFrame, len(b))
	}
	return out, nil
}
