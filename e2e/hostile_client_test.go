//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testutil"
)

// Client side of the hostile suite: KServe JSON requests, the repository index and /health.

// hostileClient bounds every call: a request that hangs is a failure, not a stuck suite.
var hostileClient = &http.Client{Timeout: 30 * time.Second}

// inferRequest is a KServe v2 JSON request with, optionally, the FP32 output it must get.
type inferRequest struct {
	Inputs []hostileInput `json:"inputs"`
	want   []float32
}

type hostileInput struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	Datatype string  `json:"datatype"`
	Data     any     `json:"data"`
}

func fp32Request(name string, shape []int64, data []float32) *inferRequest {
	return &inferRequest{Inputs: []hostileInput{{Name: name, Shape: shape, Datatype: "FP32", Data: data}}}
}

func (r *inferRequest) expect(want []float32) *inferRequest { r.want = want; return r }

// steeredRequest asks the loop-from-input model for n iterations (its answer is input + n).
func steeredRequest(n int64) *inferRequest {
	r := fp32Request("input", []int64{1, 4}, []float32{1, 2, 3, 4})
	r.Inputs = append(r.Inputs, hostileInput{Name: "n", Shape: []int64{1}, Datatype: "INT64", Data: []int64{n}})
	return r
}

// inferResponse is the part of a KServe response the suite reads.
type inferResponse struct {
	Outputs []struct {
		Name  string    `json:"name"`
		Shape []int64   `json:"shape"`
		Data  []float32 `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func (r inferResponse) floats(t *testing.T, i int) []float32 {
	t.Helper()
	if i >= len(r.Outputs) {
		t.Fatalf("response has %d outputs, want output %d", len(r.Outputs), i)
	}
	return r.Outputs[i].Data
}

// hostileInfer posts req to model's latest version and returns the status and body.
func hostileInfer(t *testing.T, d *daemontest.Daemon, model string, req *inferRequest) (int, string) {
	t.Helper()
	return hostilePost(t, d.URL+"/v2/models/"+model+"/infer", req)
}

func hostilePost(t *testing.T, url string, body any) (int, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hostileClient.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// hostileInferVersion posts req to one version of model and decodes the answer.
func hostileInferVersion(t *testing.T, d *daemontest.Daemon, model, version string, req *inferRequest) (int, inferResponse) {
	t.Helper()
	status, body := hostilePost(t, d.URL+"/v2/models/"+model+"/versions/"+version+"/infer", req)
	var out inferResponse
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("%s/%s answered %d %q: %v", model, version, status, body, err)
	}
	return status, out
}

// checkAnswers sends req to model and compares the output with the model's reference.
func checkAnswers(t *testing.T, d *daemontest.Daemon, model string, req *inferRequest) {
	t.Helper()
	status, body := hostileInfer(t, d, model, req)
	if status != http.StatusOK {
		t.Fatalf("%s: %d %s", model, status, body)
	}
	if req.want == nil {
		return
	}
	var out inferResponse
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	got := out.floats(t, 0)
	if len(got) != len(req.want) {
		t.Fatalf("%s: %d values, want %d (%v)", model, len(got), len(req.want), got)
	}
	for i := range got {
		if d := got[i] - req.want[i]; d > 1e-4 || d < -1e-4 {
			t.Fatalf("%s output[%d] = %v, want %v", model, i, got[i], req.want[i])
		}
	}
}

// indexEntry is one row of POST /v2/repository/index.
type indexEntry struct {
	Name           string `json:"name"`
	Version        string `json:"version"`
	State          string `json:"state"`
	Reason         string `json:"reason"`
	WorkerPID      int    `json:"worker_pid"`
	WorkerRestarts int    `json:"worker_restarts"`
	WorkerLastExit string `json:"worker_last_exit"`
}

func hostileIndex(t *testing.T, d *daemontest.Daemon) []indexEntry {
	t.Helper()
	status, body := hostilePost(t, d.URL+"/v2/repository/index", map[string]any{})
	if status != http.StatusOK {
		t.Fatalf("repository index: %d %s", status, body)
	}
	var out []indexEntry
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// hostileIndexEntry is model's row in the index for version ("" for any).
func hostileIndexEntry(t *testing.T, d *daemontest.Daemon, model, version string) (indexEntry, bool) {
	t.Helper()
	for _, e := range hostileIndex(t, d) {
		if e.Name == model && (version == "" || e.Version == version || e.Version == "") {
			return e, true
		}
	}
	return indexEntry{}, false
}

func waitVersionState(t *testing.T, d *daemontest.Daemon, model, version, state string) indexEntry {
	t.Helper()
	var e indexEntry
	testutil.Eventually(t, hostileWait, func() string {
		var ok bool
		if e, ok = hostileIndexEntry(t, d, model, version); ok && e.State == state {
			return ""
		}
		return fmt.Sprintf("%s/%s is %+v, want %s", model, version, e, state)
	})
	return e
}

// waitUnavailable waits for model's version 1 to be UNAVAILABLE with a reason.
func waitUnavailable(t *testing.T, d *daemontest.Daemon, model string) {
	t.Helper()
	e := waitVersionState(t, d, model, "1", "UNAVAILABLE")
	if e.Reason == "" {
		t.Fatalf("%s is UNAVAILABLE without a reason: %+v", model, e)
	}
	t.Logf("%s: UNAVAILABLE: %s (worker restarts %d, last exit %q)", model, e.Reason, e.WorkerRestarts, e.WorkerLastExit)
}

// waitSettled waits for model's version 1 to be READY or UNAVAILABLE.
func waitSettled(t *testing.T, d *daemontest.Daemon, model string) indexEntry {
	t.Helper()
	var e indexEntry
	testutil.Eventually(t, hostileWait, func() string {
		var ok bool
		if e, ok = hostileIndexEntry(t, d, model, "1"); ok && (e.State == "READY" || e.State == "UNAVAILABLE") {
			return ""
		}
		return fmt.Sprintf("%s/1 is %+v, want READY or UNAVAILABLE", model, e)
	})
	return e
}

// healthModel is a version's row in /health's models component.
type healthModel struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
	Worker  *struct {
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
		LastExit string `json:"last_exit"`
	} `json:"worker"`
}

func healthModels(t *testing.T, d *daemontest.Daemon) []healthModel {
	t.Helper()
	resp, err := hostileClient.Get(d.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Components map[string]struct {
			Detail json.RawMessage `json:"detail"`
		} `json:"components"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var out []healthModel
	if raw := body.Components["models"].Detail; len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("/health models detail %s: %v", raw, err)
		}
	}
	return out
}

// waitWorkerExit waits until /health and the index show that model's worker ended, with the
// reason, and was restarted at least restarts times.
func waitWorkerExit(t *testing.T, d *daemontest.Daemon, model string, restarts int) {
	t.Helper()
	testutil.Eventually(t, hostileWait, func() string {
		for _, h := range healthModels(t, d) {
			if h.Name == model && h.Worker != nil && h.Worker.Restarts >= restarts && h.Worker.LastExit != "" {
				return ""
			}
		}
		return fmt.Sprintf("/health shows no restart of %s's worker: %+v", model, healthModels(t, d))
	})
	if e, ok := hostileIndexEntry(t, d, model, "1"); !ok || e.WorkerLastExit == "" {
		t.Errorf("index shows no last exit for %s: %+v", model, e)
	} else {
		t.Logf("%s: worker restarts %d, last exit %q", model, e.WorkerRestarts, e.WorkerLastExit)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
