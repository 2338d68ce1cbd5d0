package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/gpu"
	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/spectest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/perf"
)

// TestServeDemoRepository runs the real binary on the demo repository exactly as `make run`
// does (gRPC on too), sends the request that the README's curl line sends, measures it with
// `inferd perf` over a gRPC stream, and stops it with SIGTERM.
func TestServeDemoRepository(t *testing.T) {
	root := testutil.ModuleRoot(t)
	bin := daemontest.Build(t, t.TempDir())
	d := daemontest.Start(t, bin, filepath.Join(root, "configs", "inferd.toml"), "INFERD_GRPC_LISTEN=127.0.0.1:0")
	d.WaitReady(t)

	body, err := os.ReadFile(filepath.Join(root, "configs", "demo-request.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp := post(t, d.URL+"/v2/models/mlp/infer", body)
	if resp.status != http.StatusOK {
		t.Fatalf("demo request: %d %s", resp.status, resp.body)
	}
	spectest.Validate(t, "inference_response", resp.body)
	var got struct {
		ModelName, ModelVersion, ID string `json:"-"`
		Outputs                     []struct {
			Name     string    `json:"name"`
			Datatype string    `json:"datatype"`
			Shape    []int64   `json:"shape"`
			Data     []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatal(err)
	}
	want := testmodels.MLPForward([]float32{1, 2, 3, 4, 0.5, -1, 0, 2})
	if len(got.Outputs) != 1 || !slices.Equal(got.Outputs[0].Shape, []int64{2, 3}) || got.Outputs[0].Datatype != "FP32" {
		t.Fatalf("outputs = %+v, want one FP32 [2,3]", got.Outputs)
	}
	for i, w := range want {
		if math.Abs(float64(got.Outputs[0].Data[i]-w)) > 1e-4 {
			t.Fatalf("output[%d] = %v, want %v (all: %v vs %v)", i, got.Outputs[0].Data[i], w, got.Outputs[0].Data, want)
		}
	}
	if !strings.Contains(string(resp.body), `"id":"demo-1"`) {
		t.Errorf("id not echoed: %s", resp.body)
	}

	meta := get(t, d.URL+"/v2")
	spectest.Validate(t, "metadata_server_response", meta.body)
	bad := post(t, d.URL+"/v2/models/mlp/infer", []byte(`{"inputs": [`))
	if bad.status != http.StatusBadRequest {
		t.Errorf("malformed JSON: %d %s", bad.status, bad.body)
	}
	spectest.Validate(t, "inference_error_response", bad.body)

	perfOverStream(t, d)

	d.Signal(t, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := d.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("exit after SIGTERM: code %d, err %v\n%s", code, err, d.Logs())
	}
	states := d.Notified()
	if !slices.Contains(states, "READY=1") || !slices.Contains(states, "STOPPING=1") {
		t.Errorf("sd_notify states %q: want READY=1 and STOPPING=1", states)
	}
	if i, j := slices.Index(states, "READY=1"), slices.Index(states, "STOPPING=1"); i > j {
		t.Errorf("STOPPING=1 came before READY=1: %q", states)
	}
}

// perfOverStream runs `inferd perf --protocol grpc --stream` against d: every request of each
// step on one stream, with the concurrency in flight on it, all answered, and the server's
// statistics counting them.
func perfOverStream(t *testing.T, d *daemontest.Daemon) {
	t.Helper()
	jsonPath := filepath.Join(t.TempDir(), "perf.json")
	out, errOut, err := runCLI(t, nil, "perf", "-u", d.URL, "--protocol", "grpc", "--grpc", d.GRPC, "--stream",
		"-m", "mlp", "--format", "binary", "--batch", "2", "--concurrency", "1,8", "--duration", "300ms", "--warmup", "50ms", "--json", jsonPath)
	if err != nil {
		t.Fatalf("perf --stream: %v\n%s%s", err, out, errOut)
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep perf.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Format != "grpc raw stream" || len(rep.Steps) != 2 || !rep.ServerStats {
		t.Fatalf("perf --stream report: format %q, %d steps, server stats %v\n%s", rep.Format, len(rep.Steps), rep.ServerStats, out)
	}
	for _, s := range rep.Steps {
		if s.Requests == 0 || s.Errors != 0 || s.Streams != 1 || s.Server == nil || s.Server.Successes == 0 {
			t.Errorf("concurrency %d: %d requests, %d errors (%s), %d streams, server %+v\n%s", s.Concurrency, s.Requests, s.Errors, s.FirstError, s.Streams, s.Server, out)
		}
	}
	if !strings.Contains(out, "grpc raw stream") {
		t.Errorf("perf table does not say it streamed:\n%s", out)
	}
	t.Logf("inferd perf --stream:\n%s", out)
}

type response struct {
	status int
	body   []byte
}

func post(t *testing.T, url string, body []byte) response {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func get(t *testing.T, url string) response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	return read(t, resp)
}

func read(t *testing.T, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, b}
}

func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCommand(&out, &errOut, env)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestValidateCommand(t *testing.T) {
	root := testutil.ModuleRoot(t)
	out, _, err := runCLI(t, nil, "validate", filepath.Join(root, "configs", "inferd.toml"))
	if err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("validate of the shipped config: %v, %q", err, out)
	}

	bad := filepath.Join(t.TempDir(), "bad.toml")
	content := "[server]\nlisten = 8080\nmax_request_bytes = -1\n\n[log]\nlevel = \"loud\"\ncolour = true\n"
	if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runCLI(t, nil, "validate", bad)
	if err == nil {
		t.Fatal("validate accepted a bad file")
	}
	for _, want := range []string{bad + ":2:", bad + ":3:", bad + ":6:", bad + ":7:"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}

	_, errOut, err = runCLI(t, []string{"INFERD_SERVER_LISTEN=nonsense"}, "validate", filepath.Join(root, "configs", "inferd.toml"))
	if err == nil || !strings.Contains(errOut, "INFERD_SERVER_LISTEN") {
		t.Errorf("a bad env override was not reported: %v %q", err, errOut)
	}
}

func TestVersionCommand(t *testing.T) {
	out, _, err := runCLI(t, []string{"INFERD_ONNXRUNTIME_LIBRARY=" + filepath.Join(t.TempDir(), "missing.so")}, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "inferd dev") {
		t.Errorf("version output %q", out)
	}
}

// TestPerfRawCommand runs `inferd perf --raw` on the demo model through the real ONNX Runtime,
// and checks that --raw-provider is honoured: an unknown one is refused, and CUDA where the
// library has no working CUDA fails with the provider's reason instead of measuring the CPU.
func TestPerfRawCommand(t *testing.T) {
	model := filepath.Join(testutil.ModuleRoot(t), "configs", "models", "mlp", "1", "model.onnx")
	env := []string{"INFERD_ONNXRUNTIME_LIBRARY=" + os.Getenv("INFERD_ONNXRUNTIME_LIBRARY")}
	raw := []string{"perf", "--raw", "--model-file", model, "--raw-batches", "1,4", "--raw-instances", "1",
		"--raw-threads", "1", "--duration", "50ms", "--warmup", "0"}

	out, errOut, err := runCLI(t, env, raw...)
	if err != nil {
		t.Fatalf("perf --raw: %v\n%s", err, errOut)
	}
	for _, want := range []string{engine.ProviderCPU, "Best:"} {
		if !strings.Contains(out, want) {
			t.Errorf("perf --raw output lacks %q:\n%s", want, out)
		}
	}

	if _, _, err := runCLI(t, env, append(raw, "--raw-provider", "tpu")...); err == nil || !strings.Contains(err.Error(), "--raw-provider") {
		t.Errorf("--raw-provider tpu: %v, want a refusal naming the flag", err)
	}

	out, _, err = runCLI(t, env, append(raw, "--raw-provider", "cuda", "--raw-device", "0")...)
	switch {
	case err != nil:
		if !errors.Is(err, engine.ErrProviderUnavailable) {
			t.Errorf("perf --raw on CUDA failed without the provider's reason: %v", err)
		}
	case !strings.Contains(out, engine.ProviderCUDA):
		t.Errorf("perf --raw --raw-provider cuda measured something else:\n%s", out)
	}
}

// TestDevicesCommand: `inferd devices` reports this machine's CPU and memory, the GPUs (or
// why there are none) and the ONNX Runtime library with its providers, as text and as JSON.
func TestDevicesCommand(t *testing.T) {
	env := []string{"INFERD_ONNXRUNTIME_LIBRARY=" + os.Getenv("INFERD_ONNXRUNTIME_LIBRARY")}
	out, errOut, err := runCLI(t, env, "devices", "--no-cuda-check")
	if err != nil {
		t.Fatalf("devices: %v\n%s", err, errOut)
	}
	for _, want := range []string{"host: ", "threads usable", "gpus: ", "onnxruntime: ", "1.29.0", engine.ProviderCPU, "cuda check: skipped: --no-cuda-check"} {
		if !strings.Contains(out, want) {
			t.Errorf("devices output lacks %q:\n%s", want, out)
		}
	}

	out, errOut, err = runCLI(t, env, "devices", "--json")
	if err != nil {
		t.Fatalf("devices --json: %v\n%s", err, errOut)
	}
	var rep devicesReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("devices --json: %v\n%s", err, out)
	}
	if rep.Host == nil || rep.Host.CPU.Threads < 1 || rep.Host.Memory.UsableTotal == 0 {
		t.Errorf("host: %+v (%s)", rep.Host, rep.HostError)
	}
	if !slices.Contains(rep.ONNXRuntime.Providers, engine.ProviderCPU) || rep.ONNXRuntime.Version == "" {
		t.Errorf("onnxruntime: %+v", rep.ONNXRuntime)
	}
	if !rep.GPUs.Available {
		if rep.GPUs.Reason == "" || rep.CUDACheckSkipped != "no GPU" || len(rep.CUDAChecks) != 0 {
			t.Errorf("a CPU-only node must say why, and check no GPU: %+v", rep)
		}
	}
}

// TestCUDACheck runs the CUDA check against one GPU. Where CUDA does not work (no GPU, or no
// CUDA provider beside the library) it must fail with ONNX Runtime's reason, never pass; where
// it works, the outputs must match the CPU's.
func TestCUDACheck(t *testing.T) {
	rt, err := ort.New(ort.RuntimeOptions{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	checks := checkCUDA(t.Context(), rt, []gpu.Device{{Index: 3, CUDAOrdinal: 0}})
	if len(checks) != 1 || checks[0].GPU != 3 {
		t.Fatalf("checks: %+v", checks)
	}
	c := checks[0]
	if c.OK {
		if c.RelativeDiff > checkTolerance {
			t.Errorf("passed with a relative difference of %v", c.RelativeDiff)
		}
		t.Logf("CUDA works here: %+v", c)
		return
	}
	if !strings.Contains(c.Error, "execution provider unavailable") {
		t.Errorf("a failed CUDA check without the provider's reason: %q", c.Error)
	}
	var buf bytes.Buffer
	writeDevices(&buf, devicesReport{CUDAChecks: checks})
	if !strings.Contains(buf.String(), "cuda check: GPU 3: FAILED: ") {
		t.Errorf("report of a failed check:\n%s", buf.String())
	}
}
