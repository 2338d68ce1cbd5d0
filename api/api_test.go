package api_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/spectest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

const maxBody = 4096

// maxBodyOnly is the settings of the servers under test: a small body limit, no other limits.
func maxBodyOnly() *api.Settings { return &api.Settings{MaxRequestBytes: maxBody} }

// newServer serves a repository of generated models through the real engine and scheduler.
func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "mlp/1/model.onnx", testmodels.MLP())
	testutil.WriteFile(t, dir, "mlp/2/model.onnx", testmodels.MLP())
	testutil.WriteFile(t, dir, "mlp/model.toml", []byte("max_batch_size = 8\n[version_policy]\nall = true\n"))
	testutil.WriteFile(t, dir, "multi/1/model.onnx", testmodels.MultiIO())
	testutil.WriteFile(t, dir, "strings/1/model.onnx", testmodels.Strings())
	testutil.WriteFile(t, dir, "scalar/1/model.onnx", testmodels.Scalar())
	testutil.WriteFile(t, dir, "broken/1/model.onnx", []byte("not onnx"))
	for _, dt := range testmodels.IdentityDataTypes() {
		m, err := testmodels.Identity(dt)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WriteFile(t, dir, "id_"+strings.ToLower(string(dt))+"/1/model.onnx", m)
	}
	hs, _ := serveRepository(t, dir, api.Options{Name: "inferd", Version: "test", Settings: maxBodyOnly})
	return hs
}

// serveRepository serves the models in dir through the real engine and scheduler, and returns
// the runtime too.
func serveRepository(t *testing.T, dir string, opts api.Options) (*httptest.Server, *ort.Runtime) {
	t.Helper()
	rt, err := ort.New(ort.RuntimeOptions{}, quiet)
	if err != nil {
		t.Fatalf("ONNX Runtime: %v", err)
	}
	repo := models.New(dir, rt, models.Defaults{Instances: 1, Cores: 2}, quiet)
	if err := repo.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	sched := scheduler.New(quiet)
	srv := api.New(repo, sched, opts, quiet)
	srv.SetPhase(api.PhaseServing)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		_ = sched.Close(context.Background())
		repo.Close(context.Background())
		_ = rt.Close()
	})
	return hs, rt
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url, body string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return send(t, req)
}

// send sends req and reads the whole answer.
func send(t *testing.T, req *http.Request) result {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

type inferResponse struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version"`
	ID           string           `json:"id"`
	Outputs      []responseOutput `json:"outputs"`
}

type responseOutput struct {
	Name     string            `json:"name"`
	Datatype string            `json:"datatype"`
	Shape    []int64           `json:"shape"`
	Data     []json.RawMessage `json:"data"`
}

func (o responseOutput) floats(t *testing.T) []float64 {
	t.Helper()
	out := make([]float64, len(o.Data))
	for i, d := range o.Data {
		if err := json.Unmarshal(d, &out[i]); err != nil {
			t.Fatalf("output %s element %d: %s", o.Name, i, d)
		}
	}
	return out
}

