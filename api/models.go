package api

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

// platform is what model metadata reports for every model inferd serves.
const platform = "onnxruntime_onnx"

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	v, err := s.repo.Resolve(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	m, err := s.repo.Lookup(v.Model)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, kserve.ModelMetadata{
		Name:     v.Model,
		Versions: s.repo.ReadyVersions(m),
		Platform: platform,
		Inputs:   tensorMetadata(v.Signature.Inputs),
		Outputs:  tensorMetadata(v.Signature.Outputs),
	})
}

func tensorMetadata(specs []tensor.Spec) []kserve.TensorMetadata {
	out := make([]kserve.TensorMetadata, len(specs))
	for i, s := range specs {
		out[i] = kserve.TensorMetadata{Name: s.Name, Datatype: string(s.DataType), Shape: s.Shape}
	}
	return out
}

// modelReady answers 200 with ready=true, or 503 with ready=false when the model or version
// exists but cannot serve; unknown names are 404.
func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("model")
	_, err := s.repo.Resolve(name, r.PathValue("version"))
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, kserve.ModelReady{Name: name, Ready: true})
	case errors.Is(err, models.ErrUnavailable):
		writeJSON(w, http.StatusServiceUnavailable, kserve.ModelReady{Name: name, Ready: false})
	default:
		writeError(w, statusOf(err), err.Error())
	}
}

// modelConfigResponse is a model's effective configuration, in the shape of Triton's model
// configuration JSON where the two overlap.
type modelConfigResponse struct {
	Name          string               `json:"name"`
	Version       string               `json:"version"`
	Platform      string               `json:"platform"`
	Backend       string               `json:"backend"`
	MaxBatchSize  int                  `json:"max_batch_size"`
	Input         []configTensor       `json:"input"`
	Output        []configTensor       `json:"output"`
	InstanceGroup []instanceGroup      `json:"instance_group"`
	VersionPolicy models.VersionPolicy `json:"version_policy"`
	Provider      string               `json:"execution_provider"`
	// Fallback says why a version that asked for a GPU runs on the CPU.
	Fallback string `json:"cpu_fallback_reason,omitempty"`
	// Tuning is the chosen configuration and why (calibrated, or as model.toml writes it).
	Tuning models.Tuning `json:"tuning"`
}

type configTensor struct {
	Name     string  `json:"name"`
	DataType string  `json:"data_type"`
	Dims     []int64 `json:"dims"`
}

type instanceGroup struct {
	Count int    `json:"count"`
	Kind  string `json:"kind"`
	GPUs  []int  `json:"gpus,omitempty"` // as Triton's instance_group: the GPUs used
}

func (s *Server) modelConfig(w http.ResponseWriter, r *http.Request) {
	v, err := s.repo.Resolve(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	kind := "KIND_CPU"
	if v.Provider == engine.ProviderCUDA {
		kind = "KIND_GPU"
	}
	writeJSON(w, http.StatusOK, modelConfigResponse{
		Name:          v.Model,
		Version:       v.Label(),
		Platform:      platform,
		Backend:       "onnxruntime",
		MaxBatchSize:  v.Config.MaxBatchSize,
		Input:         configTensors(v.Signature.Inputs, v.Config.MaxBatchSize),
		Output:        configTensors(v.Signature.Outputs, v.Config.MaxBatchSize),
		InstanceGroup: []instanceGroup{{Count: len(v.Sessions), Kind: kind, GPUs: slices.Compact(slices.Sorted(slices.Values(v.GPUs)))}},
		VersionPolicy: v.Config.VersionPolicy,
		Provider:      v.Provider,
		Fallback:      v.Fallback,
		Tuning:        v.Tuning,
	})
}

// configTensors lists tensors as Triton's configuration does: with batching on, dims leave
// out the batch dimension, and datatypes are spelled TYPE_<name> (TYPE_STRING for BYTES).
func configTensors(specs []tensor.Spec, maxBatch int) []configTensor {
	out := make([]configTensor, len(specs))
	for i, s := range specs {
		dims := s.Shape
		if maxBatch > 0 && len(dims) > 0 {
			dims = dims[1:]
		}
		if dims == nil {
			dims = []int64{}
		}
		dt := "TYPE_" + strings.ToUpper(string(s.DataType))
		if s.DataType == tensor.Bytes {
			dt = "TYPE_STRING"
		}
		out[i] = configTensor{Name: s.Name, DataType: dt, Dims: dims}
	}
	return out
}
