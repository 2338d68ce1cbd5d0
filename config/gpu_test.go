package config

import (
	"strings"
	"testing"
	"time"
)

func TestGPUSection(t *testing.T) {
	tests := []struct {
		doc, env string
		want     GPU
		problem  string
	}{
		{want: GPU{MemoryFraction: 0.9, InitRetry: 30 * time.Second, TelemetryTimeout: 2 * time.Second}},
		{doc: "[gpu]\nmemory_fraction = 1.0\ninit_retry = \"0s\"\ntelemetry_timeout = \"500ms\"\n",
			want: GPU{MemoryFraction: 1, TelemetryTimeout: 500 * time.Millisecond}},
		{env: "INFERD_GPU_MEMORY_FRACTION=0.5", want: GPU{MemoryFraction: 0.5, InitRetry: 30 * time.Second, TelemetryTimeout: 2 * time.Second}},
		{doc: "[gpu]\nmemory_fraction = 1.5\n", problem: "g.toml:2: gpu.memory_fraction: invalid value: 1.5 is more than 1"},
		{doc: "[gpu]\nmemory_fraction = 0.01\n", problem: "g.toml:2: gpu.memory_fraction: invalid value 0.01: must be at least 0.05"},
		{doc: "[gpu]\ninit_retry = \"-1s\"\n", problem: "gpu.init_retry: invalid value"},
		{doc: "[gpu]\ntelemetry_timeout = \"0s\"\n", problem: "gpu.telemetry_timeout: invalid value"},
		{doc: "[gpu]\nmemory_fraction = \"most\"\n", problem: "gpu.memory_fraction"},
	}
	for _, tt := range tests {
		var env []string
		if tt.env != "" {
			env = []string{tt.env}
		}
		c, err := LoadBytes("g.toml", []byte(tt.doc), env)
		if tt.problem != "" {
			if err == nil || !strings.Contains(err.Error(), tt.problem) {
				t.Errorf("%q %q: %v, want a problem containing %q", tt.doc, tt.env, err, tt.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %q: %v", tt.doc, tt.env, err)
			continue
		}
		if c.GPU != tt.want {
			t.Errorf("%q %q: [gpu] = %+v, want %+v", tt.doc, tt.env, c.GPU, tt.want)
		}
	}
}