// infer posts a request that must succeed and returns the decoded, schema-checked response.
func infer(t *testing.T, url, body string) inferResponse {
	t.Helper()
	r := do(t, http.MethodPost, url, body)
	if r.status != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, r.status, r.body)
	}
	spectest.Validate(t, "inference_response", r.body)
	var resp inferResponse
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func close32(t *testing.T, name string, got []float64, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range want {
		if math.Abs(got[i]-float64(want[i])) > 1e-4*math.Max(1, math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

func TestInferMLP(t *testing.T) {
	hs := newServer(t)
	x := []float32{1, 2, 3, 4, -1, 0.5, 0, 2, 9, -3, 2.5, 1}
	want := testmodels.MLPForward(x)
	cases := []struct{ name, path, data string }{
		{"flat", "/v2/models/mlp/infer", "[1,2,3,4,-1,0.5,0,2,9,-3,2.5,1]"},
		{"nested", "/v2/models/mlp/infer", "[[1,2,3,4],[-1,0.5,0,2],[9,-3,2.5,1]]"},
		{"version", "/v2/models/mlp/versions/1/infer", "[1,2,3,4,-1,0.5,0,2,9,-3,2.5,1]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"id":"req-7","inputs":[{"name":"input","shape":[3,4],"datatype":"FP32","data":%s}]}`, c.data)
			resp := infer(t, hs.URL+c.path, body)
			if resp.ID != "req-7" || resp.ModelName != "mlp" {
				t.Errorf("id %q model %q", resp.ID, resp.ModelName)
			}
			if c.name == "version" && resp.ModelVersion != "1" || c.name != "version" && resp.ModelVersion != "2" {
				t.Errorf("served by version %q", resp.ModelVersion)
			}
			o := resp.Outputs[0]
			if o.Name != "output" || o.Datatype != "FP32" || fmt.Sprint(o.Shape) != "[3 3]" {
				t.Fatalf("output %s %s %v", o.Name, o.Datatype, o.Shape)
			}
			close32(t, "output", o.floats(t), want)
		})
	}
}

func TestInferMultiIO(t *testing.T) {
	hs := newServer(t)
	x := []float32{0.5, 2, -3, 7, 1, 1}
	y := []int64{1, 1, -4, 9, 0, 2}
	sum, twice, greater, wide := testmodels.MultiIOForward(x, y)
	inputs := `"inputs":[{"name":"x","shape":[2,3],"datatype":"FP32","data":[0.5,2,-3,7,1,1]},` +
		`{"name":"y","shape":[2,3],"datatype":"INT64","data":[[1,1,-4],[9,0,2]]}]`

	all := infer(t, hs.URL+"/v2/models/multi/infer", "{"+inputs+"}")
	if len(all.Outputs) != 4 {
		t.Fatalf("%d outputs, want 4", len(all.Outputs))
	}
	byName := map[string]responseOutput{}
	for _, o := range all.Outputs {
		byName[o.Name] = o
	}
	close32(t, "sum", byName["sum"].floats(t), sum)
	for i, w := range twice {
		if string(byName["twice"].Data[i]) != fmt.Sprint(w) {
			t.Errorf("twice[%d] = %s, want %d", i, byName["twice"].Data[i], w)
		}
	}
	for i, w := range greater {
		if string(byName["greater"].Data[i]) != fmt.Sprint(w) {
			t.Errorf("greater[%d] = %s, want %v", i, byName["greater"].Data[i], w)
		}
	}
	for i, w := range wide {
		if got := byName["wide"].floats(t)[i]; got != w {
			t.Errorf("wide[%d] = %v, want %v", i, got, w)
		}
	}
	if byName["greater"].Datatype != "BOOL" || byName["twice"].Datatype != "INT64" || byName["wide"].Datatype != "FP64" {
		t.Errorf("datatypes %s %s %s", byName["greater"].Datatype, byName["twice"].Datatype, byName["wide"].Datatype)
	}

	some := infer(t, hs.URL+"/v2/models/multi/infer", "{"+inputs+`,"outputs":[{"name":"wide"},{"name":"twice"}]}`)
	if len(some.Outputs) != 2 || some.Outputs[0].Name != "wide" || some.Outputs[1].Name != "twice" {
		t.Fatalf("outputs filter: %+v", some.Outputs)
	}
}

func TestInferStringsAndScalar(t *testing.T) {
	hs := newServer(t)
	resp := infer(t, hs.URL+"/v2/models/strings/infer",
		`{"inputs":[{"name":"text","shape":[3],"datatype":"BYTES","data":["hello","World 42","\u00e9t\u00e9"]}]}`)
	upper, same := testmodels.StringsForward([]string{"hello", "World 42", "été"})
	for _, o := range resp.Outputs {
		want := map[string][]string{"upper": upper, "same": same}[o.Name]
		for i, w := range want {
			var got string
			if err := json.Unmarshal(o.Data[i], &got); err != nil || got != w {
				t.Errorf("%s[%d] = %s, want %q", o.Name, i, o.Data[i], w)
			}
		}
		if o.Datatype != "BYTES" {
			t.Errorf("%s datatype %s", o.Name, o.Datatype)
		}
	}

	sc := infer(t, hs.URL+"/v2/models/scalar/infer",
		`{"inputs":[{"name":"scale","shape":[],"datatype":"FP32","data":[2.5]},{"name":"v","shape":[3],"datatype":"FP32","data":[1,2,-4]}]}`)
	scaled, next := testmodels.ScalarForward(2.5, []float32{1, 2, -4})
	for _, o := range sc.Outputs {
		switch o.Name {
		case "scaled":
			close32(t, "scaled", o.floats(t), scaled)
		case "next":
			if len(o.Shape) != 0 {
				t.Errorf("next shape %v, want []", o.Shape)
			}
			close32(t, "next", o.floats(t), []float32{next})
		}
	}
}

// TestInferEveryDatatype round-trips each JSON-capable datatype through an Identity model.
func TestInferEveryDatatype(t *testing.T) {
	hs := newServer(t)
	cases := []struct {
		dt   tensor.DataType
		data string
	}{
		{tensor.Bool, "[true,false,false,true]"},
		{tensor.Uint8, "[0,1,128,255]"},
		{tensor.Uint16, "[0,1,40000,65535]"},
		{tensor.Uint32, "[0,1,3000000000,4294967295]"},
		{tensor.Uint64, "[0,1,18446744073709551615,9007199254740993]"},
		{tensor.Int8, "[-128,-1,0,127]"},
		{tensor.Int16, "[-32768,-1,0,32767]"},
		{tensor.Int32, "[-2147483648,-1,0,2147483647]"},
		{tensor.Int64, "[-9223372036854775808,-1,9007199254740993,9223372036854775807]"},
		{tensor.FP32, "[0,-1.5,3.25,1e+10]"},
		{tensor.FP64, "[0,-1.5,0.1,1e+300]"},
		{tensor.Bytes, `["a","","\"quoted\"","\u00fcnicode"]`},
	}
	for _, c := range cases {
		t.Run(string(c.dt), func(t *testing.T) {
			url := hs.URL + "/v2/models/id_" + strings.ToLower(string(c.dt)) + "/infer"
			resp := infer(t, url, fmt.Sprintf(`{"inputs":[{"name":"in","shape":[2,2],"datatype":"%s","data":%s}]}`, c.dt, c.data))
			o := resp.Outputs[0]
			if o.Datatype != string(c.dt) || fmt.Sprint(o.Shape) != "[2 2]" {
				t.Fatalf("output %s %v", o.Datatype, o.Shape)
			}
			var want []json.RawMessage
			if err := json.Unmarshal([]byte(c.data), &want); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if !sameJSONValue(t, want[i], o.Data[i]) {
					t.Errorf("element %d = %s, want %s", i, o.Data[i], want[i])
				}
			}
		})
	}
}

// sameJSONValue compares numbers by value (1e+10 and 10000000000 are equal) and everything else
// exactly.
func sameJSONValue(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&x) != nil || db.Decode(&y) != nil {
		return false
	}
	nx, ok1 := x.(json.Number)
	ny, ok2 := y.(json.Number)
	if ok1 && ok2 {
		fx, _ := nx.Float64()
		fy, _ := ny.Float64()
		return fx == fy
	}
	return x == y
}

