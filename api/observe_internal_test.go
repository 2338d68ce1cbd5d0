package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// nopWriter is a ResponseWriter that keeps one header map and discards the body, so that
// allocation counts see the server's work only.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// TestRequestIDCostWhenDebugIsOff: below debug level the request id costs at most the id
// string and its header slice, and nothing is measured or logged.
func TestRequestIDCostWhenDebugIsOff(t *testing.T) {
	s := New(nil, nil, Options{}, slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	w := &nopWriter{h: http.Header{}}
	r := httptest.NewRequest("GET", "/v2/health/live", nil)
	bare := testing.AllocsPerRun(200, func() { s.mux.ServeHTTP(w, r) })
	generated := testing.AllocsPerRun(200, func() { s.ServeHTTP(w, r) })
	r.Header.Set(HeaderRequestID, "client-1")
	given := testing.AllocsPerRun(200, func() { s.ServeHTTP(w, r) })
	if generated-bare > 2 || given-bare > 1 {
		t.Errorf("allocations per request: %.0f bare, %.0f with a generated id, %.0f with the client's", bare, generated, given)
	}
}

func BenchmarkRequestID(b *testing.B) {
	s := New(nil, nil, Options{}, slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})))
	w := &nopWriter{h: http.Header{}}
	r := httptest.NewRequest("GET", "/v2/health/live", nil)
	b.Run("bare", func(b *testing.B) {
		for b.Loop() {
			s.mux.ServeHTTP(w, r)
		}
	})
	b.Run("with-id", func(b *testing.B) {
		for b.Loop() {
			s.ServeHTTP(w, r)
		}
	})
}
