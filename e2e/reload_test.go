//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// tag is the constant a generation of a model adds: the version in the thousands, a counter
// below, so a response says which version and which generation of it served.
func tag(version, gen int) float32 { return float32(version*1000 + gen) }

// published is the set of tags whose files were completely written, with a lock.
type published struct {
	mu   sync.Mutex
	tags map[float32]bool
}

func (p *published) add(c float32) { p.mu.Lock(); p.tags[c] = true; p.mu.Unlock() }
func (p *published) has(c float32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tags[c]
}

// writeModel writes model bytes into dir/model/version/model.onnx by rename (complete at once).
func writeModel(t *testing.T, repo, model string, version int, data []byte) {
	t.Helper()
	dir := filepath.Join(repo, model, fmt.Sprint(version))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(repo, "."+model+fmt.Sprint(version)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "model.onnx")); err != nil {
		t.Fatal(err)
	}
}

// writeSlowly writes the file in pieces with pauses shorter than the quiet period.
func writeSlowly(t *testing.T, path string, data []byte, pieces int, pause time.Duration) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	step := (len(data) + pieces - 1) / pieces
	for i := 0; i < len(data); i += step {
		if _, err := f.Write(data[i:min(i+step, len(data))]); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		<-time.After(pause) // pacing the writer, not waiting for a condition
	}
}

type loadStats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
}

func (s *loadStats) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	if len(s.failures) < 20 {
		s.failures = append(s.failures, msg)
	}
	s.mu.Unlock()
}

// client sends requests to model until ctx ends; with pub set, it checks that each response
// came from a completely written generation of the version it names.
func client(ctx context.Context, url, model string, pub *published, st *loadStats) {
	x := []float32{1, 2, 3, 4}
	body := []byte(`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v2/models/"+model+"/infer", bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.fail(fmt.Sprintf("%s: %v", model, err))
			}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			st.fail(fmt.Sprintf("%s: %d %s", model, resp.StatusCode, b))
			continue
		}
		var r struct {
			ModelVersion string `json:"model_version"`
			Outputs      []struct {
				Data []float32 `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(b, &r); err != nil || len(r.Outputs) != 1 || len(r.Outputs[0].Data) != 4 {
			st.fail(fmt.Sprintf("%s: bad body %s", model, b))
			continue
		}
		c := r.Outputs[0].Data[0] - x[0]
		for i := range x {
			if math.Abs(float64(r.Outputs[0].Data[i]-x[i]-c)) > 1e-3 {
				st.fail(fmt.Sprintf("%s: inconsistent output %v", model, r.Outputs[0].Data))
			}
		}
		if pub != nil && (!pub.has(c) || fmt.Sprint(int(c)/1000) != r.ModelVersion) {
			st.fail(fmt.Sprintf("%s: response tagged %v from version %s: not a completely written generation", model, c, r.ModelVersion))
			continue
		}
		st.ok.Add(1)
	}
}

