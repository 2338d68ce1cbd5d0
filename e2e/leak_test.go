//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// rssKiB reads a process's resident set size from /proc.
func rssKiB(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// goroutines reads go_goroutines from the daemon's /metrics.
func goroutines(t *testing.T, url string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no go_goroutines in /metrics")
	return 0
}

// TestLoadUnloadCyclesDoNotLeak loads, uses and unloads a model 200 times through the
// repository API and compares the daemon's RSS and goroutine count after 10 and after 200
// cycles.
func TestLoadUnloadCyclesDoNotLeak(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	testutil.WriteFile(t, repo, "m/1/model.onnx", testmodels.MLP())
	testutil.WriteFile(t, repo, "m/model.toml", []byte("max_batch_size = 8\n[instance]\ncount = 2\n"))
	cfgPath := filepath.Join(root, "inferd.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("[models]\nrepository = %q\ncontrol = \"explicit\"\n", repo)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), cfgPath)
	d.WaitReady(t)

	post := func(path, body string) int {
		resp, err := http.Post(d.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const infer = `{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`
	cycle := func() {
		if c := post("/v2/repository/models/m/unload", ""); c != 200 {
			t.Fatalf("unload: %d", c)
		}
		if c := post("/v2/models/m/infer", infer); c != 404 {
			t.Fatalf("infer on an unloaded model: %d, want 404", c)
		}
		if c := post("/v2/repository/models/m/load", ""); c != 200 {
			t.Fatalf("load: %d", c)
		}
		for range 3 {
			if c := post("/v2/models/m/infer", infer); c != 200 {
				t.Fatalf("infer after load: %d", c)
			}
		}
	}
	for range 10 {
		cycle()
	}
	rss10, g10 := rssKiB(t, d.PID()), goroutines(t, d.URL)
	for range 190 {
		cycle()
	}
	rss200, g200 := rssKiB(t, d.PID()), goroutines(t, d.URL)
	t.Logf("after 10 cycles: RSS %d KiB, %v goroutines; after 200: RSS %d KiB, %v goroutines", rss10, g10, rss200, g200)
	if float64(rss200) > 1.10*float64(rss10) {
		t.Errorf("RSS grew from %d KiB to %d KiB (more than 10%%)", rss10, rss200)
	}
	if g200 > 1.10*g10 {
		t.Errorf("goroutines grew from %v to %v (more than 10%%)", g10, g200)
	}
}
