// Package placement decides which GPU each instance of a model version runs on, from numbers
// alone: what the version is estimated to need, and what each GPU has free. It is pure (no
// NVML, no ONNX Runtime, no clock, no state), so every rule is a table test.
//
// The rules, which docs/gpu.md explains to operators:
//
//   - A GPU offers a new version Fraction (gpu.memory_fraction) of its free memory, where free is
//     the lesser of what NVML reports free and the GPU's total less what inferd's own loaded
//     versions are taken to hold (NVML lags behind an arena that has not grown yet; inferd's own
//     books miss other processes: the lesser is right in both cases).
//   - An instance fits on a GPU when its estimate fits in that offer, less what instances of the
//     same version already placed there take.
//   - Packed (the default), every instance goes onto one GPU, the one with the most headroom
//     left after them. Spread, each instance goes to the GPU holding the fewest instances of the
//     version so far, and among those to the one with the most headroom left.
//   - Ties go to the lower index. GPUs with a Problem (lost, in MIG mode) and those outside
//     Request.Allowed are never used. When nothing fits, the error says, GPU by GPU, why.
//
// It must not read devices or files, log, or remember anything between calls.
package placement

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// GPU is one device as placement sees it. Sizes are bytes.
type GPU struct {
	Index int
	// Total is the device's memory.
	Total uint64
	// Free is what NVML reports free now.
	Free uint64
	// Held is what inferd's loaded model versions are taken to hold on the device: their
	// estimates, replaced by measured usage once loaded.
	Held uint64
	// Problem is why the device must not take new work ("" when it may), e.g. that NVML lost
	// it.
	Problem string
}

// Request is what a model version asks for.
type Request struct {
	// Instances is the number of sessions to place (at least 1).
	Instances int
	// PerInstance is each session's memory estimate in bytes (see Estimate).
	PerInstance uint64
	// Fraction is the share of a GPU's free memory a new version may take, in (0, 1].
	Fraction float64
	// Allowed lists the GPU indices the model may use; empty means any.
	Allowed []int
	// Spread places instances on different GPUs where they fit, rather than all on one.
	Spread bool
}

// Errors of Place, wrapped with the reason; match them with errors.Is.
var (
	// ErrNoGPU: there is no GPU the request may use (none on the node, none healthy, or none
	// of those allowed exists).
	ErrNoGPU = errors.New("no usable GPU")
	// ErrNoFit: usable GPUs exist but the version does not fit in what they offer.
	ErrNoFit = errors.New("does not fit in GPU memory")
	// ErrRequest: the request itself is malformed.
	ErrRequest = errors.New("invalid placement request")
)

// Offer is the memory a GPU offers a new version: fraction of the lesser of NVML's free and
// total less held.
func Offer(g GPU, fraction float64) uint64 {
	free := g.Free
	if own := sub(g.Total, g.Held); own < free {
		free = own
	}
	return uint64(math.Floor(float64(free) * fraction))
}

// Place returns the GPU index of each instance of req, in instance order, or an error wrapping
// ErrNoGPU, ErrNoFit or ErrRequest with the reason for every GPU considered.
func Place(req Request, gpus []GPU) ([]int, error) {
	switch {
	case req.Instances < 1:
		return nil, fmt.Errorf("%w: %d instances", ErrRequest, req.Instances)
	case !(req.Fraction > 0 && req.Fraction <= 1):
		return nil, fmt.Errorf("%w: memory fraction %v is not in (0, 1]", ErrRequest, req.Fraction)
	}
	var usable []candidate
	var why []string
	for _, g := range sorted(gpus) {
		switch {
		case len(req.Allowed) > 0 && !slices.Contains(req.Allowed, g.Index):
			continue // not the model's to use; not worth a line in the reason
		case g.Problem != "":
			why = append(why, fmt.Sprintf("GPU %d cannot be used (%s)", g.Index, g.Problem))
		default:
			usable = append(usable, candidate{gpu: g, offer: Offer(g, req.Fraction)})
		}
	}
	for _, idx := range req.Allowed {
		if !slices.ContainsFunc(gpus, func(g GPU) bool { return g.Index == idx }) {
			why = append(why, fmt.Sprintf("GPU %d does not exist", idx))
		}
	}
	if len(usable) == 0 {
		if len(gpus) == 0 {
			why = append(why, "the node has no GPU")
		}
		return nil, fmt.Errorf("%w: %s", ErrNoGPU, strings.Join(why, "; "))
	}
	var plan []int
	if req.Spread {
		plan = spread(req, usable)
	} else {
		plan = pack(req, usable)
	}
	if plan != nil {
		return plan, nil
	}
	for _, c := range usable {
		why = append(why, c.explain(req))
	}
	hint := ""
	if !req.Spread && req.Instances > 1 {
		hint = "; spread = true would let instances use different GPUs"
	}
	return nil, fmt.Errorf("%w: %d × %s needed; %s%s", ErrNoFit, req.Instances, Bytes(req.PerInstance), strings.Join(why, "; "), hint)
}

