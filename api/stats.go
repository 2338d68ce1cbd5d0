package api

import (
	"net/http"

	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// The statistics extension's JSON.
type (
	statsResponse struct {
		ModelStats []modelStats `json:"model_stats"`
	}
	modelStats struct {
		Name           string                 `json:"name"`
		Version        string                 `json:"version"`
		LastInference  int64                  `json:"last_inference"`
		InferenceCount uint64                 `json:"inference_count"`
		ExecutionCount uint64                 `json:"execution_count"`
		InferenceStats inferenceStats         `json:"inference_stats"`
		BatchStats     []scheduler.BatchStats `json:"batch_stats"`
		// PendingRequestCount (an inferd addition) is the number of requests waiting now.
		PendingRequestCount int `json:"pending_request_count"`
	}
	inferenceStats struct {
		Success       scheduler.Duration `json:"success"`
		Fail          scheduler.Duration `json:"fail"`
		Queue         scheduler.Duration `json:"queue"`
		ComputeInput  scheduler.Duration `json:"compute_input"`
		ComputeInfer  scheduler.Duration `json:"compute_infer"`
		ComputeOutput scheduler.Duration `json:"compute_output"`
	}
)

// stats answers GET /v2/models/stats (every loaded version), /v2/models/{m}/stats (its loaded
// versions) and /v2/models/{m}/versions/{v}/stats.
func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	name, label := r.PathValue("model"), r.PathValue("version")
	var versions []*models.Version
	switch {
	case label != "":
		v, err := s.repo.Resolve(name, label)
		if err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		versions = append(versions, v)
	default:
		if name != "" {
			if _, err := s.repo.Lookup(name); err != nil {
				writeError(w, statusOf(err), err.Error())
				return
			}
		}
		for _, e := range s.repo.Index() {
			if e.State != models.StateReady || (name != "" && e.Name != name) {
				continue
			}
			if v, err := s.repo.Resolve(e.Name, e.Version); err == nil {
				versions = append(versions, v)
			}
		}
	}
	resp := statsResponse{ModelStats: make([]modelStats, 0, len(versions))}
	for _, v := range versions {
		st := s.infer.Stats(TargetOf(v))
		ms := modelStats{
			Name:           v.Model,
			Version:        v.Label(),
			InferenceCount: st.InferenceCount,
			ExecutionCount: st.ExecutionCount,
			InferenceStats: inferenceStats{
				Success: st.Success, Fail: st.Fail, Queue: st.Queue,
				ComputeInput: st.ComputeInput, ComputeInfer: st.ComputeInfer, ComputeOutput: st.ComputeOutput,
			},
			BatchStats:          st.Batches,
			PendingRequestCount: st.Pending,
		}
		if ms.BatchStats == nil {
			ms.BatchStats = []scheduler.BatchStats{}
		}
		if !st.LastInference.IsZero() {
			ms.LastInference = st.LastInference.UnixMilli()
		}
		resp.ModelStats = append(resp.ModelStats, ms)
	}
	writeJSON(w, http.StatusOK, resp)
}
