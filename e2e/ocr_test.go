//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/spectest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/tensor"
)

// ocrRepository is where `make e2e` puts the PaddleOCR models.
func ocrRepository(t *testing.T) string {
	dir := filepath.Join(testutil.ModuleRoot(t), "build", "ocr-models")
	if _, err := os.Stat(filepath.Join(dir, "ocr_det", "1", "model.onnx")); err != nil {
		t.Fatalf("PaddleOCR models missing (%v): run scripts/fetch-ocr-models.sh or make e2e", err)
	}
	return dir
}

type tensorJSON struct {
	Name     string    `json:"name"`
	Shape    []int64   `json:"shape"`
	Datatype string    `json:"datatype"`
	Data     []float32 `json:"data"`
}

// TestOCRModelsMatchInProcessORT serves the three PaddleOCR models through the real binary and
// checks every output against the same model run in-process through engine/ort.
func TestOCRModelsMatchInProcessORT(t *testing.T) {
	repo := ocrRepository(t)
	cfgPath := filepath.Join(t.TempDir(), "inferd.toml")
	cfg := fmt.Sprintf("[models]\nrepository = %q\n[log]\nlevel = \"debug\"\n", repo)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := daemontest.Build(t, t.TempDir())
	d := daemontest.Start(t, bin, cfgPath)
	d.WaitReady(t)

	rt, err := ort.New(ort.RuntimeOptions{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	cases := []struct {
		model string
		shape []int64
	}{
		{"ocr_det", []int64{1, 3, 96, 128}},
		{"ocr_rec", []int64{2, 3, 48, 160}},
		{"ocr_cls", []int64{3, 3, 48, 192}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range cases {
		t.Run(c.model, func(t *testing.T) {
			meta := getJSON(t, d.URL+"/v2/models/"+c.model)
			spectest.Validate(t, "metadata_model_response", meta)
			var m struct {
				Inputs []tensor.Spec `json:"inputs"`
			}
			if err := json.Unmarshal(meta, &m); err != nil || len(m.Inputs) != 1 {
				t.Fatalf("metadata %s: %v", meta, err)
			}
			n, _ := tensor.Elements(c.shape)
			data := make([]float32, n)
			for i := range data {
				data[i] = rng.Float32()*2 - 1
			}
			body, _ := json.Marshal(map[string]any{"inputs": []tensorJSON{{m.Inputs[0].Name, c.shape, "FP32", data}}})
			resp, err := http.Post(d.URL+"/v2/models/"+c.model+"/infer", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("infer: %d %s", resp.StatusCode, out)
			}
			spectest.Validate(t, "inference_response", out)
			var got struct {
				Outputs []tensorJSON `json:"outputs"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}

			want := runInProcess(t, rt, filepath.Join(repo, c.model, "1", "model.onnx"), tensor.FromFloat32s(m.Inputs[0].Name, c.shape, data))
			if len(got.Outputs) != len(want) {
				t.Fatalf("%d outputs, want %d", len(got.Outputs), len(want))
			}
			for i, w := range want {
				g := got.Outputs[i]
				if g.Name != w.Name || fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) {
					t.Fatalf("output %s %v, want %s %v", g.Name, g.Shape, w.Name, w.Shape)
				}
				worst := 0.0
				for j, v := range w.Float32s() {
					worst = math.Max(worst, math.Abs(float64(g.Data[j]-v)))
				}
				if worst > 1e-4 {
					t.Errorf("output %s differs from in-process ORT by up to %g", g.Name, worst)
				}
				t.Logf("%s: output %s %v matches in-process ORT (max diff %g)", c.model, g.Name, g.Shape, worst)
			}
		})
	}

	// A shape the classifier cannot take is a 400, and the daemon keeps serving.
	bad := `{"inputs":[{"name":"x","shape":[1,4,48,192],"datatype":"FP32","data":[` + strings.TrimSuffix(strings.Repeat("0,", 4*48*192), ",") + `]}]}`
	resp, err := http.Post(d.URL+"/v2/models/ocr_cls/infer", "application/json", strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(msg), "dimension 1 must be 3") {
		t.Errorf("wrong classifier shape: %d %s", resp.StatusCode, msg)
	}
	if r, err := http.Get(d.URL + "/ready"); err != nil || r.StatusCode != 200 {
		t.Errorf("not ready after bad input: %v", err)
	}

	d.Signal(t, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, err := d.Wait(ctx); code != 0 || err != nil {
		t.Fatalf("exit %d %v", code, err)
	}
}

func runInProcess(t *testing.T, rt *ort.Runtime, path string, in tensor.Tensor) []tensor.Tensor {
	t.Helper()
	s, err := rt.Open(context.Background(), path, engine.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func getJSON(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}