// TestBadInput sends each kind of bad request, checks the status and the KServe error body,
// and checks the server still answers correctly afterwards.
func TestBadInput(t *testing.T) {
	hs := newServer(t)
	mlp := func(extra string) string {
		return `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}` + extra + `]}`
	}
	cases := []struct {
		name, method, path, body string
		status                   int
		msg                      string
	}{
		{"malformed JSON", "POST", "/v2/models/mlp/infer", `{"inputs": [`, 400, ""},
		{"not an object", "POST", "/v2/models/mlp/infer", `[1,2]`, 400, ""},
		{"empty body", "POST", "/v2/models/mlp/infer", ``, 400, ""},
		{"unknown model", "POST", "/v2/models/nosuch/infer", mlp(""), 404, "nosuch"},
		{"unknown version", "POST", "/v2/models/mlp/versions/9/infer", mlp(""), 404, "version 9"},
		{"non-numeric version", "POST", "/v2/models/mlp/versions/latest/infer", mlp(""), 404, "latest"},
		{"unavailable model", "POST", "/v2/models/broken/infer", mlp(""), 503, "broken"},
		{"missing input", "POST", "/v2/models/multi/infer", `{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`, 400, `missing input "y"`},
		{"extra input", "POST", "/v2/models/mlp/infer", mlp(`,{"name":"bogus","shape":[1],"datatype":"FP32","data":[1]}`), 400, "bogus"},
		{"duplicate input", "POST", "/v2/models/mlp/infer", mlp(`,{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}`), 400, "input"},
		{"wrong datatype", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"INT32","data":[1,2,3,4]}]}`, 400, "INT32"},
		{"unknown datatype", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FLOAT","data":[1,2,3,4]}]}`, 400, "FLOAT"},
		{"shape vs data length", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 400, "input"},
		{"shape the model cannot take", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}`, 400, "dimension 1 must be 4"},
		{"batch over max", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[9,4],"datatype":"FP32","data":[` + strings.Repeat("1,", 35) + `1]}]}`, 400, "max_batch_size 8"},
		{"negative dimension", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 400, "input"},
		{"zero elements", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[0,4],"datatype":"FP32","data":[]}]}`, 400, "no elements"},
		{"string in FP32", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,"2",3,4]}]}`, 400, "input"},
		{"float in INT64", "POST", "/v2/models/multi/infer", `{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]},{"name":"y","shape":[1,3],"datatype":"INT64","data":[1,2.5,3]}]}`, 400, "y"},
		{"out of range UINT8", "POST", "/v2/models/id_uint8/infer", `{"inputs":[{"name":"in","shape":[1,1],"datatype":"UINT8","data":[300]}]}`, 400, "in"},
		{"number in BOOL", "POST", "/v2/models/id_bool/infer", `{"inputs":[{"name":"in","shape":[1,1],"datatype":"BOOL","data":[1]}]}`, 400, "in"},
		{"number in BYTES", "POST", "/v2/models/strings/infer", `{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":[1]}]}`, 400, "text"},
		{"FP16 as JSON", "POST", "/v2/models/id_fp16/infer", `{"inputs":[{"name":"in","shape":[1,1],"datatype":"FP16","data":[1]}]}`, 400, "FP16"},
		{"unknown output", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}`, 400, "nope"},
		{"unknown field", "POST", "/v2/models/mlp/infer", `{"inputz":[],"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 400, "inputz"},
		{"body too large", "POST", "/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"id":"` + strings.Repeat("x", maxBody) + `"}`, 413, "max_request_bytes"},
		{"binary header", "POST", "/v2/models/mlp/infer", "", 400, "Inference-Header-Content-Length"},
		{"unknown path", "GET", "/v2/nothing/here", "", 404, "no such endpoint"},
		{"metadata of unknown model", "GET", "/v2/models/nosuch", "", 404, "nosuch"},
		{"wrong method", "GET", "/v2/models/mlp/infer", "", 405, "use POST"},
		{"wrong method on metadata", "DELETE", "/v2/models/mlp", "", 405, "use GET"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r result
			if c.name == "binary header" {
				r = postBinary(t, hs.URL+c.path, []byte(mlp("")), 10)
			} else {
				r = do(t, c.method, hs.URL+c.path, c.body)
			}
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			spectest.Validate(t, "inference_error_response", r.body)
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
				t.Fatalf("error body %q", r.body)
			}
			if !strings.Contains(e.Error, c.msg) {
				t.Errorf("error %q does not mention %q", e.Error, c.msg)
			}
		})
	}
	// Still serving, and correctly, after all of that.
	resp := infer(t, hs.URL+"/v2/models/mlp/infer", mlp(""))
	close32(t, "output", resp.Outputs[0].floats(t), testmodels.MLPForward([]float32{1, 2, 3, 4}))
}

