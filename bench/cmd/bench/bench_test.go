package main

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/inferd/inferd/perf"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{1, 3}, 2},
		{[]float64{5, 1, 3}, 3},
		{[]float64{math.NaN(), 4, 2}, 3},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if got := median([]float64{math.NaN()}); !math.IsNaN(got) {
		t.Errorf("median(NaN) = %v, want NaN", got)
	}
}

func mkStep(c int, rows, cpu float64) perf.Step {
	return perf.Step{Concurrency: c, Requests: 1, RowsPerSec: rows, ClientCPU: cpu}
}

func TestEfficiencyAndSpeedup(t *testing.T) {
	raw := rawRun{rep: &perf.RawReport{Best: perf.RawResult{RowsPerSec: 1000}}}
	srv := serverRun{rep: &perf.Report{Steps: []perf.Step{mkStep(1, 100, 0), mkStep(64, 720, 0.1)}}}
	if got := efficiency(srv, raw, 64); math.Abs(got-0.8) > 1e-9 {
		t.Errorf("efficiency = %v, want 720 / (1000 × 0.9) = 0.8", got)
	}
	if got := efficiency(srv, raw, 16); !math.IsNaN(got) {
		t.Errorf("efficiency at a missing level = %v, want NaN", got)
	}
	if got := efficiency(srv, rawRun{}, 64); !math.IsNaN(got) {
		t.Errorf("efficiency without raw = %v, want NaN", got)
	}
	node := serverRun{rep: &perf.Report{Steps: []perf.Step{mkStep(64, 240, 0)}}}
	if got := speedup(srv, node, 64); got != 3 {
		t.Errorf("speedup = %v, want 3", got)
	}
}

func TestVerdicts(t *testing.T) {
	pass := ratio{perRep: []float64{0.96, 0.98}, target: 0.95}
	if v := pass.verdict(); !strings.HasPrefix(v, "PASS") {
		t.Errorf("verdict = %q, want PASS", v)
	}
	miss := ratio{perRep: []float64{0.7, 0.8}, target: 0.95}
	if v := miss.verdict(); !strings.Contains(v, "MISS") || !strings.Contains(v, "0.200") {
		t.Errorf("verdict = %q, want a MISS by 0.200", v)
	}
	if v := (ratio{perRep: []float64{2}}).verdict(); v != "–" {
		t.Errorf("verdict without target = %q", v)
	}
	if v := (ratio{perRep: []float64{math.NaN()}, target: 1}).verdict(); v != "not measured" {
		t.Errorf("verdict of nothing = %q", v)
	}
}

func TestAddresses(t *testing.T) {
	if a, ok := inferdAddr(`{"time":"x","level":"INFO","msg":"listening","addr":"127.0.0.1:4321","repository":"/r"}`); !ok || a != "127.0.0.1:4321" {
		t.Errorf("inferdAddr = %q, %v", a, ok)
	}
	if _, ok := inferdAddr(`{"msg":"ready"}`); ok {
		t.Error("inferdAddr accepted another message")
	}
	if a, ok := listeningAddr("listening 127.0.0.1:99\n"); !ok || a != "127.0.0.1:99" {
		t.Errorf("listeningAddr = %q, %v", a, ok)
	}
	if _, ok := listeningAddr("node-server: error"); ok {
		t.Error("listeningAddr accepted an error line")
	}
}

func TestModelTOML(t *testing.T) {
	spec := modelSpec{instances: 2, queueDelay: "5ms", inputs: "[[inputs]]\nname = \"x\"\n"}
	batched := modelTOML(spec, 64)
	for _, want := range []string{"max_batch_size = 64", "count = 2", `max_queue_delay = "5ms"`, "[[inputs]]"} {
		if !strings.Contains(batched, want) {
			t.Errorf("batched model.toml lacks %q:\n%s", want, batched)
		}
	}
	if unbatched := modelTOML(spec, 0); strings.Contains(unbatched, "max_queue_delay") || !strings.Contains(unbatched, "count = 2") {
		t.Errorf("unbatched model.toml:\n%s", unbatched)
	}
}

func TestTopConfigs(t *testing.T) {
	sweep := &perf.RawReport{Results: []perf.RawResult{
		{Batch: 1, RowsPerSec: 10}, {Batch: 8, RowsPerSec: 30}, {Batch: 64, RowsPerSec: 20},
	}}
	top := topConfigs(sweep, 2)
	if len(top) != 2 || top[0].Batch != 8 || top[1].Batch != 64 {
		t.Errorf("topConfigs = %+v, want batches 8 then 64", top)
	}
	if n := len(topConfigs(sweep, 5)); n != 3 {
		t.Errorf("topConfigs(5) has %d results, want all 3", n)
	}
	if sweep.Results[0].Batch != 1 {
		t.Error("topConfigs reordered the sweep")
	}
}

func TestRequestBatch(t *testing.T) {
	// 10 runs of 1 row and 1 run of 10 rows: half the requests ran alone, half in the big batch.
	s := &perf.ServerSplit{AvgBatch: 20.0 / 11, BatchExecutions: []perf.BatchCount{{BatchSize: 1, Executions: 10}, {BatchSize: 10, Executions: 1}}}
	if got := requestBatch(s); got != 5.5 {
		t.Errorf("requestBatch = %v, want (10 + 100) / 20 = 5.5", got)
	}
	if got := requestBatch(&perf.ServerSplit{AvgBatch: 3}); got != 3 {
		t.Errorf("requestBatch without a histogram = %v, want AvgBatch", got)
	}
}

func TestDisturbed(t *testing.T) {
	run := func(inst, threads int, cpu float64) rawRun {
		return rawRun{rep: &perf.RawReport{Best: perf.RawResult{Instances: inst, Threads: threads, ClientCPU: cpu}}}
	}
	for _, c := range []struct {
		raw  rawRun
		want bool
	}{
		{run(2, 1, 0.99), false},
		{run(2, 1, 0.64), true},
		{run(1, 1, 0.50), false}, // one thread of two cores
		{run(1, 1, 0.30), true},
		{rawRun{}, false},
	} {
		if got := disturbed(c.raw, 2); got != c.want {
			t.Errorf("disturbed(%+v) = %v, want %v", c.raw.rep, got, c.want)
		}
	}
}

// The configurations measured again: the sweep's fastest, and its fastest that 64 requests in
// flight can fill (2 × 64 cannot), once each.
func TestRawConfigs(t *testing.T) {
	sweep := &perf.RawReport{Results: []perf.RawResult{
		{Batch: 64, Instances: 2, Threads: 1, RowsPerSec: 3800},
		{Batch: 64, Instances: 1, Threads: 2, RowsPerSec: 2550},
		{Batch: 32, Instances: 2, Threads: 1, RowsPerSec: 2900},
		{Batch: 8, Instances: 2, Threads: 1, RowsPerSec: 1000},
	}}
	got := rawConfigs(sweep, 2, 64)
	var desc []string
	for _, x := range got {
		desc = append(desc, fmt.Sprintf("%d×%d@%d", x.Instances, x.Threads, x.Batch))
	}
	if want := "2×1@64 2×1@32 1×2@64"; strings.Join(desc, " ") != want {
		t.Errorf("rawConfigs = %v, want %s", desc, want)
	}
	if fillable(sweep.Results[0], 64) || !fillable(sweep.Results[2], 64) {
		t.Error("fillable: 2 × 64 needs 128 in flight, 2 × 32 fits 64")
	}
}
