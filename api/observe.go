package api

import (
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// HeaderRequestID carries a request's id. Every response has it: the client's own when the
// request sent a well-formed one (so a client's or a proxy's id follows the request into
// inferd's logs), otherwise one inferd made. Debug request logs and error logs carry it.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLen bounds an incoming id; longer ones are replaced.
const maxRequestIDLen = 128

// ServeHTTP gives every request an id and routes it. At debug level it also logs each request
// once it is answered; otherwise the id costs one header and nothing is measured.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderRequestID)
	if !validRequestID(id) {
		id = newRequestID()
	}
	w.Header()[HeaderRequestID] = []string{id}
	if !s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.mux.ServeHTTP(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	start := time.Now()
	s.mux.ServeHTTP(sw, r)
	s.log.LogAttrs(r.Context(), slog.LevelDebug, "request",
		slog.String("request_id", id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", sw.code()),
		slog.Int64("bytes", sw.bytes),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", r.RemoteAddr))
}

// validRequestID accepts 1 to maxRequestIDLen characters that are safe in a header and a log
// line: letters, digits and - _ . : / + = @.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := range len(id) {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '/', c == '+', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}

// newRequestID returns 128 random bits in hex. math/rand/v2's generator is per-thread and
// needs no lock; an id needs to be unique, not secret.
func newRequestID() string {
	const hex = "0123456789abcdef"
	var b [32]byte
	for half := range 2 {
		x := rand.Uint64()
		for i := range 16 {
			b[half*16+i] = hex[x>>60]
			x <<= 4
		}
	}
	return string(b[:])
}

// requestID is the id ServeHTTP gave the request that w answers.
func requestID(w http.ResponseWriter) string { return w.Header().Get(HeaderRequestID) }

// statusWriter remembers the status and size of a response, for the debug request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// inferFailed answers an inference request that ends in the API before it is resolved to a
// model version, and counts it.
func (s *Server) inferFailed(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.refused(r, nil, outcomeOf(status))
	writeError(w, status, msg)
}

// refuse counts a request that ends in run without the scheduler having admitted it, with the
// error it ends in; a client that left meanwhile is canceled, whatever the error.
func (s *Server) refuse(r *http.Request, v *models.Version, err error) {
	o := outcomeOf(statusOf(err))
	if r.Context().Err() != nil {
		o = scheduler.OutcomeCanceled
	}
	s.refused(r, v, o)
}

// outcomeOf is the outcome of an inference request the API refuses with status: statusOf is
// the one mapping from an error to a status, and docs/metrics.md's table the one from a
// status to an outcome.
func outcomeOf(status int) scheduler.Outcome {
	switch {
	case status == http.StatusNotFound:
		return scheduler.OutcomeNotFound
	case status == http.StatusServiceUnavailable:
		return scheduler.OutcomeUnavailable
	case status >= 500:
		return scheduler.OutcomeServerError
	default:
		return scheduler.OutcomeClientError
	}
}

// refused reports an inference request the scheduler did not count to Options.Refused. The
// model label is the path's model only when that model exists, and the version only when one
// was resolved: a client cannot make up series.
func (s *Server) refused(r *http.Request, v *models.Version, outcome scheduler.Outcome) {
	if s.opts.Refused == nil {
		return
	}
	var model, version string
	switch {
	case v != nil:
		model, version = v.Model, v.Label()
	case r.PathValue("model") != "":
		if _, err := s.repo.Lookup(r.PathValue("model")); err == nil {
			model = r.PathValue("model")
		}
	}
	s.opts.Refused(model, version, outcome)
}
