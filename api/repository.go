package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/models"
)

// repositoryIndex answers POST /v2/repository/index: every model and version with its state
// and reason; with {"ready": true} only the ready ones.
func (s *Server) repositoryIndex(w http.ResponseWriter, r *http.Request) {
	var filter struct {
		Ready bool `json:"ready"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
		return
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&filter); err != nil {
			writeError(w, http.StatusBadRequest, "repository index request: "+err.Error())
			return
		}
	}
	out := []kserve.RepositoryIndexEntry{}
	for _, e := range s.repo.Index() {
		if filter.Ready && e.State != models.StateReady {
			continue
		}
		out = append(out, kserve.RepositoryIndexEntry{Name: e.Name, Version: e.Version, State: string(e.State), Reason: e.Reason,
			WorkerPID: e.Worker.PID, WorkerRestarts: e.Worker.Restarts, WorkerLastExit: e.Worker.LastExit, WorkerRSSBytes: e.Worker.RSSBytes})
	}
	writeJSON(w, http.StatusOK, out)
}

// repositoryLoad answers POST /v2/repository/models/{m}/load (explicit control mode only).
func (s *Server) repositoryLoad(w http.ResponseWriter, r *http.Request) {
	s.repositoryChange(w, r, s.repo.LoadModel)
}

// repositoryUnload answers POST /v2/repository/models/{m}/unload (explicit control mode only).
func (s *Server) repositoryUnload(w http.ResponseWriter, r *http.Request) {
	s.repositoryChange(w, r, s.repo.UnloadModel)
}

func (s *Server) repositoryChange(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, name string) error) {
	name := r.PathValue("model")
	if err := change(r.Context(), name); err != nil {
		status := statusOf(err)
		if errors.Is(err, models.ErrControl) || errors.Is(err, models.ErrUnavailable) {
			status = http.StatusBadRequest // as Triton: the load was refused or failed
		}
		writeError(w, status, err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}