type candidate struct {
	gpu    GPU
	offer  uint64
	placed int // instances of this request placed on it so far
}

func (c candidate) headroom(per uint64, extra int) (uint64, bool) {
	need := per * uint64(c.placed+extra)
	if per != 0 && need/per != uint64(c.placed+extra) || need > c.offer {
		return 0, false
	}
	return c.offer - need, true
}

func (c candidate) explain(req Request) string {
	return fmt.Sprintf("GPU %d offers %s (%.0f%% of %s free: NVML %s free, %s total less %s held by inferd)",
		c.gpu.Index, Bytes(c.offer), req.Fraction*100, Bytes(min(c.gpu.Free, sub(c.gpu.Total, c.gpu.Held))),
		Bytes(c.gpu.Free), Bytes(c.gpu.Total), Bytes(c.gpu.Held))
}

// pack puts every instance on the one GPU with the most headroom left after them.
func pack(req Request, cs []candidate) []int {
	best, bestRoom := -1, uint64(0)
	for i, c := range cs {
		room, ok := c.headroom(req.PerInstance, req.Instances)
		if ok && (best < 0 || room > bestRoom) {
			best, bestRoom = i, room
		}
	}
	if best < 0 {
		return nil
	}
	plan := make([]int, req.Instances)
	for i := range plan {
		plan[i] = cs[best].gpu.Index
	}
	return plan
}

// spread puts each instance on the GPU with the fewest instances of the request so far, then
// the most headroom left after it.
func spread(req Request, cs []candidate) []int {
	plan := make([]int, 0, req.Instances)
	for range req.Instances {
		best, bestRoom := -1, uint64(0)
		for i, c := range cs {
			room, ok := c.headroom(req.PerInstance, 1)
			if !ok {
				continue
			}
			if best < 0 || c.placed < cs[best].placed || c.placed == cs[best].placed && room > bestRoom {
				best, bestRoom = i, room
			}
		}
		if best < 0 {
			return nil
		}
		cs[best].placed++
		plan = append(plan, cs[best].gpu.Index)
	}
	return plan
}

// sorted returns gpus by index, so that ties go to the lower index whatever order they came in.
func sorted(gpus []GPU) []GPU {
	out := slices.Clone(gpus)
	slices.SortStableFunc(out, func(a, b GPU) int { return a.Index - b.Index })
	return out
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// Defaults of Estimate.
const (
	// ActivationFactor is how many times the bytes of a batch's inputs and outputs its
	// intermediate tensors are taken to need. ORT reuses activation buffers along the graph,
	// so a chain of layers needs a few times its widest tensor, not the sum of them all.
	ActivationFactor = 8
	// Workspace is what one CUDA session takes beyond weights and activations (cuBLAS and
	// cuDNN workspaces, the arena's first chunk).
	Workspace = 64 << 20
)

// Estimate is a session's GPU memory before it loads: its weights (the model's bytes on disk)
// plus an arena for activations at the largest batch (ActivationFactor × the bytes of one row's
// inputs and outputs × maxBatch, which 0 counts as 1) plus Workspace. It is a guess that
// errs high for wide-and-shallow models and low for convolution stacks on large images; a
// model whose guess is wrong sets [instance] gpu_memory_bytes, and a loaded version's
// measured usage replaces it.
func Estimate(weights, ioBytesPerRow uint64, maxBatch int) uint64 {
	rows := uint64(max(maxBatch, 1))
	return satAdd(satAdd(weights, satMul(satMul(ioBytesPerRow, rows), ActivationFactor)), Workspace)
}

func satMul(a, b uint64) uint64 {
	if a != 0 && b > math.MaxUint64/a {
		return math.MaxUint64
	}
	return a * b
}

func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// Bytes formats a size for operators in binary units ("1.5 GiB").
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
