package api_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// syncBuffer is a log destination that tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// refusals records what the API reports through Options.Refused.
type refusals struct {
	mu   sync.Mutex
	list []string
}

func (r *refusals) add(model, version string, outcome scheduler.Outcome) {
	r.mu.Lock()
	r.list = append(r.list, model+"/"+version+"/"+outcome.String())
	r.mu.Unlock()
}

func (r *refusals) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.list
	r.list = nil
	return out
}

// observedServer serves a fake model "m" (FP32 [1] identity) and a model "broken" that fails to
// load, logging at level into the returned buffer and recording refusals.
func observedServer(t *testing.T, level *slog.LevelVar) (*httptest.Server, *api.Server, *scheduler.Scheduler, *syncBuffer, *refusals) {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "m/1/model.onnx", []byte("fake"))
	testutil.WriteFile(t, dir, "broken/1/model.onnx", []byte("fake"))
	rt := enginetest.New()
	sig := engine.Signature{
		Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{1}}},
		Outputs: []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{1}}},
	}
	rt.Register(filepath.Join(dir, "m", "1", "model.onnx"), sig, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil })
	repo := models.New(dir, rt, models.Defaults{MaxQueueSize: 16}, quiet)
	if err := repo.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	sched := scheduler.New(quiet)
	logs := &syncBuffer{}
	rec := &refusals{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	srv := api.New(repo, sched, api.Options{Name: "inferd", Settings: maxBodyOnly, Refused: rec.add}, log)
	srv.SetPhase(api.PhaseServing)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		_ = sched.Close(context.Background())
	})
	return hs, srv, sched, logs, rec
}

func getWithID(t *testing.T, url, id string) result {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id != "" {
		req.Header.Set(api.HeaderRequestID, id)
	}
	return send(t, req)
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRequestID(t *testing.T) {
	hs, _, _, _, _ := observedServer(t, new(slog.LevelVar))
	a := getWithID(t, hs.URL+"/v2/health/live", "").header.Get(api.HeaderRequestID)
	b := getWithID(t, hs.URL+"/v2/nowhere", "").header.Get(api.HeaderRequestID)
	if !generatedID.MatchString(a) || !generatedID.MatchString(b) || a == b {
		t.Errorf("generated ids %q and %q, want two different 32-digit hex ids", a, b)
	}
	for _, tt := range []struct{ sent, kept string }{
		{"client-42", "client-42"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"a b", ""},
		{`x"y`, ""},
		{strings.Repeat("x", 129), ""},
	} {
		got := getWithID(t, hs.URL+"/v2/health/live", tt.sent).header.Get(api.HeaderRequestID)
		if tt.kept != "" && got != tt.kept {
			t.Errorf("sent %q, answered %q: a well-formed id is kept", tt.sent, got)
		}
		if tt.kept == "" && !generatedID.MatchString(got) {
			t.Errorf("sent %q, answered %q: a malformed id is replaced", tt.sent, got)
		}
	}
}

// TestDebugRequestLog: at info nothing is logged per request; once the level is debug (as a
// configuration reload sets it) each request is logged with the id its response carries.
func TestDebugRequestLog(t *testing.T) {
	level := new(slog.LevelVar)
	hs, _, _, logs, _ := observedServer(t, level)
	getWithID(t, hs.URL+"/v2/health/live", "")
	if strings.Contains(logs.String(), "msg=request") {
		t.Fatalf("request logged at info:\n%s", logs)
	}
	level.Set(slog.LevelDebug)
	r := do(t, "POST", hs.URL+"/v2/models/m/infer", fakeRequest)
	id := r.header.Get(api.HeaderRequestID)
	if r.status != 200 || id == "" {
		t.Fatalf("infer: %d %s, id %q", r.status, r.body, id)
	}
	line := grep(logs.String(), "request_id="+id)
	for _, want := range []string{"level=DEBUG", "msg=request", "method=POST", "path=/v2/models/m/infer", "status=200", "bytes=", "duration=", "remote=127.0.0.1:"} {
		if !strings.Contains(line, want) {
			t.Errorf("request log line lacks %q: %q", want, line)
		}
	}
	miss := getWithID(t, hs.URL+"/v2/models/nope", "trace-1")
	if line := grep(logs.String(), "request_id=trace-1"); miss.status != 404 || !strings.Contains(line, "status=404") {
		t.Errorf("404 logged as %q", line)
	}
	level.Set(slog.LevelInfo)
	before := logs.String()
	getWithID(t, hs.URL+"/v2/health/live", "")
	if logs.String() != before {
		t.Errorf("request logged after the level went back to info:\n%s", strings.TrimPrefix(logs.String(), before))
	}
}

func grep(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// TestRefusedOutcomes: each inference request that ends in the API is reported once, with
// labels only for what exists; requests the scheduler handled are not reported here.
func TestRefusedOutcomes(t *testing.T) {
	hs, srv, sched, _, rec := observedServer(t, new(slog.LevelVar))
	infer := func(path, body string) int { return do(t, "POST", hs.URL+path, body).status }
	tests := []struct {
		path, body string
		status     int
		want       []string
	}{
		{"/v2/models/m/infer", fakeRequest, 200, nil},
		{"/v2/models/nope/infer", fakeRequest, 404, []string{"//not_found"}},
		{"/v2/models/m/versions/9/infer", fakeRequest, 404, []string{"m//not_found"}},
		{"/v2/models/m/infer", `{"inputs":`, 400, []string{"m//client_error"}},
		{"/v2/models/m/infer", `{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}`, 400, []string{"m/1/client_error"}},
		{"/v2/models/broken/infer", fakeRequest, 503, []string{"broken//unavailable"}},
		{"/v2/models/m/infer", strings.Repeat(" ", maxBody+1), 413, []string{"m//client_error"}},
	}
	for _, tt := range tests {
		if got := infer(tt.path, tt.body); got != tt.status {
			t.Errorf("%s %.40s: %d, want %d", tt.path, tt.body, got, tt.status)
		}
		if got := rec.take(); !slices.Equal(got, tt.want) {
			t.Errorf("%s %.40s: refused %q, want %q", tt.path, tt.body, got, tt.want)
		}
	}
	// The scheduler counts a bad priority (a client error it finds); the API must not as well.
	bad := strings.Replace(fakeRequest, `"inputs"`, `"parameters":{"priority":99},"inputs"`, 1)
	if got := infer("/v2/models/m/infer", bad); got != 400 {
		t.Errorf("priority 99: %d", got)
	}
	if got := rec.take(); len(got) != 0 {
		t.Errorf("priority 99 refused in the API as well: %q", got)
	}
	// A request the scheduler refuses because it stops was not admitted there: the API counts
	// it, once.
	if err := sched.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := infer("/v2/models/m/infer", fakeRequest); got != 503 {
		t.Errorf("scheduler stopped: %d", got)
	}
	if got := rec.take(); !slices.Equal(got, []string{"m/1/unavailable"}) {
		t.Errorf("scheduler stopped: refused %q", got)
	}
	srv.SetPhase(api.PhaseStopping)
	if got := infer("/v2/models/m/infer", fakeRequest); got != 503 {
		t.Errorf("while stopping: %d", got)
	}
	if got := rec.take(); !slices.Equal(got, []string{"m//unavailable"}) {
		t.Errorf("while stopping: refused %q", got)
	}
}