func TestMetadataAndHealth(t *testing.T) {
	hs := newServer(t)
	srv := do(t, "GET", hs.URL+"/v2", "")
	spectest.Validate(t, "metadata_server_response", srv.body)
	if !strings.Contains(string(srv.body), `"name":"inferd"`) {
		t.Errorf("server metadata %s", srv.body)
	}

	for _, path := range []string{"/v2/models/multi", "/v2/models/mlp/versions/1", "/v2/models/strings", "/v2/models/scalar"} {
		r := do(t, "GET", hs.URL+path, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		spectest.Validate(t, "metadata_model_response", r.body)
	}
	var meta struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Platform string   `json:"platform"`
		Inputs   []tensor.Spec
		Outputs  []tensor.Spec
	}
	if err := json.Unmarshal(do(t, "GET", hs.URL+"/v2/models/mlp", "").body, &meta); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(meta.Versions) != "[1 2]" || meta.Platform != "onnxruntime_onnx" ||
		len(meta.Inputs) != 1 || tensor.FormatShape(meta.Inputs[0].Shape) != "[-1,4]" || meta.Inputs[0].DataType != tensor.FP32 {
		t.Errorf("mlp metadata %+v", meta)
	}

	cases := []struct {
		path   string
		status int
		want   string
	}{
		{"/v2/health/live", 200, ""},
		{"/v2/health/ready", 200, ""},
		{"/v2/models/mlp/ready", 200, `"ready":true`},
		{"/v2/models/mlp/versions/2/ready", 200, `"ready":true`},
		{"/v2/models/broken/ready", 503, `"ready":false`},
		{"/v2/models/nosuch/ready", 404, "nosuch"},
		{"/v2/models/mlp/config", 200, `"max_batch_size":8`},
		{"/v2/models/strings/config", 200, `"data_type":"TYPE_STRING"`},
		{"/health", 200, `"state":"UNAVAILABLE"`},
		{"/ready", 200, `"status":"degraded"`},
	}
	for _, c := range cases {
		r := do(t, "GET", hs.URL+c.path, "")
		if r.status != c.status || !strings.Contains(string(r.body), c.want) {
			t.Errorf("GET %s: %d %s; want %d containing %q", c.path, r.status, r.body, c.status, c.want)
		}
	}
	cfg := string(do(t, "GET", hs.URL+"/v2/models/mlp/config", "").body)
	for _, want := range []string{`"dims":[4]`, `"kind":"KIND_CPU"`, `"execution_provider":"CPUExecutionProvider"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config %s lacks %s", cfg, want)
		}
	}
}

func TestPhases(t *testing.T) {
	hs, _, srv := fakeServer(t, "")
	const req = `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[7]}]}`

	cases := []struct {
		phase                 api.Phase
		ready, v2ready, infer int
		status                string
	}{
		{api.PhaseStarting, 503, 503, 200, `"status":"starting"`},
		{api.PhaseServing, 200, 200, 200, `"status":"ok"`},
		{api.PhaseStopping, 503, 503, 503, `"status":"stopping"`},
	}
	for _, c := range cases {
		srv.SetPhase(c.phase)
		r := do(t, "GET", hs.URL+"/ready", "")
		if r.status != c.ready || !strings.Contains(string(r.body), c.status) {
			t.Errorf("%s: /ready %d %s", c.phase, r.status, r.body)
		}
		if r := do(t, "GET", hs.URL+"/v2/health/ready", ""); r.status != c.v2ready {
			t.Errorf("%s: /v2/health/ready %d", c.phase, r.status)
		}
		if r := do(t, "GET", hs.URL+"/v2/health/live", ""); r.status != 200 {
			t.Errorf("%s: live %d", c.phase, r.status)
		}
		if r := do(t, "POST", hs.URL+"/v2/models/m/infer", req); r.status != c.infer {
			t.Errorf("%s: infer %d %s", c.phase, r.status, r.body)
		}
	}
}

func TestStatsAndSchedulingParameters(t *testing.T) {
	hs := newServer(t)
	for n := 1; n <= 3; n++ {
		data := strings.TrimSuffix(strings.Repeat("1,", 4*n), ",")
		infer(t, hs.URL+"/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":"input","shape":[%d,4],"datatype":"FP32","data":[%s]}],"parameters":{"priority":1,"timeout":1000000}}`, n, data))
	}
	var st struct {
		ModelStats []struct {
			Name           string `json:"name"`
			Version        string `json:"version"`
			LastInference  int64  `json:"last_inference"`
			InferenceCount uint64 `json:"inference_count"`
			ExecutionCount uint64 `json:"execution_count"`
			InferenceStats map[string]struct {
				Count uint64 `json:"count"`
				Ns    uint64 `json:"ns"`
			} `json:"inference_stats"`
			BatchStats []struct {
				BatchSize    int `json:"batch_size"`
				ComputeInfer struct {
					Count uint64 `json:"count"`
				} `json:"compute_infer"`
			} `json:"batch_stats"`
		} `json:"model_stats"`
	}
	r := do(t, "GET", hs.URL+"/v2/models/mlp/versions/2/stats", "")
	if err := json.Unmarshal(r.body, &st); err != nil || r.status != 200 || len(st.ModelStats) != 1 {
		t.Fatalf("stats: %d %s", r.status, r.body)
	}
	m := st.ModelStats[0]
	if m.Name != "mlp" || m.Version != "2" || m.InferenceCount != 6 || m.ExecutionCount != 3 || m.LastInference == 0 {
		t.Errorf("stats %+v", m)
	}
	for _, k := range []string{"success", "fail", "queue", "compute_input", "compute_infer", "compute_output"} {
		if _, ok := m.InferenceStats[k]; !ok {
			t.Errorf("inference_stats lacks %s", k)
		}
	}
	if m.InferenceStats["success"].Count != 3 || m.InferenceStats["compute_infer"].Ns == 0 || len(m.BatchStats) != 3 {
		t.Errorf("inference stats %+v, batch stats %+v", m.InferenceStats, m.BatchStats)
	}

	r = do(t, "GET", hs.URL+"/v2/models/mlp/stats", "")
	if err := json.Unmarshal(r.body, &st); err != nil || len(st.ModelStats) != 2 {
		t.Errorf("stats of both versions: %s", r.body)
	}
	r = do(t, "GET", hs.URL+"/v2/models/stats", "")
	if err := json.Unmarshal(r.body, &st); err != nil || len(st.ModelStats) < 5 {
		t.Errorf("stats of every model: %s", r.body)
	}
	if r := do(t, "GET", hs.URL+"/v2/models/nosuch/stats", ""); r.status != 404 {
		t.Errorf("stats of unknown model: %d", r.status)
	}

	bad := []struct{ params, msg string }{
		{`{"priority":"high"}`, "priority"},
		{`{"priority":1.5}`, "priority"},
		{`{"priority":2}`, "priority 2"},
		{`{"timeout":-5}`, "timeout"},
	}
	for _, b := range bad {
		r := do(t, "POST", hs.URL+"/v2/models/mlp/infer", `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"parameters":`+b.params+`}`)
		if r.status != 400 || !strings.Contains(string(r.body), b.msg) {
			t.Errorf("parameters %s: %d %s", b.params, r.status, r.body)
		}
	}
}

