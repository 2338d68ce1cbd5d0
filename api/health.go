package api

import (
	"maps"
	"net/http"
	"time"

	"github.com/inferd/inferd/models"
)

// healthResponse is the body of /health and /ready.
type healthResponse struct {
	Status        string               `json:"status"`
	Ready         bool                 `json:"ready"`
	Phase         string               `json:"phase"`
	Version       string               `json:"version"`
	UptimeSeconds float64              `json:"uptime_seconds"`
	Components    map[string]Component `json:"components"`
}

type modelHealth struct {
	Name     string `json:"name"`
	Version  string `json:"version,omitempty"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Provider string `json:"execution_provider,omitempty"`
	GPUs     []int  `json:"gpus,omitempty"`
	// Fallback says why a version that asked for a GPU runs on the CPU.
	Fallback string `json:"cpu_fallback_reason,omitempty"`
	// Worker is the version's worker process (engine.isolation = "process").
	Worker *workerHealth `json:"worker,omitempty"`
}

type workerHealth struct {
	PID      int    `json:"pid"`
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
	RSSBytes uint64 `json:"rss_bytes"`
}

// health answers liveness: 200 for as long as the process serves HTTP, with every component's
// state in the body.
func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.healthBody())
}

// readiness answers 200 when the server is serving and its first model load has finished, else 503,
// with the same body as /health. A model that failed to load does not make the node unready
// (the other models serve); it shows as "degraded".
func (s *Server) readiness(w http.ResponseWriter, _ *http.Request) {
	body := s.healthBody()
	status := http.StatusOK
	if !body.Ready {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, body)
}

func (s *Server) healthBody() healthResponse {
	comps := map[string]Component{}
	if s.opts.Components != nil {
		maps.Copy(comps, s.opts.Components())
	}
	comps["models"] = s.modelsComponent()
	ready := s.isReady()
	status := "ok"
	for _, c := range comps {
		if c.State != "ok" && c.State != "none" {
			status = "degraded"
		}
	}
	if !ready {
		status = s.Phase().String()
	}
	return healthResponse{
		Status:        status,
		Ready:         ready,
		Phase:         s.Phase().String(),
		Version:       s.opts.Version,
		UptimeSeconds: time.Since(s.started).Seconds(),
		Components:    comps,
	}
}

func (s *Server) modelsComponent() Component {
	index := s.repo.Index()
	list := make([]modelHealth, 0, len(index))
	state := "ok"
	for _, e := range index {
		h := modelHealth{Name: e.Name, Version: e.Version, State: string(e.State), Reason: e.Reason}
		if w := e.Worker; w.PID != 0 || w.Restarts != 0 || w.LastExit != "" {
			h.Worker = &workerHealth{PID: w.PID, Restarts: w.Restarts, LastExit: w.LastExit, RSSBytes: w.RSSBytes}
		}
		if e.State == models.StateReady {
			if v, err := s.repo.Resolve(e.Name, e.Version); err == nil {
				h.Provider, h.GPUs, h.Fallback = v.Provider, v.GPUs, v.Fallback
			}
		} else {
			state = "degraded"
		}
		list = append(list, h)
	}
	if len(list) == 0 {
		state = "unavailable"
	}
	return Component{State: state, Detail: list}
}
