package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservehttp"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// Repository is what the API needs of the model repository.
type Repository interface {
	Resolve(name, version string) (*models.Version, error)
	Lookup(name string) (*models.Model, error)
	ReadyVersions(m *models.Model) []string
	Index() []models.IndexEntry
	Ready() bool
	LoadModel(ctx context.Context, name string) error
	UnloadModel(ctx context.Context, name string) error
}

// Inferer queues and runs validated requests on model versions, and keeps their statistics.
type Inferer interface {
	Infer(ctx context.Context, t scheduler.Target, req *scheduler.Request) ([]tensor.Tensor, error)
	Stats(t scheduler.Target) scheduler.Snapshot
}

// Component is one part of the daemon as /health and /ready report it.
type Component struct {
	// State is "ok", "degraded", "starting", "unavailable" or "none".
	State  string `json:"state"`
	Detail any    `json:"detail,omitempty"`
}

// Phase is the server's lifecycle phase.
type Phase int32

// Phases, in order.
const (
	PhaseStarting Phase = iota
	PhaseServing
	PhaseStopping
)

func (p Phase) String() string {
	switch p {
	case PhaseServing:
		return "serving"
	case PhaseStopping:
		return "stopping"
	default:
		return "starting"
	}
}

// Settings are what the server reads from the configuration. A configuration reload replaces
// them as a whole; a value is never changed once Options.Settings returned it.
type Settings struct {
	// MaxRequestBytes bounds request bodies (413 above it).
	MaxRequestBytes int64
	// Limits bound what a request may declare (400 above them).
	Limits kserve.Limits
}

// Options configure a Server.
type Options struct {
	// Name and Version are reported by server metadata.
	Name, Version string
	// Settings returns the settings in force; it is called for every request and must not
	// block. Nil: the zero Settings.
	Settings func() *Settings
	// BodyBudget, when set, bounds the request-body bytes in flight
	// (server.max_body_bytes_in_flight); the cluster router shares it.
	BodyBudget *kservehttp.Budget
	// LimitExceeded, when set, is told the name of each limit a request goes over
	// ("max_request_bytes", "max_body_bytes_in_flight" and the kserve.Limits names), for a
	// metric.
	LimitExceeded func(limit string)
	// Components adds the daemon's other components (engine, GPUs, reload) to /health.
	Components func() map[string]Component
	// Metrics, when set, is served at /metrics.
	Metrics http.Handler
	// Refused, when set, counts each inference request that ends in the API without the
	// scheduler having admitted it (malformed, unknown model, not ready, stopping): model is ""
	// for a model that does not exist, version "" when none was resolved. It must not block.
	Refused func(model, version string, outcome scheduler.Outcome)
}

// Server is the HTTP handler.
type Server struct {
	repo    Repository
	infer   Inferer
	opts    Options
	log     *slog.Logger
	started time.Time
	phase   atomic.Int32
	bodies  kservehttp.Pool
	mux     *http.ServeMux
}

// New returns a Server; it starts in PhaseStarting.
func New(repo Repository, infer Inferer, opts Options, log *slog.Logger) *Server {
	s := &Server{repo: repo, infer: infer, opts: opts, log: log, started: time.Now(), mux: http.NewServeMux()}
	if s.opts.Settings == nil {
		s.opts.Settings = func() *Settings { return &Settings{} }
	}
	s.routes()
	return s
}

// settings are the settings in force now.
func (s *Server) settings() *Settings { return s.opts.Settings() }

// SetPhase moves the server to another lifecycle phase.
func (s *Server) SetPhase(p Phase) { s.phase.Store(int32(p)) }

// Phase is the current lifecycle phase.
func (s *Server) Phase() Phase { return Phase(s.phase.Load()) }

func (s *Server) routes() {
	s.handle("GET", "/v2", s.serverMetadata)
	s.handle("GET", "/v2/{$}", s.serverMetadata)
	s.handle("GET", "/v2/health/live", s.live)
	s.handle("GET", "/v2/health/ready", s.ready)
	s.handle("GET", "/health", s.health)
	s.handle("GET", "/ready", s.readiness)
	for _, prefix := range []string{"/v2/models/{model}", "/v2/models/{model}/versions/{version}"} {
		s.handle("GET", prefix, s.modelMetadata)
		s.handle("GET", prefix+"/ready", s.modelReady)
		s.handle("GET", prefix+"/config", s.modelConfig)
		s.handle("POST", prefix+"/infer", s.inferHandler)
		s.handle("GET", prefix+"/stats", s.stats)
	}
	s.handle("POST", "/v2/repository/index", s.repositoryIndex)
	s.handle("POST", "/v2/repository/models/{model}/load", s.repositoryLoad)
	s.handle("POST", "/v2/repository/models/{model}/unload", s.repositoryUnload)
	// A model named "stats" would be shadowed here, as in Triton.
	s.handle("GET", "/v2/models/stats", s.stats)
	if s.opts.Metrics != nil {
		s.mux.Handle("GET /metrics", s.opts.Metrics)
	}
	s.mux.HandleFunc("/", s.notFound)
}

// handle registers h for one method on pattern and answers other methods with a KServe 405
// (net/http's own 405 would be plain text, and the catch-all 404 would hide it).
func (s *Server) handle(method, pattern string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path+"; use "+method)
			return
		}
		h(w, r)
	})
}

// Extensions lists the protocol extensions this server implements.
var extensions = []string{"binary_tensor_data", "model_configuration", "model_repository", "statistics"}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, kserve.ServerMetadata{Name: s.opts.Name, Version: s.opts.Version, Extensions: extensions})
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
}

func (s *Server) isReady() bool { return s.Phase() == PhaseServing && s.repo.Ready() }

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.isReady() {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
}

// WriteJSON answers with status and v as a JSON body, for the daemon's own endpoints that sit
// beside the API.
func WriteJSON(w http.ResponseWriter, status int, v any) { writeJSON(w, status, v) }

// writeJSON writes v as a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteError answers with status and a KServe error body {"error": msg}, for the daemon's
// own endpoints that sit beside the API.
func WriteError(w http.ResponseWriter, status int, msg string) { kservehttp.WriteError(w, status, msg) }

// writeError writes a KServe error body, as the router does: both use kservehttp's.
func writeError(w http.ResponseWriter, status int, msg string) { kservehttp.WriteError(w, status, msg) }

// statusOf maps an error from the repository, the scheduler or the engine to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, kserve.ErrInvalidRequest), errors.Is(err, models.ErrInvalidInput),
		errors.Is(err, scheduler.ErrInvalidRequest):
		return http.StatusBadRequest
	case errors.Is(err, models.ErrModelNotFound), errors.Is(err, models.ErrVersionNotFound):
		return http.StatusNotFound
	case errors.Is(err, models.ErrUnavailable), errors.Is(err, scheduler.ErrStopped),
		errors.Is(err, scheduler.ErrQueueFull), errors.Is(err, scheduler.ErrTimeout):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