// fakeServer serves one fake model "m" (FP32 [1] identity) whose runs can be held.
func fakeServer(t *testing.T, modelTOML string) (*httptest.Server, *enginetest.Runtime, *api.Server) {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "m/1/model.onnx", []byte("fake"))
	if modelTOML != "" {
		testutil.WriteFile(t, dir, "m/model.toml", []byte(modelTOML))
	}
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
	srv := api.New(repo, sched, api.Options{Name: "inferd", Settings: maxBodyOnly}, quiet)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		_ = sched.Close(context.Background())
	})
	return hs, rt, srv
}

const fakeRequest = `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[7]}]}`

func TestQueueFullAnswersRetryAfter(t *testing.T) {
	hs, rt, srv := fakeServer(t, "[dynamic_batching]\nmax_queue_size = 1\n")
	srv.SetPhase(api.PhaseServing)
	gate := rt.Hold()
	done := make(chan result, 2)
	go func() { done <- do(t, "POST", hs.URL+"/v2/models/m/infer", fakeRequest) }()
	<-gate.Entered() // the instance is busy
	go func() { done <- do(t, "POST", hs.URL+"/v2/models/m/infer", fakeRequest) }()
	// Wait until the second request waits in the queue: then a third is one too many.
	testutil.WaitFor(t, 10*time.Second, "the second request queued", func() bool {
		return strings.Contains(string(do(t, "GET", hs.URL+"/v2/models/m/stats", "").body), `"pending_request_count":1`)
	})
	r := do(t, "POST", hs.URL+"/v2/models/m/infer", fakeRequest)
	gate.Release()
	if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(string(r.body), "exceeds maximum queue size") {
		t.Fatalf("request over max_queue_size: %d %v %s", r.status, r.header, r.body)
	}
	spectest.Validate(t, "inference_error_response", r.body)
	for range 2 {
		if got := <-done; got.status != 200 {
			t.Errorf("queued request: %d %s", got.status, got.body)
		}
	}
}

