package perf_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/inferd/inferd/perf"
)

// Two snapshots of a model served in two versions: between them, version 1 ran 40 requests of
// 1 row in 40 executions and version 2 ran 60 requests of 2 rows in 15 executions of 8 rows.
const (
	statsBefore = `{"model_stats":[
	{"name":"m","version":"1","last_inference":1000,"inference_count":100,"execution_count":100,
	 "inference_stats":{"success":{"count":100,"ns":100000000},"fail":{"count":2,"ns":5000},
	  "queue":{"count":100,"ns":10000000},"compute_input":{"count":100,"ns":1000000},
	  "compute_infer":{"count":100,"ns":50000000},"compute_output":{"count":100,"ns":2000000}},
	 "batch_stats":[{"batch_size":1,"compute_input":{"count":100,"ns":1},"compute_infer":{"count":100,"ns":1},"compute_output":{"count":100,"ns":1}}]},
	{"name":"m","version":"2","last_inference":900,"inference_count":0,"execution_count":0,
	 "inference_stats":{"success":{"count":0,"ns":0},"fail":{"count":0,"ns":0},"queue":{"count":0,"ns":0},
	  "compute_input":{"count":0,"ns":0},"compute_infer":{"count":0,"ns":0},"compute_output":{"count":0,"ns":0}},
	 "batch_stats":[]}]}`
	statsAfter = `{"model_stats":[
	{"name":"m","version":"1","last_inference":2000,"inference_count":140,"execution_count":140,
	 "inference_stats":{"success":{"count":140,"ns":140000000},"fail":{"count":3,"ns":6000},
	  "queue":{"count":140,"ns":14000000},"compute_input":{"count":140,"ns":1400000},
	  "compute_infer":{"count":140,"ns":70000000},"compute_output":{"count":140,"ns":2800000}},
	 "batch_stats":[{"batch_size":1,"compute_input":{"count":140,"ns":1},"compute_infer":{"count":140,"ns":1},"compute_output":{"count":140,"ns":1}}]},
	{"name":"m","version":"2","last_inference":2500,"inference_count":120,"execution_count":15,
	 "inference_stats":{"success":{"count":60,"ns":60000000},"fail":{"count":0,"ns":0},
	  "queue":{"count":60,"ns":36000000},"compute_input":{"count":60,"ns":1800000},
	  "compute_infer":{"count":60,"ns":30000000},"compute_output":{"count":60,"ns":1200000}},
	 "batch_stats":[{"batch_size":8,"compute_input":{"count":15,"ns":1},"compute_infer":{"count":15,"ns":1},"compute_output":{"count":15,"ns":1}}],
	 "unknown_field":true}]}`
)

func TestStatsDiff(t *testing.T) {
	before, err := perf.ParseStats([]byte(statsBefore))
	if err != nil {
		t.Fatal(err)
	}
	after, err := perf.ParseStats([]byte(statsAfter))
	if err != nil {
		t.Fatal(err)
	}
	if after.Name != "m" || after.Version != "" || after.LastInference != 2500 || after.InferenceCount != 260 {
		t.Errorf("sum of versions: %+v", after)
	}
	got := perf.DiffStats(before, after)
	// 100 requests: queue (4+36 ms)/100, compute input (0.4+1.8 ms)/100, infer (20+30 ms)/100,
	// output (0.8+1.2 ms)/100; 160 rows in 55 executions.
	want := perf.ServerSplit{
		Successes: 100, Failures: 1, Inferences: 160, Executions: 55, AvgBatch: 160.0 / 55,
		AvgRequest: time.Millisecond, AvgQueue: 400 * time.Microsecond,
		AvgComputeInput: 22 * time.Microsecond, AvgComputeInfer: 500 * time.Microsecond, AvgComputeOutput: 20 * time.Microsecond,
		AvgCompute:      542 * time.Microsecond,
		BatchExecutions: []perf.BatchCount{{BatchSize: 1, Executions: 40}, {BatchSize: 8, Executions: 15}},
	}
	if !equalSplit(got, want) {
		t.Errorf("DiffStats =\n%+v\nwant\n%+v", got, want)
	}

	// Counters that went backwards (a restart) read as no activity, not as wrap-around.
	if d := perf.DiffStats(after, before); d.Successes != 0 || d.Inferences != 0 || d.AvgQueue != 0 || d.AvgBatch != 0 {
		t.Errorf("DiffStats(after, before) = %+v, want no activity", d)
	}

	for _, bad := range []string{``, `{}`, `{"model_stats":[]}`, `{"model_stats":[{"inference_count":-1}]}`, `[1]`} {
		if _, err := perf.ParseStats([]byte(bad)); !errors.Is(err, perf.ErrStats) {
			t.Errorf("ParseStats(%q): err = %v, want ErrStats", bad, err)
		}
	}
}

func equalSplit(a, b perf.ServerSplit) bool {
	if !slices.Equal(a.BatchExecutions, b.BatchExecutions) {
		return false
	}
	a.BatchExecutions, b.BatchExecutions = nil, nil
	return reflect.DeepEqual(a, b)
}
