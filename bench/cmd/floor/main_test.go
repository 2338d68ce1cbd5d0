package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/perf"
)

func newFloor(t *testing.T) *httptest.Server {
	t.Helper()
	b, err := build("mlp", tensorMeta{"input", "FP32", []int64{-1, 4}}, tensorMeta{"output", "FP32", []int64{1, 3}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(handler("mlp", b))
	t.Cleanup(srv.Close)
	return srv
}

// TestResponsesDecode checks both fixed answers with the protocol's own response decoder.
func TestResponsesDecode(t *testing.T) {
	srv := newFloor(t)
	for _, binary := range []bool{false, true} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v2/models/mlp/infer", bytes.NewReader([]byte(`{"inputs":[]}`)))
		if binary {
			req.Header.Set(headerContentLength, "13")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("binary=%v: status %d", binary, resp.StatusCode)
		}
		headerLen := -1
		if v := resp.Header.Get(headerContentLength); v != "" {
			headerLen, _ = strconv.Atoi(v)
		}
		if binary != (headerLen >= 0) {
			t.Fatalf("binary=%v: header length %d", binary, headerLen)
		}
		out, err := kserve.DecodeResponse(body, headerLen)
		if err != nil {
			t.Fatalf("binary=%v: %v", binary, err)
		}
		if len(out.Outputs) != 1 || out.Outputs[0].Name != "output" || len(out.Outputs[0].Data) != 12 {
			t.Fatalf("binary=%v: outputs %+v", binary, out.Outputs)
		}
	}
}

// TestPerfAcceptsFloor runs the bench's client against the floor in both formats.
func TestPerfAcceptsFloor(t *testing.T) {
	srv := newFloor(t)
	for _, binary := range []bool{false, true} {
		rep, err := perf.Run(t.Context(), perf.Config{
			URL: srv.URL, Model: "mlp", Concurrency: []int{1}, Duration: 200 * time.Millisecond,
			Warmup: -1, Binary: binary,
		})
		if err != nil {
			t.Fatal(err)
		}
		if s := rep.Steps[0]; s.Requests == 0 || s.Errors != 0 {
			t.Fatalf("binary=%v: %d requests, %d errors (%s)", binary, s.Requests, s.Errors, s.FirstError)
		}
	}
}

func TestParseShape(t *testing.T) {
	if _, err := parseShape("-1,4", false); err == nil {
		t.Error("-1 accepted in a fixed shape")
	}
	if s, err := parseShape("-1, 4", true); err != nil || len(s) != 2 || s[0] != -1 || s[1] != 4 {
		t.Errorf("parseShape(-1, 4) = %v, %v", s, err)
	}
	if _, err := parseShape("2,x", true); err == nil {
		t.Error("non-number accepted")
	}
}
