package placement

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

const gib = 1 << 30

func TestOffer(t *testing.T) {
	tests := []struct {
		name     string
		g        GPU
		fraction float64
		want     uint64
	}{
		{"NVML free is the lesser", GPU{Total: 80 * gib, Free: 40 * gib, Held: 10 * gib}, 1, 40 * gib},
		// inferd's sessions hold 60 GiB, but their arenas have not grown yet: NVML still shows 70 free.
		{"own books are the lesser", GPU{Total: 80 * gib, Free: 70 * gib, Held: 60 * gib}, 1, 20 * gib},
		{"fraction applies to the lesser", GPU{Total: 80 * gib, Free: 40 * gib}, 0.5, 20 * gib},
		{"held above total offers nothing", GPU{Total: 8 * gib, Free: 4 * gib, Held: 9 * gib}, 0.9, 0},
		{"empty device", GPU{}, 0.9, 0},
	}
	for _, tc := range tests {
		if got := Offer(tc.g, tc.fraction); got != tc.want {
			t.Errorf("%s: Offer = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestPlace(t *testing.T) {
	// Two 80 GiB GPUs and one 40 GiB GPU, with different loads.
	three := []GPU{
		{Index: 0, Total: 80 * gib, Free: 30 * gib},
		{Index: 1, Total: 80 * gib, Free: 70 * gib, Held: 5 * gib},
		{Index: 2, Total: 40 * gib, Free: 40 * gib},
	}
	tests := []struct {
		name    string
		req     Request
		gpus    []GPU
		want    []int
		wantErr error
		reason  []string // substrings the error must carry
	}{
		{name: "most headroom wins", req: Request{Instances: 1, PerInstance: 10 * gib, Fraction: 1}, gpus: three, want: []int{1}},
		{name: "packed instances stay together", req: Request{Instances: 3, PerInstance: 10 * gib, Fraction: 1}, gpus: three, want: []int{1, 1, 1}},
		{
			// 0.5 × 70 = 35 GiB on GPU 1, 0.5 × 40 = 20 GiB on GPU 2, 15 GiB on GPU 0.
			name: "fraction caps each GPU's offer", req: Request{Instances: 1, PerInstance: 30 * gib, Fraction: 0.5}, gpus: three, want: []int{1},
		},
		{
			name: "packed: none fits all, the error says which GPU offers what and hints at spread",
			req:  Request{Instances: 3, PerInstance: 30 * gib, Fraction: 1}, gpus: three, wantErr: ErrNoFit,
			reason: []string{"3 × 30.0 GiB needed", "GPU 0 offers 30.0 GiB", "GPU 1 offers 70.0 GiB (100% of 70.0 GiB free: NVML 70.0 GiB free, 80.0 GiB total less 5.0 GiB held by inferd)", "spread = true"},
		},
		{name: "spread uses every GPU before doubling up", req: Request{Instances: 3, PerInstance: 10 * gib, Fraction: 1, Spread: true}, gpus: three, want: []int{1, 2, 0}},
		{name: "spread doubles up on the most headroom", req: Request{Instances: 4, PerInstance: 10 * gib, Fraction: 1, Spread: true}, gpus: three, want: []int{1, 2, 0, 1}},
		{name: "spread skips a GPU it does not fit on", req: Request{Instances: 3, PerInstance: 35 * gib, Fraction: 1, Spread: true}, gpus: three, want: []int{1, 2, 1}},
		{
			name: "spread fails when the instances do not fit in all", req: Request{Instances: 3, PerInstance: 40 * gib, Fraction: 1, Spread: true}, gpus: three,
			wantErr: ErrNoFit, reason: []string{"3 × 40.0 GiB needed"},
		},
		{name: "allowed list restricts", req: Request{Instances: 1, PerInstance: gib, Fraction: 1, Allowed: []int{0, 2}}, gpus: three, want: []int{2}},
		{
			name: "allowed GPU that does not exist", req: Request{Instances: 1, PerInstance: gib, Fraction: 1, Allowed: []int{7}}, gpus: three,
			wantErr: ErrNoGPU, reason: []string{"GPU 7 does not exist"},
		},
		{
			name: "unhealthy GPUs are never used",
			req:  Request{Instances: 1, PerInstance: gib, Fraction: 1},
			gpus: []GPU{{Index: 0, Total: 80 * gib, Free: 80 * gib, Problem: "GPU is lost"}, {Index: 1, Total: 16 * gib, Free: 16 * gib}},
			want: []int{1},
		},
		{
			name:    "only unhealthy GPUs",
			req:     Request{Instances: 1, PerInstance: gib, Fraction: 1},
			gpus:    []GPU{{Index: 0, Total: 80 * gib, Free: 80 * gib, Problem: "GPU is lost"}},
			wantErr: ErrNoGPU, reason: []string{"GPU 0 cannot be used (GPU is lost)"},
		},
		{name: "no GPU at all", req: Request{Instances: 1, PerInstance: gib, Fraction: 1}, wantErr: ErrNoGPU, reason: []string{"the node has no GPU"}},
		{name: "ties go to the lower index whatever the order", req: Request{Instances: 1, PerInstance: gib, Fraction: 1},
			gpus: []GPU{{Index: 3, Total: 16 * gib, Free: 16 * gib}, {Index: 1, Total: 16 * gib, Free: 16 * gib}}, want: []int{1}},
		{name: "exact fit is a fit", req: Request{Instances: 2, PerInstance: 20 * gib, Fraction: 1}, gpus: []GPU{{Index: 0, Total: 40 * gib, Free: 40 * gib}}, want: []int{0, 0}},
		{name: "zero estimate fits anywhere healthy", req: Request{Instances: 2, Fraction: 1}, gpus: []GPU{{Index: 0}}, want: []int{0, 0}},
		{
			name: "an estimate that overflows does not wrap around", req: Request{Instances: 3, PerInstance: math.MaxUint64 / 2, Fraction: 1},
			gpus: []GPU{{Index: 0, Total: 80 * gib, Free: 80 * gib}}, wantErr: ErrNoFit,
		},
		{name: "no instances", req: Request{Instances: 0, Fraction: 1}, gpus: three, wantErr: ErrRequest},
		{name: "fraction out of range", req: Request{Instances: 1, Fraction: 1.5}, gpus: three, wantErr: ErrRequest},
		{name: "fraction zero", req: Request{Instances: 1}, gpus: three, wantErr: ErrRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.gpus)
			got, err := Place(tc.req, tc.gpus)
			if !slices.Equal(before, tc.gpus) {
				t.Errorf("Place changed its input: %v -> %v", before, tc.gpus)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Place = %v, %v; want error %v", got, err, tc.wantErr)
			}
			if err != nil {
				for _, r := range tc.reason {
					if !strings.Contains(err.Error(), r) {
						t.Errorf("error %q lacks %q", err, r)
					}
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Place = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEstimate(t *testing.T) {
	tests := []struct {
		weights, perRow uint64
		maxBatch        int
		want            uint64
	}{
		{weights: 100 << 20, perRow: 8 << 10, maxBatch: 64, want: 100<<20 + 64*(8<<10)*ActivationFactor + Workspace},
		{weights: 100 << 20, perRow: 8 << 10, maxBatch: 0, want: 100<<20 + (8<<10)*ActivationFactor + Workspace}, // no batching: one row
		{weights: math.MaxUint64 - 1, perRow: math.MaxUint64, maxBatch: 2, want: math.MaxUint64},                 // saturates
	}
	for _, tc := range tests {
		if got := Estimate(tc.weights, tc.perRow, tc.maxBatch); got != tc.want {
			t.Errorf("Estimate(%d, %d, %d) = %d, want %d", tc.weights, tc.perRow, tc.maxBatch, got, tc.want)
		}
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 80 * gib: "80.0 GiB", math.MaxUint64: "16.0 EiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
