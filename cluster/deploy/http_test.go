package deploy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// serve mounts the endpoints of a Service over node on a test server.
func serve(t *testing.T, h Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/octet-stream" {
		var e struct {
			Error string `json:"error"`
		}
		if resp.StatusCode/100 != 2 && (json.Unmarshal(b, &e) != nil || e.Error == "") {
			t.Errorf("%s %s: %d without a KServe error body: %s", method, url, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, string(b)
}

// The endpoints answer hostile or wrong requests with the right status and a KServe error,
// and serve a held chunk to a member only.
func TestHandler(t *testing.T) {
	off := serve(t, Handler{Off: "server.state_dir is not set"})
	if status, body := call(t, "GET", off.URL+PathDeployments, nil); status != http.StatusServiceUnavailable || !strings.Contains(body, "state_dir") {
		t.Errorf("deploy off: %d %s", status, body)
	}

	n := newFakeNode("n1", "n2")
	s := newTestService(t, n)
	srv := serve(t, Handler{Service: s, Guard: func(model, version string, force bool) string {
		if !force {
			return "the only version"
		}
		return ""
	}})
	model := randomBytes(1<<20+10, 3)
	status, body := call(t, "POST", srv.URL+PathDeployments+"/m/1?wave=1&deployer=ops", tarOf(t, entry{name: "model.onnx", data: model}))
	if status != http.StatusAccepted {
		t.Fatalf("upload: %d %s", status, body)
	}
	var dv DeploymentView
	if err := json.Unmarshal([]byte(body), &dv); err != nil || dv.Bytes != int64(len(model)) || dv.Deployer != "ops" || len(dv.Waves) != 2 {
		t.Fatalf("upload answer %s: %v", body, err)
	}
	if status, body := call(t, "POST", srv.URL+PathDeployments+"/m/1", tarOf(t, entry{name: "model.onnx", data: model})); status != http.StatusOK || !strings.Contains(body, `"unchanged":true`) {
		t.Errorf("same content again: %d %s", status, body)
	}
	for _, tc := range []struct {
		method, path string
		body         io.Reader
		want         int
	}{
		{"POST", "/m/1", tarOf(t, entry{name: "model.onnx", data: model[1:]}), http.StatusConflict},
		{"POST", "/m/2?wave=0", tarOf(t, entry{name: "model.onnx", data: model}), http.StatusBadRequest},
		{"POST", "/m/2?wave=x", nil, http.StatusBadRequest},
		{"POST", "/m/2?replicas=-1", nil, http.StatusBadRequest},
		{"POST", "/m/2?nodes=n9", tarOf(t, entry{name: "model.onnx", data: model}), http.StatusBadRequest},
		{"POST", "/m/2", strings.NewReader("garbage"), http.StatusBadRequest},
		{"POST", "/m/2?from=ftp://x/model.onnx&sha256=" + hexSum(model), nil, http.StatusBadRequest},
		{"DELETE", "/m/9", nil, http.StatusNotFound},
		{"DELETE", "/m/1", nil, http.StatusConflict},
	} {
		if status, body := call(t, tc.method, srv.URL+PathDeployments+tc.path, tc.body); status != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, status, body, tc.want)
		}
	}

	// The test client (127.0.0.1) is no member yet: refused. Then it is n2's address.
	hash := hexSum(model)
	chunk := PathPeer + hash + "?size=" + itoa(len(model)) + "&chunk_size=1048576&i=1"
	if status, _ := call(t, "GET", srv.URL+chunk, nil); status != http.StatusForbidden {
		t.Errorf("a chunk for a non-member: %d", status)
	}
	n.mu.Lock()
	n.members[1].HTTPAddr = "127.0.0.1:9"
	n.mu.Unlock()
	if status, body := call(t, "GET", srv.URL+chunk, nil); status != http.StatusOK || body != string(model[1<<20:]) {
		t.Errorf("chunk 1 for a member: %d, %d bytes", status, len(body))
	}
	for path, want := range map[string]int{
		PathPeer + hash + "?size=1&chunk_size=1&i=0":                              http.StatusBadRequest,
		PathPeer + "XYZ?size=1&chunk_size=1048576&i=0":                            http.StatusBadRequest,
		PathPeer + hash + "?size=" + itoa(len(model)) + "&chunk_size=1048576&i=9": http.StatusBadRequest,
		PathPeer + hexSum([]byte("none")) + "?size=4&chunk_size=1048576&i=0":      http.StatusNotFound,
	} {
		if status, body := call(t, "GET", srv.URL+path, nil); status != want {
			t.Errorf("GET %s: %d %s, want %d", path, status, body, want)
		}
	}
	if status, body := call(t, "DELETE", srv.URL+PathDeployments+"/m/1?force=true", nil); status != http.StatusAccepted {
		t.Errorf("forced undeploy: %d %s", status, body)
	}
	if d := s.deployments()["m/1"]; d.Phase != PhaseRemoved {
		t.Errorf("after the undeploy: phase %s", d.Phase)
	}
}
