package daemon_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/gpu"
	"github.com/inferd/inferd/internal/testutil"
)

// TestCPUOnlyNodeWithGPUDiscovery runs the daemon with GPU discovery on a node without an
// NVIDIA driver (a library path that does not exist stands for one, so that the test means the
// same on a machine with a GPU): the node says it is CPU-only in /health, a model that needs a
// GPU is unavailable with the reason, one that allows the CPU runs there and says so in
// /health, its configuration and /metrics.
func TestCPUOnlyNodeWithGPUDiscovery(t *testing.T) {
	repo := t.TempDir()
	rt := enginetest.New()
	for name, toml := range map[string]string{
		"double":   "",
		"gpuonly":  "[instance]\ndevice = \"gpu\"\n",
		"fallback": "[instance]\ndevice = \"gpu\"\ncpu_fallback = true\n",
	} {
		testutil.WriteFile(t, repo, name+"/1/model.onnx", []byte("fake "+name))
		testutil.WriteFile(t, repo, name+"/model.toml", []byte(toml))
		rt.Register(filepath.Join(repo, name, "1", "model.onnx"), doubleSig, double)
	}
	cfg := config.Default()
	cfg.Models.Repository = repo
	nv := gpu.New(gpu.Options{Library: "/nonexistent/libnvidia-ml.so.1", InitRetry: time.Minute}, quiet)
	t.Cleanup(func() { nv.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	d, err := daemon.New(&cfg, daemon.Options{Version: "test", Runtime: rt, Listener: ln, GPU: nv,
		Notify: func(s string) error {
			if strings.Contains(s, "READY=1") {
				close(ready)
			}
			return nil
		}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("not ready") // a missing library must not be waited for
	}
	url := "http://" + ln.Addr().String()

	var health struct {
		Components map[string]struct {
			State  string          `json:"state"`
			Detail json.RawMessage `json:"detail"`
		} `json:"components"`
	}
	if err := json.Unmarshal([]byte(get(t, url+"/health")), &health); err != nil {
		t.Fatal(err)
	}
	gpus := health.Components["gpus"]
	if gpus.State != "none" || !strings.Contains(string(gpus.Detail), "not found: no NVIDIA driver is installed") {
		t.Errorf("gpus component = %s %s", gpus.State, gpus.Detail)
	}
	var host struct {
		CPU struct {
			Threads int `json:"threads"`
		} `json:"cpu"`
	}
	if err := json.Unmarshal(health.Components["host"].Detail, &host); err != nil || health.Components["host"].State != "ok" || host.CPU.Threads < 1 {
		t.Errorf("host component = %s %s (%v)", health.Components["host"].State, health.Components["host"].Detail, err)
	}
	// the core budget and what each ready version takes from it
	var budget struct {
		Cores  int `json:"cores"`
		Models []struct {
			Name, Source string
			Instances    int `json:"instances"`
			Threads      int `json:"intra_op_threads"`
			Cores        int `json:"cores"`
		} `json:"models"`
	}
	if err := json.Unmarshal(health.Components["scheduler"].Detail, &budget); err != nil || health.Components["scheduler"].State != "ok" {
		t.Fatalf("scheduler component = %s %s (%v)", health.Components["scheduler"].State, health.Components["scheduler"].Detail, err)
	}
	if budget.Cores != runtime.GOMAXPROCS(0) || len(budget.Models) != 2 {
		t.Errorf("scheduler component: %+v, want %d cores and the two ready versions", budget, runtime.GOMAXPROCS(0))
	}
	for _, m := range budget.Models {
		if m.Name == "gpuonly" || m.Source == "" || m.Instances < 1 || m.Threads < 1 || m.Cores != m.Instances*m.Threads {
			t.Errorf("scheduler component, %s: %+v", m.Name, m)
		}
	}
	var models []struct {
		Name, State, Reason string
		Provider            string `json:"execution_provider"`
		Fallback            string `json:"cpu_fallback_reason"`
	}
	if err := json.Unmarshal(health.Components["models"].Detail, &models); err != nil {
		t.Fatal(err)
	}
	for _, m := range models {
		switch m.Name {
		case "gpuonly":
			if m.State != "UNAVAILABLE" || !strings.Contains(m.Reason, `device "gpu" requested`) || !strings.Contains(m.Reason, "no NVIDIA driver is installed") {
				t.Errorf("gpuonly: %+v", m)
			}
		case "fallback":
			if m.State != "READY" || m.Provider != "CPUExecutionProvider" || !strings.Contains(m.Fallback, "no NVIDIA driver is installed") {
				t.Errorf("fallback: %+v", m)
			}
		case "double":
			if m.State != "READY" || m.Fallback != "" {
				t.Errorf("double: %+v", m)
			}
		}
	}
	if cfgBody := get(t, url+"/v2/models/fallback/config"); !strings.Contains(cfgBody, `"kind":"KIND_CPU"`) ||
		!strings.Contains(cfgBody, `"cpu_fallback_reason":"this node has no usable GPU`) {
		t.Errorf("model config: %s", cfgBody)
	}
	metrics := get(t, url+"/metrics")
	for _, want := range []string{
		`inferd_model_execution_provider_info{cpu_fallback="true",execution_provider="CPUExecutionProvider",gpus="",model="fallback",version="1"} 1`,
		`inferd_model_execution_provider_info{cpu_fallback="false",execution_provider="CPUExecutionProvider",gpus="",model="double",version="1"} 1`,
		`inferd_scrape_collector_success{collector="gpu"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, "inferd_gpu_up") {
		t.Errorf("/metrics reports a GPU on a CPU-only node:\n%s", grepLines(metrics, "inferd_gpu_"))
	}
	if got := grepLines(grepLines(metrics, "inferd_model_execution_provider_info{"), `model="gpuonly"`); got != "" {
		t.Errorf("/metrics reports a provider for a version that did not load: %s", got)
	}
}
