package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testutil"
)

// soloCluster runs a daemon that is a cluster of one, with its routing policy in a file, and
// returns it with the policy's path.
func soloCluster(t *testing.T, policy string) (*harness, func(context.Context) error, string) {
	t.Helper()
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "routing.toml")
	if err := os.WriteFile(policyPath, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	// A long quiet period keeps the file watcher out of the way: this test reloads by hand.
	h, d, _, _ := startWithConfig(t, `[models]
repository = "models"
quiet_period = "1h"
[cluster]
enabled = true
name = "solo"
bind = "127.0.0.1:0"
leave_timeout = "10ms"
policy_file = "`+policyPath+`"
`)
	return h, d.Reload, policyPath
}

type rolloutsJSON struct {
	Node     string `json:"node"`
	Rollouts []struct {
		Model        string  `json:"model"`
		Phase        string  `json:"phase"`
		CanaryWeight float64 `json:"canary_weight"`
	} `json:"rollouts"`
}

// waitCanaryWeight polls the rollouts endpoint until model double's canary has weight w.
func waitCanaryWeight(t *testing.T, url string, w float64) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() string {
		var r rolloutsJSON
		body := get(t, url+"/v2/cluster/rollouts")
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(r.Rollouts) == 1 && r.Rollouts[0].Model == "double" && r.Rollouts[0].CanaryWeight == w {
			return ""
		}
		return fmt.Sprintf("no rollout of double at %v%%: %s", w, body)
	})
}

const rolloutPolicy = `
[[rollout]]
model = "double"
stable = "1"
canary = "2"
steps = [ { set_weight = 10 }, { pause = {} } ]
`

// The members endpoint lists the node's own catalog in the cluster's state names, which is
// what peers route by.
func TestClusterMembersCatalog(t *testing.T) {
	h, _, _ := soloCluster(t, "")
	var m struct {
		Node    string `json:"node"`
		Members []struct {
			Name     string `json:"name"`
			Local    bool   `json:"local"`
			Liveness string `json:"liveness"`
			Routable bool   `json:"routable"`
			Models   []struct {
				Model, Version, State string
			} `json:"models"`
		} `json:"members"`
	}
	// The catalog is published every 250ms.
	testutil.Eventually(t, 10*time.Second, func() string {
		body := get(t, h.url+"/v2/cluster/members")
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		if len(m.Members) == 1 && len(m.Members[0].Models) == 1 {
			return ""
		}
		return "members: " + body
	})
	me := m.Members[0]
	if m.Node != "solo" || me.Name != "solo" || !me.Local || me.Liveness != "alive" || !me.Routable {
		t.Errorf("members: %+v", m)
	}
	if v := me.Models[0]; v.Model != "double" || v.Version != "1" || v.State != "ready" {
		t.Errorf("catalog entry %+v, want double 1 ready", v)
	}
}

// Editing routing.toml alone and reloading applies it; a broken one changes nothing.
func TestReloadRoutingPolicyAlone(t *testing.T) {
	h, reload, policyPath := soloCluster(t, rolloutPolicy)
	ctx := context.Background()
	waitCanaryWeight(t, h.url, 10)

	if err := reload(ctx); err != nil {
		t.Fatal(err)
	}
	if m := get(t, h.url+"/metrics"); !strings.Contains(m, `inferd_config_reloads_total{result="unchanged"} 1`) {
		t.Errorf("a reload with nothing changed:\n%s", grepLines(m, "inferd_config_reloads"))
	}

	if err := os.WriteFile(policyPath, []byte(strings.Replace(rolloutPolicy, "set_weight = 10", "set_weight = 20", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := reload(ctx); err != nil {
		t.Fatal(err)
	}
	// A changed definition restarts the rollout at its first step, now 20%.
	waitCanaryWeight(t, h.url, 20)

	if err := os.WriteFile(policyPath, []byte("[[rollout]]\nmodel = \"double\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "routing.toml") {
		t.Fatalf("reload of a broken routing.toml: %v", err)
	}
	if m := get(t, h.url+"/metrics"); !strings.Contains(m, `inferd_config_reloads_total{result="applied"} 1`) || !strings.Contains(m, `inferd_config_reloads_total{result="failed"} 1`) {
		t.Errorf("reload results:\n%s", grepLines(m, "inferd_config_reloads"))
	}
	waitCanaryWeight(t, h.url, 20)
}
