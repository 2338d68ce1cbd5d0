package perf_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/perf"
)

// newRuntime loads ONNX Runtime as the command does (INFERD_ONNXRUNTIME_LIBRARY, then the usual
// places, build/onnxruntime of the checkout included). A missing library fails the test: run
// scripts/fetch-ort.sh (make deps).
func newRuntime(t *testing.T) *ort.Runtime {
	t.Helper()
	rt, err := ort.New(ort.RuntimeOptions{}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("ort.New: %v (run make deps, or set %s)", err, ort.EnvLibrary)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func TestRaw(t *testing.T) {
	rt := newRuntime(t)
	path := filepath.Join(t.TempDir(), "mlp.onnx")
	if err := os.WriteFile(path, testmodels.MLP(), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := perf.RunRaw(t.Context(), rt, perf.RawConfig{
		ModelFile: path, Batches: []int{1, 8}, Instances: []int{1, 2}, Threads: []int{1, 2}, Cores: 2,
		Duration: 100 * time.Millisecond, Warmup: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	// instances × threads ≤ 2 cores: (1,1), (1,2), (2,1); each at batch 1 and 8.
	type config struct{ batch, instances, threads int }
	var got []config
	var best perf.RawResult
	for _, r := range rep.Results {
		got = append(got, config{r.Batch, r.Instances, r.Threads})
		if r.Runs <= 0 || r.RowsPerSec <= 0 || r.RowsPerSec != r.RunsPerSec*float64(r.Batch) {
			t.Errorf("batch %d, %d×%d: %d runs, %v runs/s, %v rows/s", r.Batch, r.Instances, r.Threads, r.Runs, r.RunsPerSec, r.RowsPerSec)
		}
		if r.Latency.Samples != int(r.Runs) || r.Latency.P50 <= 0 || r.Latency.P50 > r.Latency.Max {
			t.Errorf("batch %d, %d×%d: latency %+v", r.Batch, r.Instances, r.Threads, r.Latency)
		}
		if r.RowsPerSec > best.RowsPerSec {
			best = r
		}
	}
	want := []config{{1, 1, 1}, {8, 1, 1}, {1, 1, 2}, {8, 1, 2}, {1, 2, 1}, {8, 2, 1}}
	if len(got) != len(want) {
		t.Fatalf("configurations %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("configuration %d = %v, want %v", i, got[i], want[i])
		}
	}
	if rep.Best != best {
		t.Errorf("Best = %+v, want the fastest %+v", rep.Best, best)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "Best: ") {
		t.Errorf("table:\n%s", table.String())
	}

	if _, err := perf.RunRaw(t.Context(), rt, perf.RawConfig{ModelFile: path, Instances: []int{4}, Threads: []int{1}, Cores: 2}); !errors.Is(err, perf.ErrConfig) {
		t.Errorf("no pair fits the cores: err = %v, want ErrConfig", err)
	}
	if _, err := perf.RunRaw(t.Context(), rt, perf.RawConfig{ModelFile: path, Shapes: map[string][]int64{"input": {1, 5}}}); !errors.Is(err, perf.ErrInput) {
		t.Errorf("shape the model refuses: err = %v, want ErrInput", err)
	}
}
