package api

import (
	"net/http"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
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
	resp := kserve.StatisticsResponse{ModelStats: make([]kserve.ModelStats, 0, len(versions))}
	for _, v := range versions {
		resp.ModelStats = append(resp.ModelStats, modelStats(v, s.infer.Stats(v)))
	}
	writeJSON(w, http.StatusOK, resp)
}

func modelStats(v *models.Version, st scheduler.Snapshot) kserve.ModelStats {
	ms := kserve.ModelStats{
		Name:           v.Model,
		Version:        v.Label(),
		InferenceCount: st.InferenceCount,
		ExecutionCount: st.ExecutionCount,
		InferenceStats: kserve.InferStats{
			Success: wire(st.Success), Fail: wire(st.Fail), Queue: wire(st.Queue),
			ComputeInput: wire(st.ComputeInput), ComputeInfer: wire(st.ComputeInfer), ComputeOutput: wire(st.ComputeOutput),
		},
		BatchStats:          make([]kserve.BatchStats, len(st.Batches)),
		PendingRequestCount: uint64(st.Pending),
	}
	for i, b := range st.Batches {
		ms.BatchStats[i] = kserve.BatchStats{BatchSize: uint64(b.BatchSize),
			ComputeInput: wire(b.ComputeInput), ComputeInfer: wire(b.ComputeInfer), ComputeOutput: wire(b.ComputeOutput)}
	}
	if !st.LastInference.IsZero() {
		ms.LastInference = uint64(st.LastInference.UnixMilli())
	}
	return ms
}

func wire(d scheduler.Duration) kserve.StatDuration {
	return kserve.StatDuration{Count: d.Count, NS: d.Ns}
}