// postBinary posts a body with binary tensor data.
func postBinary(t *testing.T, url string, body []byte, headerLength int) result {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if headerLength >= 0 {
		req.Header.Set(kserve.HeaderContentLength, strconv.Itoa(headerLength))
	}
	return send(t, req)
}

// sample returns a [2,3] tensor of dt with varied, type-specific data.
func sample(dt tensor.DataType) tensor.Tensor {
	t := tensor.Tensor{Name: "in", DataType: dt, Shape: []int64{2, 3}}
	if dt == tensor.Bytes {
		t.Strings = [][]byte{[]byte("a"), {}, []byte("ü\xff"), []byte("long string with spaces"), {0x01}, []byte("z")}
		return t
	}
	t.Data = make([]byte, 6*dt.Size())
	for i := range t.Data {
		t.Data[i] = byte(i*37 + 11)
	}
	if dt == tensor.Bool {
		for i := range t.Data {
			t.Data[i] &= 1
		}
	}
	if dt == tensor.FP32 || dt == tensor.FP64 || dt == tensor.FP16 || dt == tensor.BF16 {
		// Keep the bytes but make sure no value is a NaN (NaN != NaN would be fine for bytes,
		// but ORT may canonicalise NaN payloads).
		for i := dt.Size() - 1; i < len(t.Data); i += dt.Size() {
			t.Data[i] &= 0x3f
		}
	}
	return t
}

