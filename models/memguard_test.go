package models_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

func TestModelsThatCannotFitFailToLoad(t *testing.T) {
	f := newFixture(t)
	avail := uint64(1 << 30)
	f.repo.SetMemoryProbe(func() (uint64, error) { return avail, nil })

	// Declared shapes: a static 100000×100000 FP32 input is 37 GiB per tensor.
	f.add(t, "huge", "1")
	f.rt.Register(filepath.Join(f.dir, "huge", "1", "model.onnx"), engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{100000, 100000}}},
		Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{1}}},
	}, nil)
	// Dimensions whose product overflows.
	f.add(t, "overflow", "1")
	f.rt.Register(filepath.Join(f.dir, "overflow", "1", "model.onnx"), engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{1}}},
		Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP64, Shape: []int64{1 << 40, 1 << 40}}},
	}, nil)
	// A dynamic batch taken at max_batch_size: 64 rows × 4M FP32 = 1 GiB, over half of 1 GiB.
	f.add(t, "batch", "1")
	f.rt.Register(filepath.Join(f.dir, "batch", "1", "model.onnx"), engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 4 << 20}}},
		Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1, 4 << 20}}},
	}, nil)
	testutil.WriteFile(t, f.dir, "batch/model.toml", []byte("max_batch_size = 64\n"))
	f.add(t, "fits", "1")
	f.sync(t)

	for model, want := range map[string]string{
		"huge":     `input "x" declares shape [100000,100000] of FP32: 37.3 GiB for one tensor, more than half the 1.0 GiB`,
		"overflow": `output "y" declares shape [1099511627776,1099511627776] of FP64: more than 2^64 bytes`,
		"batch":    `input "x" declares shape [-1,4194304] of FP32: 1.0 GiB for one tensor`,
	} {
		st, reason := state(f.repo, model, "1")
		if st != models.StateUnavailable || !strings.Contains(reason, want) {
			t.Errorf("%s: %s %q, want unavailable with %q", model, st, reason, want)
		}
	}
	if st, reason := state(f.repo, "fits", "1"); st != models.StateReady {
		t.Errorf("fits: %s %q", st, reason)
	}
	if opened := len(f.rt.OpenedWith()); opened != 1 {
		t.Errorf("%d sessions opened, want 1 (only the model that fits)", opened)
	}

	// The file itself: with almost no memory left, even a small model is refused before
	// ONNX Runtime reads it.
	avail = 16
	f.add(t, "fits", "2")
	f.sync(t)
	if st, reason := state(f.repo, "fits", "2"); st != models.StateUnavailable || !strings.Contains(reason, "more than the 1 KiB of memory available") {
		t.Errorf("fits v2 with 16 bytes available: %s %q", st, reason)
	}
	if _, err := f.repo.Resolve("fits", "1"); err != nil {
		t.Errorf("the version in service stopped serving: %v", err)
	}
}
