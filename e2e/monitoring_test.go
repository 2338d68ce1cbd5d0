//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// loadedNode is a real daemon, a cluster of one with a rollout of model mlp paused at 10%,
// under a steady load of clients until the test ends.
type loadedNode struct {
	d      *daemontest.Daemon
	name   string
	models []string
}

func startLoadedNode(t *testing.T, clients int) *loadedNode {
	t.Helper()
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	writeModel(t, repo, "mlp", 1, testmodels.MLP())
	writeModel(t, repo, "mlp", 2, testmodels.MLP())
	testutil.WriteFile(t, repo, "mlp/model.toml", []byte("max_batch_size = 8\n[version_policy]\nall = true\n"))
	writeModel(t, repo, "add", 1, testmodels.AddConst(1))
	policy := filepath.Join(root, "routing.toml")
	testutil.WriteFile(t, root, "routing.toml", []byte(`
[[rollout]]
model = "mlp"
stable = "1"
canary = "2"
steps = [ { set_weight = 10 }, { pause = {} } ]
`))
	testutil.WriteFile(t, root, "inferd.toml", []byte(fmt.Sprintf(`[models]
repository = %q
control = "none"
[engine]
intra_op_threads = 1
[cluster]
enabled = true
name = "solo"
bind = "127.0.0.1:0"
leave_timeout = "10ms"
policy_file = %q
`, repo, policy)))
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), filepath.Join(root, "inferd.toml"))
	d.WaitReady(t)
	n := &loadedNode{d: d, name: "solo", models: []string{"add", "mlp"}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	bodies := map[string]string{
		"mlp": `{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`,
		"add": `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`,
	}
	for i := range clients {
		model := n.models[i%len(n.models)]
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, d.URL+"/v2/models/"+model+"/infer", strings.NewReader(bodies[model]))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return n
}

// dashboardPanels reads the shipped Grafana dashboard's queries, by panel title.
func dashboardPanels(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.ModuleRoot(t), "packaging/monitoring/grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string                  `json:"title"`
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	return out
}

var recordName = regexp.MustCompile(`(?m)^\s+- record: (\S+)$`)

// ruleHealth is every rule group's rules as Prometheus evaluated them.
type ruleHealth struct {
	Data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Type      string `json:"type"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"data"`
}

// TestMonitoringAgainstLiveDaemon: a real Prometheus loads the shipped rules and scrapes a
// real daemon under load; every rule evaluates without error, every recording rule and every
// query of the Grafana dashboard returns data (GPU ones only where the machine has a GPU).
func TestMonitoringAgainstLiveDaemon(t *testing.T) {
	n := startLoadedNode(t, 4)
	dir := filepath.Join(testutil.ModuleRoot(t), "packaging/monitoring")
	promURL := startPrometheus(t, strings.TrimPrefix(n.d.URL, "http://"), filepath.Join(dir, "recording.yml"), filepath.Join(dir, "alerts.yml"))
	rec, err := os.ReadFile(filepath.Join(dir, "recording.yml"))
	if err != nil {
		t.Fatal(err)
	}
	queries := map[string]string{}
	for _, m := range recordName.FindAllStringSubmatch(string(rec), -1) {
		queries["recording rule "+m[1]] = m[1]
	}
	for title, exprs := range dashboardPanels(t) {
		for i, e := range exprs {
			e = strings.NewReplacer(`"$instance"`, `".*"`, `"$model"`, `".*"`).Replace(e)
			queries[fmt.Sprintf("panel %q query %d", title, i+1)] = e
		}
	}
	gpu := len(query(t, promURL, "inferd_gpu_up")) > 0
	var skipped []string
	// The recording group runs every 15s and its rates need a minute of samples.
	testutil.Eventually(t, 3*time.Minute, func() string {
		var empty []string
		skipped = skipped[:0]
		for what, q := range queries {
			if strings.Contains(q, "gpu") && !gpu {
				skipped = append(skipped, what)
				continue
			}
			if len(query(t, promURL, q)) == 0 {
				empty = append(empty, what+": "+q)
			}
		}
		return strings.Join(empty, "\n")
	})
	if len(skipped) > 0 {
		t.Logf("no GPU on this machine: not checked: %s", strings.Join(skipped, "; "))
	}
	t.Logf("%d recording rules and dashboard queries returned data", len(queries)-len(skipped))

	resp, err := http.Get(promURL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	var rh ruleHealth
	err = json.NewDecoder(resp.Body).Decode(&rh)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	alerting := 0
	for _, g := range rh.Data.Groups {
		for _, r := range g.Rules {
			if r.Type == "alerting" {
				alerting++
			}
			if r.Health != "ok" {
				t.Errorf("rule %s/%s: health %q %s", g.Name, r.Name, r.Health, r.LastError)
			}
		}
	}
	if alerting != 13 {
		t.Errorf("%d alerting rules loaded, want 13", alerting)
	}
	// A healthy node under load fires nothing (the rollout is paused, not aborted).
	if firing := query(t, promURL, `ALERTS{alertstate="firing"}`); len(firing) > 0 {
		t.Errorf("alerts firing on a healthy node: %v", firing)
	}
}
