//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// lockedLog collects a child process's output for the test's failure message.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// freeLoopbackPort returns a port that was free on 127.0.0.1 a moment ago, for a server that
// cannot report the port it bound (Prometheus logs the address it was given, not the one it got).
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs a real Prometheus server on loopback with temporary storage, scraping
// target every second and evaluating ruleFiles, and returns its URL once it is ready.
func startPrometheus(t *testing.T, target string, ruleFiles ...string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("INFERD_REQUIRE_PROMETHEUS") != "" {
			t.Fatal("INFERD_REQUIRE_PROMETHEUS is set but the prometheus server is not installed (Debian package prometheus)")
		}
		t.Skip("prometheus not found: install Debian's prometheus package to run this test (.ci/run does)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	testutil.WriteFile(t, dir, "prometheus.yml", []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%s]
scrape_configs:
  - job_name: inferd
    static_configs:
      - targets: [%q]
`, quoted(ruleFiles), target)))
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	cmd := exec.Command(bin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	logs := &lockedLog{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	promURL := "http://" + addr
	testutil.Eventually(t, 60*time.Second, func() string {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get(promURL + "/-/ready")
		if err != nil {
			return "prometheus is not ready: " + err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Sprintf("prometheus /-/ready: %d", resp.StatusCode)
		}
		return ""
	})
	return promURL
}

// quoted lists paths as YAML flow items.
func quoted(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = strconv.Quote(p)
	}
	return strings.Join(q, ", ")
}

// promSample is one element of an instant vector from Prometheus' query API.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix time, "value"]
}

// query runs an instant query and returns the vector.
func query(t *testing.T, promURL, q string) []promSample {
	t.Helper()
	resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" || r.Data.ResultType != "vector" {
		t.Fatalf("query %s: %v %s", q, err, body)
	}
	return r.Data.Result
}

// value is the single sample's value of a query, or why there is none.
func value(t *testing.T, promURL, q string) (float64, string) {
	t.Helper()
	v := query(t, promURL, q)
	if len(v) != 1 {
		return 0, fmt.Sprintf("%s: %d series, want 1: %v", q, len(v), v)
	}
	s, _ := v[0].Value[1].(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Sprintf("%s: value %v", q, v[0].Value)
	}
	return f, ""
}

var metricsListening = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// TestPrometheusScrapesInferd starts the real daemon with a metrics listener of its own and a
// real Prometheus server that scrapes it, makes inferences, and reads the series back through
// Prometheus' query API: what an operator's dashboard would see.
func TestPrometheusScrapesInferd(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	testutil.WriteFile(t, repo, "mlp/1/model.onnx", testmodels.MLP())
	testutil.WriteFile(t, repo, "mlp/model.toml", []byte("max_batch_size = 8\n"))
	cfgPath := filepath.Join(root, "inferd.toml")
	testutil.WriteFile(t, root, "inferd.toml", []byte(fmt.Sprintf("[models]\nrepository = %q\ncontrol = \"none\"\n", repo)))
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), cfgPath, "INFERD_METRICS_LISTEN=127.0.0.1:0")
	d.WaitReady(t)
	m := metricsListening.FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("inferd did not log its metrics listener:\n%s", d.Logs())
	}
	metricsAddr := m[1]
	if resp, err := http.Get(d.URL + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the API's listener with a metrics listener configured: %v %v", resp, err)
	}
	promURL := startPrometheus(t, metricsAddr)

	post := func(model, body string) int {
		resp, err := http.Post(d.URL+"/v2/models/"+model+"/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const infer = `{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`
	const n = 7
	for range n {
		if c := post("mlp", infer); c != 200 {
			t.Fatalf("infer: %d", c)
		}
	}
	for range 2 {
		if c := post("nope", infer); c != 404 {
			t.Fatalf("unknown model: %d", c)
		}
	}
	if c := post("mlp", `{"inputs":[{"name":"input","shape":[2,5],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10]}]}`); c != 400 {
		t.Fatalf("wrong shape: %d", c)
	}

	want := map[string]float64{
		`up{job="inferd"}`: 1,
		`inferd_inference_requests_total{model="mlp",version="1",outcome="success"}`:      n,
		`inferd_inference_requests_total{model="mlp",version="1",outcome="client_error"}`: 1,
		`inferd_inference_requests_total{model="",outcome="not_found"}`:                   2,
		`inferd_inference_request_duration_seconds_count{model="mlp",version="1"}`:        n,
		`inferd_inference_queue_duration_seconds_count{model="mlp",version="1"}`:          n,
		`inferd_inference_compute_duration_seconds_count{model="mlp",version="1"}`:        n,
		// Sequential requests of two rows each run alone: n executions of batch size 2.
		`inferd_inference_batch_size_sum{model="mlp",version="1"}`:                      2 * n,
		`inferd_inference_batch_size_bucket{model="mlp",version="1",le="1"}`:            0,
		`inferd_inference_batch_size_bucket{model="mlp",version="1",le="2"}`:            n,
		`inferd_inference_pending_requests{model="mlp",version="1"}`:                    0,
		`inferd_model_state{model="mlp",version="1",state="ready"}`:                     1,
		`inferd_model_loads_total{model="mlp",result="success"}`:                        1,
		`count(inferd_build_info{ort_version=~"1\\.29\\..+",revision!="",version!=""})`: 1,
		// The request histogram answers quantile queries (its buckets are cumulative and sane).
		`histogram_quantile(1, inferd_inference_request_duration_seconds_bucket{model="mlp",version="1"}) > 0`: 1,
	}
	testutil.Eventually(t, 60*time.Second, func() string {
		var wrong []string
		for q, w := range want {
			got, why := value(t, promURL, q)
			if why == "" && got != w && !strings.HasPrefix(q, "histogram_quantile") {
				why = fmt.Sprintf("%s = %g, want %g", q, got, w)
			}
			if why != "" {
				wrong = append(wrong, why)
			}
		}
		return strings.Join(wrong, "\n")
	})
	// Request and queue times as Prometheus computes them from the histograms.
	sum, _ := value(t, promURL, `inferd_inference_request_duration_seconds_sum{model="mlp",version="1"}`)
	queued, _ := value(t, promURL, `inferd_inference_queue_duration_seconds_sum{model="mlp",version="1"}`)
	if sum <= 0 || queued < 0 || queued > sum {
		t.Errorf("request time %gs, of which queued %gs", sum, queued)
	}
}
