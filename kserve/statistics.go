package kserve

import "time"

// StatisticsResponse is the body of GET /v2/models[/{m}[/versions/{v}]]/stats (the statistics
// extension). The server (package api) writes it and the load generator (package perf) reads
// it.
type StatisticsResponse struct {
	ModelStats []ModelStats `json:"model_stats"`
}

// ModelStats are one model version's statistics.
type ModelStats struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// LastInference is in milliseconds since the Unix epoch; 0 before the first.
	LastInference  uint64       `json:"last_inference"`
	InferenceCount uint64       `json:"inference_count"` // batch rows run
	ExecutionCount uint64       `json:"execution_count"` // model runs
	InferenceStats InferStats   `json:"inference_stats"`
	BatchStats     []BatchStats `json:"batch_stats"`
	// PendingRequestCount (an inferd addition) is the number of requests waiting now.
	PendingRequestCount uint64 `json:"pending_request_count"`
}

// InferStats are per-request counts and times.
type InferStats struct {
	Success       StatDuration `json:"success"`
	Fail          StatDuration `json:"fail"`
	Queue         StatDuration `json:"queue"`
	ComputeInput  StatDuration `json:"compute_input"`
	ComputeInfer  StatDuration `json:"compute_infer"`
	ComputeOutput StatDuration `json:"compute_output"`
}

// BatchStats are the compute times of the executions of one batch size.
type BatchStats struct {
	BatchSize     uint64       `json:"batch_size"`
	ComputeInput  StatDuration `json:"compute_input"`
	ComputeInfer  StatDuration `json:"compute_infer"`
	ComputeOutput StatDuration `json:"compute_output"`
}

// StatDuration is a count of events and their total time in nanoseconds.
type StatDuration struct {
	Count uint64 `json:"count"`
	NS    uint64 `json:"ns"`
}

// Add is d + e.
func (d StatDuration) Add(e StatDuration) StatDuration {
	return StatDuration{d.Count + e.Count, d.NS + e.NS}
}

// Sub is d − e, clamped at zero: counters that went backwards (a restart or a reload between
// two snapshots) count as no activity rather than as a huge number.
func (d StatDuration) Sub(e StatDuration) StatDuration {
	return StatDuration{subClamp(d.Count, e.Count), subClamp(d.NS, e.NS)}
}

// Avg is the mean duration of one counted event (0 when none).
func (d StatDuration) Avg() time.Duration {
	if d.Count == 0 {
		return 0
	}
	return time.Duration(d.NS / d.Count)
}

func subClamp(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
