package perf

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/inferd/inferd/kserve"
)

// Latency summarizes the latencies of one step. Durations are nanoseconds in JSON.
type Latency struct {
	// Samples is how many latencies were recorded (at most the sample cap).
	Samples int           `json:"samples"`
	Mean    time.Duration `json:"mean_ns"`
	P50     time.Duration `json:"p50_ns"`
	P90     time.Duration `json:"p90_ns"`
	P95     time.Duration `json:"p95_ns"`
	P99     time.Duration `json:"p99_ns"`
	Max     time.Duration `json:"max_ns"`
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the nearest-rank method:
// the smallest sample that at least p% of the samples do not exceed. It returns 0 for no
// samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Summarize sorts samples in place and returns their summary.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	return Latency{
		Samples: len(samples),
		Mean:    time.Duration(sum / float64(len(samples))),
		P50:     Percentile(samples, 50),
		P90:     Percentile(samples, 90),
		P95:     Percentile(samples, 95),
		P99:     Percentile(samples, 99),
		Max:     samples[len(samples)-1],
	}
}

// The statistics extension's types, as kserve defines them for the server and this client.
type (
	// Timing is one {"count", "ns"} pair.
	Timing = kserve.StatDuration
	// InferenceStats is the "inference_stats" object.
	InferenceStats = kserve.InferStats
	// BatchStats is one element of "batch_stats".
	BatchStats = kserve.BatchStats
	// ModelStats is one element of "model_stats".
	ModelStats = kserve.ModelStats
)

// ErrStats marks a statistics body that does not parse.
var ErrStats = errors.New("invalid statistics response")

// ParseStats reads a body of GET /v2/models/{m}[/versions/{v}]/stats and returns the sum over
// its entries: without a version the server may report several versions, and a step's load is
// spread over whichever it picked.
func ParseStats(body []byte) (ModelStats, error) {
	var doc kserve.StatisticsResponse
	if err := json.Unmarshal(body, &doc); err != nil {
		return ModelStats{}, fmt.Errorf("%w: %w", ErrStats, err)
	}
	if len(doc.ModelStats) == 0 {
		return ModelStats{}, fmt.Errorf("%w: no model_stats entry", ErrStats)
	}
	sum := ModelStats{Name: doc.ModelStats[0].Name}
	for _, m := range doc.ModelStats {
		if len(doc.ModelStats) == 1 {
			sum.Version = m.Version
		}
		sum.LastInference = max(sum.LastInference, m.LastInference)
		sum.InferenceCount += m.InferenceCount
		sum.ExecutionCount += m.ExecutionCount
		s, t := &sum.InferenceStats, m.InferenceStats
		s.Success = s.Success.Add(t.Success)
		s.Fail = s.Fail.Add(t.Fail)
		s.Queue = s.Queue.Add(t.Queue)
		s.ComputeInput = s.ComputeInput.Add(t.ComputeInput)
		s.ComputeInfer = s.ComputeInfer.Add(t.ComputeInfer)
		s.ComputeOutput = s.ComputeOutput.Add(t.ComputeOutput)
		for _, b := range m.BatchStats {
			i := slices.IndexFunc(sum.BatchStats, func(x BatchStats) bool { return x.BatchSize == b.BatchSize })
			if i < 0 {
				sum.BatchStats = append(sum.BatchStats, BatchStats{BatchSize: b.BatchSize})
				i = len(sum.BatchStats) - 1
			}
			x := &sum.BatchStats[i]
			x.ComputeInput = x.ComputeInput.Add(b.ComputeInput)
			x.ComputeInfer = x.ComputeInfer.Add(b.ComputeInfer)
			x.ComputeOutput = x.ComputeOutput.Add(b.ComputeOutput)
		}
	}
	slices.SortFunc(sum.BatchStats, func(a, b BatchStats) int { return cmp.Compare(a.BatchSize, b.BatchSize) })
	return sum, nil
}

func subClamp(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// ServerSplit is what the server reports it did during one step: the difference of two
// statistics snapshots. Averages are per request (per counted event of each timing).
type ServerSplit struct {
	// Successes and Failures are requests the server finished in the step.
	Successes uint64 `json:"successes"`
	Failures  uint64 `json:"failures"`
	// Inferences is the batch rows run (inference_count); Executions the model runs
	// (execution_count).
	Inferences uint64 `json:"inferences"`
	Executions uint64 `json:"executions"`
	// AvgBatch is Inferences ÷ Executions: rows per model run.
	AvgBatch float64 `json:"avg_batch"`
	// AvgRequest is the server's end-to-end time per successful request.
	AvgRequest       time.Duration `json:"avg_request_ns"`
	AvgQueue         time.Duration `json:"avg_queue_ns"`
	AvgComputeInput  time.Duration `json:"avg_compute_input_ns"`
	AvgComputeInfer  time.Duration `json:"avg_compute_infer_ns"`
	AvgComputeOutput time.Duration `json:"avg_compute_output_ns"`
	// AvgCompute is input + infer + output.
	AvgCompute time.Duration `json:"avg_compute_ns"`
	// BatchExecutions counts model runs per batch size (from batch_stats compute_infer).
	BatchExecutions []BatchCount `json:"batch_executions,omitempty"`
}

// BatchCount is how many model runs had one batch size.
type BatchCount struct {
	BatchSize  uint64 `json:"batch_size"`
	Executions uint64 `json:"executions"`
}

// DiffStats returns the server's activity between two snapshots.
func DiffStats(before, after ModelStats) ServerSplit {
	b, a := before.InferenceStats, after.InferenceStats
	d := ServerSplit{
		Successes:        subClamp(a.Success.Count, b.Success.Count),
		Failures:         subClamp(a.Fail.Count, b.Fail.Count),
		Inferences:       subClamp(after.InferenceCount, before.InferenceCount),
		Executions:       subClamp(after.ExecutionCount, before.ExecutionCount),
		AvgRequest:       a.Success.Sub(b.Success).Avg(),
		AvgQueue:         a.Queue.Sub(b.Queue).Avg(),
		AvgComputeInput:  a.ComputeInput.Sub(b.ComputeInput).Avg(),
		AvgComputeInfer:  a.ComputeInfer.Sub(b.ComputeInfer).Avg(),
		AvgComputeOutput: a.ComputeOutput.Sub(b.ComputeOutput).Avg(),
	}
	d.AvgCompute = d.AvgComputeInput + d.AvgComputeInfer + d.AvgComputeOutput
	if d.Executions > 0 {
		d.AvgBatch = float64(d.Inferences) / float64(d.Executions)
	}
	for _, x := range after.BatchStats {
		n := x.ComputeInfer.Count
		if i := slices.IndexFunc(before.BatchStats, func(y BatchStats) bool { return y.BatchSize == x.BatchSize }); i >= 0 {
			n = subClamp(n, before.BatchStats[i].ComputeInfer.Count)
		}
		if n > 0 {
			d.BatchExecutions = append(d.BatchExecutions, BatchCount{BatchSize: x.BatchSize, Executions: n})
		}
	}
	return d
}
