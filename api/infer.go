package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservehttp"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

func (s *Server) inferHandler(w http.ResponseWriter, r *http.Request) {
	if s.Phase() == PhaseStopping {
		s.inferFailed(w, r, nil, http.StatusServiceUnavailable, "server is shutting down")
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		var be *kservehttp.Error
		errors.As(err, &be)
		s.inferFailed(w, r, nil, be.Status, err.Error())
		return
	}
	// The request's tensors alias body until the response is written; then it is reused.
	defer body.Release()
	headerLength, err := kserve.ParseHeaderLength(r.Header.Get(kserve.HeaderContentLength))
	if err != nil {
		s.inferFailed(w, r, nil, statusOf(err), err.Error())
		return
	}
	req, err := kserve.DecodeLimited(body.Parts(), headerLength, *s.limits.Load())
	if err != nil {
		if le := (*kserve.LimitError)(nil); errors.As(err, &le) {
			s.limitExceeded(le.Limit)
		}
		s.inferFailed(w, r, nil, statusOf(err), err.Error())
		return
	}
	sreq, err := schedulingRequest(req)
	if err != nil {
		s.inferFailed(w, r, nil, statusOf(err), err.Error())
		return
	}
	v, outputs, counted, err := s.run(r, sreq)
	if err != nil {
		if r.Context().Err() != nil {
			// The client went away; there is nobody to answer.
			s.log.Debug("client left before its inference finished", "model", r.PathValue("model"), "request_id", requestID(w))
			if !counted {
				s.refused(r, v, OutcomeCanceled)
			}
			return
		}
		status := statusOf(err)
		if status == http.StatusInternalServerError {
			s.log.Error("inference failed", "model", r.PathValue("model"), "version", r.PathValue("version"), "request_id", requestID(w), "err", err)
		}
		if errors.Is(err, scheduler.ErrQueueFull) {
			w.Header().Set("Retry-After", "1")
		}
		if counted {
			writeError(w, status, err.Error())
		} else {
			s.inferFailed(w, r, v, status, err.Error())
		}
		return
	}
	resp := kserve.InferResponse{ModelName: v.Model, ModelVersion: v.Label(), ID: req.ID, Outputs: outputs, Binary: req.BinaryOutputs(outputs)}
	writeResponse(w, &resp)
}

// maxResolves bounds how often one request re-resolves a version that was replaced under it.
const maxResolves = 3

// run resolves the model version and runs the request on it. A version can be replaced or
// unloaded between Resolve and the scheduler taking the request; the request never ran then,
// so it resolves again and runs on what serves now: a swap drops nothing. counted reports that
// the scheduler counted the request's outcome (it counts every request it is handed, except
// those it refuses with ErrStopped); v is nil when no version was resolved.
func (s *Server) run(r *http.Request, sreq *scheduler.Request) (v *models.Version, outputs []tensor.Tensor, counted bool, err error) {
	for attempt := 1; ; attempt++ {
		v, err := s.repo.Resolve(r.PathValue("model"), r.PathValue("version"))
		if err != nil {
			return nil, nil, false, err
		}
		if err := v.CheckRequest(sreq.Inputs, sreq.Outputs); err != nil {
			return v, nil, false, err
		}
		outputs, err := s.infer.Infer(r.Context(), TargetOf(v), sreq)
		stopped := err != nil && errors.Is(err, scheduler.ErrStopped)
		if stopped && v.Retired() && attempt < maxResolves {
			continue
		}
		return v, outputs, !stopped, err
	}
}

// writeResponse sends an inference response. Binary outputs go to the connection straight
// from the tensors' buffers, after the JSON part, without being copied into a body first.
func writeResponse(w http.ResponseWriter, resp *kserve.InferResponse) {
	header, parts := kserve.ResponseParts(nil, resp)
	h := w.Header()
	size := len(header)
	if parts != nil {
		h.Set("Content-Type", "application/octet-stream")
		h.Set(kserve.HeaderContentLength, strconv.Itoa(len(header)))
		for _, p := range parts {
			size += len(p)
		}
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(header); err != nil {
		return
	}
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return
		}
	}
}

// target adapts a model version to the scheduler. Targets of the same version compare equal,
// so the scheduler finds the version's queue whichever request made the target.
type target struct{ *models.Version }

// TargetOf is the scheduler's view of a model version (the daemon drains retired versions
// through it).
func TargetOf(v *models.Version) scheduler.Target { return target{v} }

// Series names the model version, so that the scheduler sums the statistics of its generations.
func (t target) Series() (model, version string) { return t.Model, t.Label() }

// Policy maps the version's settings onto the scheduler's policy.
func (t target) Policy() scheduler.Policy {
	b := t.Config.DynamicBatching
	return scheduler.Policy{
		MaxBatchSize:        t.Config.MaxBatchSize,
		PreferredBatchSizes: b.PreferredBatchSizes,
		MaxQueueDelay:       time.Duration(b.MaxQueueDelay),
		AdaptiveDelay:       b.AdaptiveDelay != nil && *b.AdaptiveDelay,
		MaxQueueSize:        b.MaxQueueSize,
		PriorityLevels:      b.PriorityLevels,
		DefaultPriority:     b.DefaultPriority,
		DefaultTimeout:      time.Duration(b.DefaultTimeout),
	}
}

var errInvalidParameter = errors.New("invalid request parameter")

// schedulingRequest takes the tensors and the reserved parameters (priority, timeout in
// microseconds, as Triton) out of a decoded request.
func schedulingRequest(req *kserve.InferRequest) (*scheduler.Request, error) {
	sreq := &scheduler.Request{
		Inputs:  make([]tensor.Tensor, len(req.Inputs)),
		Outputs: make([]string, len(req.Outputs)),
	}
	for i := range req.Inputs {
		sreq.Inputs[i] = req.Inputs[i].Tensor
	}
	for i, o := range req.Outputs {
		sreq.Outputs[i] = o.Name
	}
	if v, ok := req.Parameters["priority"]; ok {
		n, err := nonNegativeInt("priority", v)
		if err != nil {
			return nil, err
		}
		sreq.Priority = int(min(n, 1<<30))
	}
	if v, ok := req.Parameters["timeout"]; ok {
		n, err := nonNegativeInt("timeout", v)
		if err != nil {
			return nil, err
		}
		sreq.Timeout = time.Duration(min(n, int64(time.Duration(1<<62)/time.Microsecond))) * time.Microsecond
	}
	return sreq, nil
}

func nonNegativeInt(name string, v any) (int64, error) {
	f, ok := v.(float64)
	if !ok || f < 0 || f != math.Trunc(f) || f > 1<<53 {
		return 0, fmt.Errorf("%w: %q must be a non-negative integer, got %v", errInvalidParameter, name, v)
	}
	return int64(f), nil
}

// readBody reads a request body bounded by MaxRequestBytes (a larger body is a 413), or takes
// the one the cluster router read and handed on. The buffer comes from the server's pool; the
// caller releases it once nothing refers to it. Every error is a *kservehttp.Error.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*kservehttp.Body, error) {
	body, err := kservehttp.Read(w, r, s.maxBody.Load(), &s.bodies)
	if be := (*kservehttp.Error)(nil); errors.As(err, &be) && be.Limit != "" {
		s.limitExceeded(be.Limit)
	}
	return body, err
}

func (s *Server) limitExceeded(limit string) {
	if s.opts.LimitExceeded != nil {
		s.opts.LimitExceeded(limit)
	}
}
