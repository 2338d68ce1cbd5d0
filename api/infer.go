package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/inferd/inferd/dispatch"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservehttp"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
	"github.com/inferd/inferd/tracing"
	"github.com/inferd/inferd/tracing/span"
)

func (s *Server) inferHandler(w http.ResponseWriter, r *http.Request) {
	if s.Phase() == PhaseStopping {
		s.inferFailed(w, r, http.StatusServiceUnavailable, "server is shutting down")
		return
	}
	// decode covers reading the body, decoding it and checking its parameters; it ends at
	// the first return below that refuses the request, or before the request is queued.
	_, decode := span.Start(r.Context(), "decode")
	defer decode.End()
	body, err := s.readBody(w, r)
	if err != nil {
		status := http.StatusBadRequest // readBody's errors are *kservehttp.Error; never panic if not
		if be := (*kservehttp.Error)(nil); errors.As(err, &be) {
			status = be.Status
			if be.RetryAfter {
				w.Header().Set("Retry-After", "1")
			}
		}
		s.inferFailed(w, r, status, err.Error())
		return
	}
	// The request's tensors alias body until the response is written; then it is reused.
	defer body.Release()
	headerLength, err := kserve.ParseHeaderLength(r.Header.Get(kserve.HeaderContentLength))
	if err != nil {
		s.inferFailed(w, r, statusOf(err), err.Error())
		return
	}
	req, err := kserve.DecodeLimited(body.Parts(), headerLength, s.settings().Limits)
	if err != nil {
		if le := (*kserve.LimitError)(nil); errors.As(err, &le) {
			s.limitExceeded(le.Limit)
		}
		s.inferFailed(w, r, statusOf(err), err.Error())
		return
	}
	sreq, err := schedulingRequest(req)
	if err != nil {
		s.inferFailed(w, r, statusOf(err), err.Error())
		return
	}
	decode.End()
	sreq.Trace = tracing.Queue(r.Context())
	v, outputs, err := s.run(r, sreq)
	if err != nil {
		if r.Context().Err() != nil {
			// The client went away; there is nobody to answer.
			s.log.DebugContext(r.Context(), "client left before its inference finished", "model", r.PathValue("model"), "request_id", requestID(w))
			return
		}
		status := statusOf(err)
		if status == http.StatusInternalServerError {
			s.log.ErrorContext(r.Context(), "inference failed", "model", r.PathValue("model"), "version", r.PathValue("version"), "request_id", requestID(w), "err", err)
		}
		if errors.Is(err, scheduler.ErrQueueFull) {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, status, err.Error())
		return
	}
	tracing.SetVersion(r.Context(), v.Label())
	resp := kserve.InferResponse{ModelName: v.Model, ModelVersion: v.Label(), ID: req.ID, Outputs: outputs, Binary: req.BinaryOutputs(outputs)}
	_, encode := span.Start(r.Context(), "encode")
	writeResponse(w, &resp)
	encode.End()
}

// run resolves the model version and runs the request on it (dispatch.Run: a version swapped
// out before the scheduler took the request is resolved again). The scheduler counts every
// request it admits; run counts those that end before it does, so that the caller only
// answers. v is nil when no version was resolved.
func (s *Server) run(r *http.Request, sreq *scheduler.Request) (v *models.Version, outputs []tensor.Tensor, err error) {
	res := dispatch.Run(r.Context(), s.repo, s.infer, r.PathValue("model"), r.PathValue("version"), sreq)
	if res.Refused {
		s.refuse(r, res.Version, res.Err)
	}
	return res.Version, res.Outputs, res.Err
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

// schedulingRequest takes the tensors and the scheduling parameters (priority, timeout) out of
// a decoded request.
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
	if err := sreq.SetParameters(req.Parameters); err != nil {
		return nil, err
	}
	return sreq, nil
}

// readBody reads a request body bounded by MaxRequestBytes (a larger body is a 413) within
// Options.BodyBudget (a 503 with Retry-After when it is full), or takes the one the cluster
// router read and handed on. The buffer comes from the server's pool; the caller releases it
// once nothing refers to it. Every error is a *kservehttp.Error.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*kservehttp.Body, error) {
	body, err := kservehttp.Read(w, r, kservehttp.Options{Limit: s.settings().MaxRequestBytes, Pool: &s.bodies, Budget: s.opts.BodyBudget})
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