// TestBinaryEveryDatatype round-trips every datatype through an Identity model with binary
// inputs and binary outputs, and checks the bytes are unchanged.
func TestBinaryEveryDatatype(t *testing.T) {
	hs := newServer(t)
	for _, dt := range testmodels.IdentityDataTypes() {
		t.Run(string(dt), func(t *testing.T) {
			in := sample(dt)
			req := &kserve.InferRequest{ID: "b", Inputs: []kserve.Input{{Tensor: in}}}
			body, hl := kserve.EncodeRequest(nil, req, true)
			r := postBinary(t, hs.URL+"/v2/models/id_"+strings.ToLower(string(dt))+"/infer", body, hl)
			if r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if r.header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
			}
			jl, err := kserve.ParseHeaderLength(r.header.Get(kserve.HeaderContentLength))
			if err != nil || jl < 0 {
				t.Fatalf("response header length %q: %v", r.header.Get(kserve.HeaderContentLength), err)
			}
			// No schema check here: the base protocol's response_output requires "data", which
			// the binary extension replaces by parameters.binary_data_size.
			resp, err := kserve.DecodeResponse(r.body, jl)
			if err != nil {
				t.Fatal(err)
			}
			out := resp.Outputs[0]
			if resp.ID != "b" || out.DataType != dt || fmt.Sprint(out.Shape) != "[2 3]" || !resp.Binary[0] {
				t.Fatalf("output %s %v binary %v", out.DataType, out.Shape, resp.Binary)
			}
			if dt == tensor.Bytes {
				for i := range in.Strings {
					if !bytes.Equal(out.Strings[i], in.Strings[i]) {
						t.Errorf("element %d = %q, want %q", i, out.Strings[i], in.Strings[i])
					}
				}
			} else if !bytes.Equal(out.Data, in.Data) {
				t.Errorf("bytes %x, want %x", out.Data, in.Data)
			}
		})
	}
}

