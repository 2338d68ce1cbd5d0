package scheduler_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/scheduler"
)

func TestSetParameters(t *testing.T) {
	forever := time.Duration(1<<62) / time.Microsecond * time.Microsecond
	tests := []struct {
		name     string
		params   map[string]any
		priority int
		timeout  time.Duration
		err      string // a part of the message; "" for success
	}{
		{"none", nil, 0, 0, ""},
		{"others ignored", map[string]any{"binary_data_output": true, "sequence_id": "x"}, 0, 0, ""},
		{"json numbers", map[string]any{"priority": 2.0, "timeout": 1500.0}, 2, 1500 * time.Microsecond, ""},
		{"zero is the default", map[string]any{"priority": 0.0, "timeout": 0.0}, 0, 0, ""},
		{"int64", map[string]any{"priority": int64(3), "timeout": int64(7)}, 3, 7 * time.Microsecond, ""},
		{"uint64", map[string]any{"priority": uint64(1), "timeout": uint64(math.MaxUint64)}, 1, forever, ""},
		{"priority capped", map[string]any{"priority": float64(1 << 53)}, 1 << 30, 0, ""},
		{"timeout capped", map[string]any{"timeout": float64(1 << 53)}, 0, forever, ""},
		{"priority string", map[string]any{"priority": "high"}, 0, 0, `"priority" must be a non-negative integer, got high`},
		{"priority fraction", map[string]any{"priority": 1.5}, 0, 0, `"priority" must be a non-negative integer, got 1.5`},
		{"priority negative int64", map[string]any{"priority": int64(-1)}, 0, 0, `"priority"`},
		{"timeout negative", map[string]any{"timeout": -5.0}, 0, 0, `"timeout" must be a non-negative integer, got -5`},
		{"timeout beyond 2^53", map[string]any{"timeout": 1e300}, 0, 0, `"timeout"`},
		{"timeout bool", map[string]any{"timeout": true}, 0, 0, `"timeout"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req scheduler.Request
			err := req.SetParameters(tt.params)
			if tt.err != "" {
				if !errors.Is(err, scheduler.ErrInvalidRequest) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want ErrInvalidRequest saying %q", err, tt.err)
				}
				return
			}
			if err != nil || req.Priority != tt.priority || req.Timeout != tt.timeout {
				t.Errorf("priority %d timeout %s err %v, want %d and %s", req.Priority, req.Timeout, err, tt.priority, tt.timeout)
			}
		})
	}
}