// TestReloadUnderLoad runs the real binary under continuous load from 8 clients and makes more
// than 50 changes to its models and configuration. Every request to a model that stays
// configured must succeed, and every response must come from a completely written generation.
func TestReloadUnderLoad(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	pub := &published{tags: map[float32]bool{}}
	writeModel(t, repo, "stable", 1, testmodels.AddConst(tag(1, 0)))
	writeModel(t, repo, "m", 1, testmodels.AddConst(tag(1, 0)))
	pub.add(tag(1, 0))
	testutil.WriteFile(t, repo, "m/model.toml", []byte("max_batch_size = 8\n[version_policy]\nall = true\n"))
	cfgPath := filepath.Join(root, "inferd.toml")
	cfg := func(level, delay string) []byte {
		return []byte(fmt.Sprintf("[models]\nrepository = %q\nquiet_period = \"150ms\"\npoll_interval = \"1s\"\n[log]\nlevel = %q\n[scheduler]\nmax_queue_delay = %q\n", repo, level, delay))
	}
	if err := os.WriteFile(cfgPath, cfg("info", "2ms"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := daemontest.Build(t, t.TempDir())
	d := daemontest.Start(t, bin, cfgPath)
	d.WaitReady(t)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var st loadStats
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				client(ctx, d.URL, "m", pub, &st)
			} else {
				client(ctx, d.URL, "stable", nil, &st)
			}
		}()
	}

	// waitFor polls the repository index until cond holds.
	waitFor := func(what string, cond func(index string) bool) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, func() string {
			resp, err := http.Post(d.URL+"/v2/repository/index", "application/json", nil)
			if err != nil {
				return fmt.Sprintf("%s: not seen; index: %v", what, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if cond(string(b)) {
				return ""
			}
			return fmt.Sprintf("%s: not seen; index %s", what, b)
		})
	}
	ready := func(model string, version int) func(string) bool {
		return func(index string) bool {
			// a row may go on with the version's worker fields
			return strings.Contains(index, fmt.Sprintf(`{"name":%q,"version":"%d","state":"READY"`, model, version))
		}
	}
	changes := 0
	change := func() { changes++ }
	version := 1
	for round := range 10 {
		// A new version, written at once.
		version++
		writeModel(t, repo, "m", version, testmodels.AddConst(tag(version, round)))
		pub.add(tag(version, round))
		change()
		waitFor("new version", ready("m", version))

		// A corrupt model file as the next version: UNAVAILABLE, and the newest good one serves.
		writeModel(t, repo, "m", version+1, []byte("corrupt, not an ONNX model"))
		change()
		waitFor("corrupt version reported", func(index string) bool {
			return strings.Contains(index, fmt.Sprintf(`"version":"%d","state":"UNAVAILABLE"`, version+1))
		})
		// Deleting the corrupt version.
		if err := os.RemoveAll(filepath.Join(repo, "m", fmt.Sprint(version+1))); err != nil {
			t.Fatal(err)
		}
		change()
		waitFor("deleted version gone", func(index string) bool {
			return !strings.Contains(index, fmt.Sprintf(`"version":"%d"`, version+1))
		})

		// The same version rewritten slowly in place: a new generation, never half-loaded.
		gen := 100 + round
		data := testmodels.AddConst(tag(version, gen))
		pub.add(tag(version, gen))
		writeSlowly(t, filepath.Join(repo, "m", fmt.Sprint(version), "model.onnx"), data, 4, 60*time.Millisecond)
		change()

		// model.toml changes: instances and batching.
		testutil.WriteFile(t, repo, "m/model.toml", []byte(fmt.Sprintf("max_batch_size = %d\n[instance]\ncount = %d\n[version_policy]\nall = true\n", 8+8*(round%2), 1+round%2)))
		change()

		// A model that comes and goes (nobody needs it to stay).
		writeModel(t, repo, "temp", 1, testmodels.AddConst(tag(1, 0)))
		change()
		waitFor("temporary model", ready("temp", 1))
		if err := os.RemoveAll(filepath.Join(repo, "temp")); err != nil {
			t.Fatal(err)
		}
		change()
		waitFor("temporary model gone", func(index string) bool { return !strings.Contains(index, `"name":"temp"`) })

		// Configuration: a valid edit, an invalid one, then the first again by SIGHUP; each
		// waits until the daemon has taken it (the file watcher or the signal).
		valid := cfg([]string{"info", "debug"}[round%2], []string{"3ms", "1ms"}[round%2])
		applied := reloads(t, d.URL, "applied")
		if err := os.WriteFile(cfgPath, valid, 0o644); err != nil {
			t.Fatal(err)
		}
		change()
		waitMetric(t, d.URL, "applied", applied+1)
		failed := reloads(t, d.URL, "failed")
		if err := os.WriteFile(cfgPath, []byte("[models\nbroken"), 0o644); err != nil {
			t.Fatal(err)
		}
		change()
		waitMetric(t, d.URL, "failed", failed+1)
		applied = reloads(t, d.URL, "applied")
		if err := os.WriteFile(cfgPath, cfg("info", "2ms"), 0o644); err != nil {
			t.Fatal(err)
		}
		d.Signal(t, syscall.SIGHUP)
		change()
		waitMetric(t, d.URL, "applied", applied+1)
		// Old versions leave once in a while, except the newest.
		if version > 3 {
			if err := os.RemoveAll(filepath.Join(repo, "m", fmt.Sprint(version-2))); err != nil {
				t.Fatal(err)
			}
			change()
		}
	}
	// Let the last changes settle under load, then stop the clients.
	waitFor("settled", ready("m", version))
	stop()
	wg.Wait()
	t.Logf("%d changes, %d successful requests, %d failed", changes, st.ok.Load(), st.failed.Load())
	if changes < 50 {
		t.Errorf("only %d changes", changes)
	}
	if st.failed.Load() != 0 {
		t.Errorf("%d requests failed; first: %q", st.failed.Load(), st.failures)
	}
	if st.ok.Load() < 100 {
		t.Errorf("only %d requests succeeded: the load was not continuous", st.ok.Load())
	}
	logs := d.Logs()
	for _, want := range []string{"configuration reload failed", "configuration reloaded", "model version unavailable"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// reloads reads inferd_config_reloads_total{result} from /metrics (0 before the first).
func reloads(t *testing.T, url, result string) int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := fmt.Sprintf("inferd_config_reloads_total{result=%q} ", result)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	return 0
}

// waitMetric polls until at least want reloads with result have happened.
func waitMetric(t *testing.T, url, result string, want int) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("%d %s configuration reloads", want, result), func() bool {
		return reloads(t, url, result) >= want
	})
}
