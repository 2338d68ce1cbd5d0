package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/tensor"
)

func (s *Server) inferHandler(w http.ResponseWriter, r *http.Request) {
	if s.Phase() == PhaseStopping {
		writeError(w, http.StatusServiceUnavailable, "server is shutting down")
		return
	}
	body, status, err := s.readBody(w, r)
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	if r.Header.Get("Inference-Header-Content-Length") != "" {
		writeError(w, http.StatusBadRequest, "binary tensor data (Inference-Header-Content-Length) is not supported by this server yet; send JSON data")
		return
	}
	req, err := kserve.DecodeRequest(body)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	v, err := s.repo.Resolve(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	inputs := make([]tensor.Tensor, len(req.Inputs))
	for i := range req.Inputs {
		inputs[i] = req.Inputs[i].Tensor
	}
	names := make([]string, len(req.Outputs))
	for i, o := range req.Outputs {
		names[i] = o.Name
	}
	if err := v.CheckRequest(inputs, names); err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	outputs, err := s.infer.Infer(r.Context(), v, inputs, names)
	if err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			// The client went away; there is nobody to answer.
			s.log.Debug("client left before its inference finished", "model", v.Model, "version", v.Number)
			return
		}
		status := statusOf(err)
		if status >= 500 {
			s.log.Error("inference failed", "model", v.Model, "version", v.Number, "err", err)
		}
		writeError(w, status, err.Error())
		return
	}
	resp := kserve.InferResponse{ModelName: v.Model, ModelVersion: v.Label(), ID: req.ID, Outputs: outputs}
	out := kserve.EncodeResponse(make([]byte, 0, 256), &resp)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(out)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// readBody reads a request body bounded by MaxRequestBytes; a larger body is a 413.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	limit := s.opts.MaxRequestBytes
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge,
			fmt.Errorf("request body of %d bytes is over the limit of %d bytes (server.max_request_bytes)", r.ContentLength, limit)
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	size := r.ContentLength
	if size < 0 || size > limit {
		size = 0
	}
	buf := make([]byte, 0, size+1)
	for {
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, 0, nil
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge,
				fmt.Errorf("request body is over the limit of %d bytes (server.max_request_bytes)", limit)
		}
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("reading request body: %w", err)
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}
