package ort

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/inferd/inferd/engine"
)

// TestCUDAProviderOptions checks what reaches ORT's OrtCUDAProviderOptionsV2: the device, the
// arena cap placement admitted (only when set) and an arena that grows by what is requested.
func TestCUDAProviderOptions(t *testing.T) {
	tests := []struct {
		opts engine.Options
		want map[string]string
	}{
		{engine.Options{Provider: engine.ProviderCUDA},
			map[string]string{"device_id": "0", "arena_extend_strategy": "kSameAsRequested"}},
		{engine.Options{Provider: engine.ProviderCUDA, DeviceID: 3, GPUMemLimit: 6 << 30},
			map[string]string{"device_id": "3", "arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": "6442450944"}},
	}
	for _, tc := range tests {
		if got := cudaProviderOptions(tc.opts); !maps.Equal(got, tc.want) {
			t.Errorf("cudaProviderOptions(%+v) = %v, want %v", tc.opts, got, tc.want)
		}
	}
}

// TestProvidersIn: CUDA is offered only when both provider libraries lie next to the core
// library, as ORT will look for them there.
func TestProvidersIn(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cpu := []string{engine.ProviderCPU}
	if got := providersIn(dir); !slices.Equal(got, cpu) {
		t.Errorf("empty dir: %v, want %v", got, cpu)
	}
	touch(CUDAProviderLibrary)
	if got := providersIn(dir); !slices.Equal(got, cpu) {
		t.Errorf("without %s: %v, want %v", sharedProviderLibrary, got, cpu)
	}
	touch(sharedProviderLibrary)
	if got, want := providersIn(dir), []string{engine.ProviderCPU, engine.ProviderCUDA}; !slices.Equal(got, want) {
		t.Errorf("with both: %v, want %v", got, want)
	}
}
