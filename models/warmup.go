package models

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"time"
	"unsafe"

	"github.com/inferd/inferd/tensor"
)

// WarmupConfig is a model's [warmup] table: requests run on every instance after it loads and
// before it is routable, so that the first client does not pay for ONNX Runtime's first-run
// allocations.
type WarmupConfig struct {
	// BatchSizes to warm up with (dimension 0 when max_batch_size > 0). Unset: one run at
	// batch 1 when every other dimension is fixed, and no warmup otherwise; an empty list
	// turns warmup off.
	BatchSizes []int `toml:"batch_sizes" json:"batch_sizes"`
	// Data is "zero" (the default) or "random".
	Data string `toml:"data" json:"data,omitempty"`
	// Runs per batch size and instance (default 1).
	Runs int `toml:"runs" json:"runs,omitempty"`
}

func (w WarmupConfig) validate() error {
	if w.Data != "" && w.Data != "zero" && w.Data != "random" {
		return fmt.Errorf("warmup.data %q must be zero or random", w.Data)
	}
	if w.Runs < 0 {
		return fmt.Errorf("warmup.runs %d must be >= 0", w.Runs)
	}
	for _, b := range w.BatchSizes {
		if b < 1 {
			return fmt.Errorf("warmup.batch_sizes: %d must be >= 1", b)
		}
	}
	return nil
}

// warmup runs the configured warmup requests on every instance of v. memLimit is the memory
// v's worker may take (0: unknown); warmup inputs that alone need more are refused before they
// are allocated, so that a batch size or a declared shape too large for the machine makes the
// version UNAVAILABLE with the reason instead of running the daemon out of memory.
func warmup(ctx context.Context, v *Version, memLimit int64, log *slog.Logger) error {
	w := v.Config.Warmup
	explicit := w.BatchSizes != nil
	sizes := w.BatchSizes
	if !explicit {
		sizes = []int{1}
	}
	if v.Config.MaxBatchSize == 0 && len(sizes) > 0 {
		sizes = sizes[:1] // without batching the model runs at its declared shape
	}
	start := time.Now()
	rng := rand.New(rand.NewPCG(uint64(v.Number), 1))
	for _, size := range sizes {
		if err := checkWarmupBytes(v, int64(size), memLimit); err != nil {
			return fmt.Errorf("warmup: %w", err)
		}
		inputs, err := warmupInputs(v, int64(size), w.Data == "random", rng)
		if err != nil {
			if explicit {
				return fmt.Errorf("warmup: %w", err)
			}
			log.Debug("no warmup", "reason", err)
			return nil
		}
		for _, s := range v.Sessions {
			for range max(w.Runs, 1) {
				if _, err := s.Run(ctx, inputs, nil); err != nil {
					return fmt.Errorf("warmup at batch size %d failed: %w", size, err)
				}
			}
		}
	}
	if len(sizes) > 0 {
		log.Debug("warmed up", "batch_sizes", sizes, "instances", len(v.Sessions), "took", time.Since(start).Round(time.Microsecond))
	}
	return nil
}

func warmupInputs(v *Version, batch int64, random bool, rng *rand.Rand) ([]tensor.Tensor, error) {
	inputs := make([]tensor.Tensor, len(v.Signature.Inputs))
	for i, spec := range v.Signature.Inputs {
		shape := slices.Clone(spec.Shape)
		for d := range shape {
			if d == 0 && v.Config.MaxBatchSize > 0 {
				shape[0] = batch
				continue
			}
			if shape[d] < 0 {
				return nil, fmt.Errorf("input %q has variable dimension %d (%s); fix it with [[inputs]] shape in model.toml",
					spec.Name, d, tensor.FormatShape(spec.Shape))
			}
		}
		n, err := tensor.Elements(shape)
		if err != nil {
			return nil, err
		}
		t := tensor.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape}
		if spec.DataType == tensor.Bytes {
			t.Strings = make([][]byte, n)
			for j := range t.Strings {
				t.Strings[j] = []byte{}
			}
		} else {
			t.Data = make([]byte, n*int64(spec.DataType.Size()))
			if random {
				fillRandom(t, rng)
			}
		}
		inputs[i] = t
	}
	return inputs, nil
}

// fillRandom fills floating-point tensors with values in [0, 1) and BOOL with 0 or 1; other
// types stay zero (random integers could be out of range for indices).
func fillRandom(t tensor.Tensor, rng *rand.Rand) {
	switch t.DataType {
	case tensor.FP32:
		for i := 0; i < len(t.Data); i += 4 {
			binary.LittleEndian.PutUint32(t.Data[i:], math.Float32bits(rng.Float32()))
		}
	case tensor.FP64:
		for i := 0; i < len(t.Data); i += 8 {
			binary.LittleEndian.PutUint64(t.Data[i:], math.Float64bits(rng.Float64()))
		}
	case tensor.Bool:
		for i := range t.Data {
			t.Data[i] = byte(rng.IntN(2))
		}
	}
}

// checkWarmupBytes refuses warmup inputs at batch that would take more than memLimit bytes (the
// slice headers of BYTES elements count too); a variable dimension is left to warmupInputs.
func checkWarmupBytes(v *Version, batch, memLimit int64) error {
	if memLimit <= 0 {
		return nil
	}
	var total uint64
	for _, spec := range v.Signature.Inputs {
		shape := slices.Clone(spec.Shape)
		if v.Config.MaxBatchSize > 0 && len(shape) > 0 {
			shape[0] = batch
		}
		size := uint64(spec.DataType.Size())
		if spec.DataType == tensor.Bytes {
			size = uint64(unsafe.Sizeof([]byte(nil)))
		}
		for _, d := range shape {
			if d < 0 {
				return nil
			}
			hi, lo := bits.Mul64(size, uint64(d))
			if hi != 0 {
				size = math.MaxUint64
				break
			}
			size = lo
		}
		if total += size; total < size {
			total = math.MaxUint64
		}
	}
	if total > uint64(memLimit) {
		return fmt.Errorf("%w: the inputs at batch size %d need %s, more than the version's memory limit of %s (limits.max_memory_bytes)",
			ErrTooLarge, batch, human(total), human(uint64(memLimit)))
	}
	return nil
}
