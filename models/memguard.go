package models

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"

	"github.com/inferd/inferd/tensor"
)

// ErrTooLarge marks a model that would not fit in the memory the process may use.
var ErrTooLarge = errors.New("model too large for this machine")

// MemoryProbe reports how many bytes of memory the process may still use (MemAvailable, or
// what the cgroup limit leaves, whichever is less).
type MemoryProbe func() (uint64, error)

// SetMemoryProbe makes loads check a model against the memory it may take before ONNX Runtime
// allocates anything: a model that cannot fit fails to load with a reason instead of taking
// the node down. Nil (the default) skips the checks.
func (r *Repository) SetMemoryProbe(p MemoryProbe) {
	r.loadMu.Lock()
	r.memProbe = p
	r.loadMu.Unlock()
}

// checkModelFile refuses a model whose weights cannot fit: ONNX Runtime holds a copy of the
// initializers per session, plus one while the signature is read. The copies must fit in the
// version's memory limit ([limits] max_memory_bytes) and in the memory available now.
func (r *Repository) checkModelFile(path string, v *Version) error {
	instances := max(v.Config.Instance.Count, 1)
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if limit := v.Config.Limits.MaxMemoryBytes; limit > 0 {
		hi, need := bits.Mul64(uint64(fi.Size()), uint64(instances+1))
		if hi != 0 {
			need = math.MaxUint64
		}
		if need > uint64(limit) {
			return fmt.Errorf("%w: instance count %d needs about %s (the model file is %s, one copy per instance plus one while loading), over the version's memory limit of %s (limits.max_memory_bytes)",
				ErrTooLarge, instances, human(need), human(uint64(fi.Size())), human(uint64(limit)))
		}
	}
	if r.memProbe == nil {
		return nil
	}
	avail, err := r.memProbe()
	if err != nil {
		return nil // no reading: let ONNX Runtime try, as without a probe
	}
	need := uint64(fi.Size()) * uint64(instances+1)
	if need > avail {
		return fmt.Errorf("%w: the model file is %s and %d instance(s) hold a copy each (plus one while loading): about %s, more than the %s of memory available",
			ErrTooLarge, human(uint64(fi.Size())), instances, human(need), human(avail))
	}
	return nil
}

// checkDeclaredShapes refuses a model whose fully declared inputs or outputs (dynamic batch
// dimensions taken at max_batch_size, other dynamic dimensions at 1, as warmup does) would
// each take more than half the memory available: warmup or the first request would exhaust it.
func (r *Repository) checkDeclaredShapes(v *Version) error {
	if r.memProbe == nil {
		return nil
	}
	avail, err := r.memProbe()
	if err != nil {
		return nil
	}
	check := func(kind string, specs []tensor.Spec) error {
		for _, s := range specs {
			n, ok := declaredBytes(s, v.Config.MaxBatchSize)
			if !ok || n > avail/2 {
				size := "more than 2^64 bytes"
				if ok {
					size = human(n)
				}
				return fmt.Errorf("%w: %s %q declares shape %s of %s: %s for one tensor, more than half the %s of memory available",
					ErrTooLarge, kind, s.Name, tensor.FormatShape(s.Shape), s.DataType, size, human(avail))
			}
		}
		return nil
	}
	if err := check("input", v.Signature.Inputs); err != nil {
		return err
	}
	return check("output", v.Signature.Outputs)
}

// declaredBytes is the size of one tensor of spec; false when it overflows.
func declaredBytes(s tensor.Spec, maxBatch int) (uint64, bool) {
	size := uint64(max(s.DataType.Size(), 1))
	for i, d := range s.Shape {
		switch {
		case d >= 0:
		case i == 0 && maxBatch > 0:
			d = int64(maxBatch)
		default:
			d = 1
		}
		hi, lo := bits.Mul64(size, uint64(d))
		if hi != 0 {
			return 0, false
		}
		size = lo
	}
	return size, true
}

func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n == math.MaxUint64:
		return "unbounded"
	}
	return fmt.Sprintf("%d KiB", (n+1023)/1024)
}