// TestBinaryInputJSONOutput mixes the formats: binary inputs, one output in JSON and one binary.
func TestBinaryInputJSONOutput(t *testing.T) {
	hs := newServer(t)
	x := []float32{0.5, 2, -3}
	y := []int64{1, 1, -4}
	yt := tensor.Tensor{Name: "y", DataType: tensor.Int64, Shape: []int64{1, 3}, Data: make([]byte, 24)}
	for i, v := range y {
		binary.LittleEndian.PutUint64(yt.Data[8*i:], uint64(v))
	}
	req := &kserve.InferRequest{
		Inputs:  []kserve.Input{{Tensor: tensor.FromFloat32s("x", []int64{1, 3}, x)}, {Tensor: yt}},
		Outputs: []kserve.RequestedOutput{{Name: "sum", Parameters: map[string]any{"binary_data": false}}, {Name: "twice", Parameters: map[string]any{"binary_data": true}}},
	}
	body, hl := kserve.EncodeRequest(nil, req, true) // sets binary_data_output: true; "sum" opts out
	r := postBinary(t, hs.URL+"/v2/models/multi/infer", body, hl)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	jl, _ := kserve.ParseHeaderLength(r.header.Get(kserve.HeaderContentLength))
	resp, err := kserve.DecodeResponse(r.body, jl)
	if err != nil {
		t.Fatal(err)
	}
	sum, twice, _, _ := testmodels.MultiIOForward(x, y)
	if resp.Binary[0] || !resp.Binary[1] {
		t.Errorf("binary flags %v, want [false true]", resp.Binary)
	}
	if got := resp.Outputs[0].Float32s(); !slices.Equal(got, sum) {
		t.Errorf("sum %v, want %v", got, sum)
	}
	for i, w := range twice {
		if got := int64(binary.LittleEndian.Uint64(resp.Outputs[1].Data[8*i:])); got != w {
			t.Errorf("twice[%d] = %d, want %d", i, got, w)
		}
	}
}

func TestMalformedBinary(t *testing.T) {
	hs := newServer(t)
	header := func(size int) string {
		return fmt.Sprintf(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":%d}}]}`, size)
	}
	strHeader := func(size int) string {
		return fmt.Sprintf(`{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":%d}}]}`, size)
	}
	le := func(n uint32) string { b := make([]byte, 4); binary.LittleEndian.PutUint32(b, n); return string(b) }
	cases := []struct {
		name, model, body string
		headerLength      int
		msg               string
	}{
		{"header length past the end", "mlp", header(16) + strings.Repeat("\x00", 16), len(header(16)) + 100, "Inference-Header-Content-Length"},
		{"header length inside the JSON", "mlp", header(16) + strings.Repeat("\x00", 16), 10, "Inference-Header-Content-Length"},
		{"size not shape × dtype", "mlp", header(12) + strings.Repeat("\x00", 12), len(header(12)), "binary_data_size"},
		{"too few bytes", "mlp", header(16) + strings.Repeat("\x00", 8), len(header(16)), "input"},
		{"extra bytes", "mlp", header(16) + strings.Repeat("\x00", 20), len(header(16)), "input"},
		{"truncated BYTES element", "strings", strHeader(4+1+4+2) + le(1) + "a" + le(5) + "bc", len(strHeader(11)), "text"},
		{"BYTES count short", "strings", strHeader(4+1) + le(1) + "a", len(strHeader(5)), "text"},
		{"binary without the header", "mlp", header(16) + strings.Repeat("\x00", 16), -1, "Inference-Header-Content-Length"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := postBinary(t, hs.URL+"/v2/models/"+c.model+"/infer", []byte(c.body), c.headerLength)
			if r.status != 400 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			spectest.Validate(t, "inference_error_response", r.body)
			if !strings.Contains(string(r.body), c.msg) {
				t.Errorf("error %s does not mention %q", r.body, c.msg)
			}
		})
	}
	r := postBinary(t, hs.URL+"/v2/models/mlp/infer", []byte(header(16)+strings.Repeat("\x00", 16)), len(header(16)))
	if r.status != 200 {
		t.Fatalf("valid binary request after the bad ones: %d %s", r.status, r.body)
	}
}
