//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// TestDashboard loads the built-in dashboard in headless Chromium from a node of a real
// two-node cluster under load: the throughput figure changes between two reads, every model
// version of every node and every node is in the DOM, the page made no request to any host
// but the daemon's, and a screenshot is kept in build/e2e-artifacts/dashboard.png.
func TestDashboard(t *testing.T) {
	b := startChromium(t)
	c := newTestCluster(t, clusterSpec{nodes: 2, repo: clusterRepo(t), policy: writePolicy(t, `
[[rollout]]
model = "m"
stable = "1"
canary = "2"
steps = [ { set_weight = 10 }, { pause = {} } ]
`)})
	c.startAll("m/1", "m/2")
	n1 := c.nodes[0]
	load := startLoad(4, "m", c.nodes...)
	defer load.stopLoad()

	page := b.page(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, m := range []string{"Network.enable", "Page.enable", "Runtime.enable"} {
		if err := page.call(ctx, m, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := page.call(ctx, "Emulation.setDeviceMetricsOverride", map[string]any{"width": 1400, "height": 1100, "deviceScaleFactor": 1, "mobile": false}, nil); err != nil {
		t.Fatal(err)
	}
	if err := page.call(ctx, "Page.navigate", map[string]any{"url": n1.url() + "/"}, nil); err != nil {
		t.Fatal(err)
	}

	// The figure is a rate over the last minute, redrawn every second: under load it moves.
	var first string
	testutil.Eventually(t, 60*time.Second, func() string {
		var v string
		if err := page.eval(ctx, `document.querySelector('#throughput').textContent`, &v); err != nil {
			return err.Error()
		}
		switch {
		case v == "" || v == "–" || v == "0.0":
			return "no throughput shown yet: " + v
		case first == "":
			first = v
			return "one reading: " + v
		case v == first:
			return "throughput still " + v
		}
		t.Logf("throughput figure went from %s to %s req/s", first, v)
		return ""
	})

	var rows [][3]string
	var nodes []string
	testutil.Eventually(t, 30*time.Second, func() string {
		if err := page.eval(ctx, `[...document.querySelectorAll('#models tbody tr')].map(r => [r.dataset.model, r.dataset.version, r.dataset.node])`, &rows); err != nil {
			return err.Error()
		}
		if err := page.eval(ctx, `[...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node)`, &nodes); err != nil {
			return err.Error()
		}
		var missing []string
		for _, n := range c.nodes {
			if !slices.Contains(nodes, n.name) {
				missing = append(missing, "node "+n.name)
			}
			for _, mv := range [][2]string{{"m", "1"}, {"m", "2"}, {"c", "1"}, {"c", "2"}} {
				if !slices.Contains(rows, [3]string{mv[0], mv[1], n.name}) {
					missing = append(missing, fmt.Sprintf("%s/%s on %s", mv[0], mv[1], n.name))
				}
			}
		}
		return strings.Join(missing, ", ")
	})
	// The rollout shows with its weight, and so do the versions' shares.
	testutil.Eventually(t, 30*time.Second, func() string {
		var r []string
		if err := page.eval(ctx, `[...document.querySelectorAll('#rollouts tbody tr[data-rollout="m"] td')].map(td => td.textContent)`, &r); err != nil {
			return err.Error()
		}
		var w []string
		if err := page.eval(ctx, `[...document.querySelectorAll('#models tbody tr[data-model="m"] td:nth-child(5)')].map(td => td.textContent)`, &w); err != nil {
			return err.Error()
		}
		if len(r) < 5 || r[1] != "paused" || !strings.Contains(r[4], "10%") || slices.Index(w, "90%") < 0 || slices.Index(w, "10%") < 0 {
			return fmt.Sprintf("rollout row %q, weights %q", r, w)
		}
		return ""
	})
	// The charts drew: throughput, latency and queue of model m (the one under load).
	testutil.Eventually(t, 30*time.Second, func() string {
		var ids []string
		if err := page.eval(ctx, `[...document.querySelectorAll('#charts .chart')].map(c => c.id)`, &ids); err != nil {
			return err.Error()
		}
		for _, id := range []string{"chart-rps-m", "chart-latency-m", "chart-queue-m"} {
			if !slices.Contains(ids, id) {
				return fmt.Sprintf("no %s among %v", id, ids)
			}
		}
		return ""
	})

	var shot struct {
		Data string `json:"data"`
	}
	if err := page.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil || len(png) < 1000 {
		t.Fatalf("screenshot: %v, %d bytes", err, len(png))
	}
	dir := filepath.Join(testutil.ModuleRoot(t), "build", "e2e-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shotPath := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(shotPath, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shotPath, len(png))

	want, _ := url.Parse(n1.url())
	reqs := page.requested()
	if len(reqs) < 3 {
		t.Errorf("the page made %d requests: %v", len(reqs), reqs)
	}
	for _, r := range reqs {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "data" && u.Host != want.Host) {
			t.Errorf("the page asked %s, not the daemon at %s", r, want.Host)
		}
	}
	if errs := page.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors: %v", errs)
	}

	// A frozen member (SIGSTOP: its port accepts, nothing answers) shows as unreachable, and
	// the page keeps updating.
	victim := c.nodes[1]
	load.remove(t, victim.name)
	if err := syscall.Kill(victim.d.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(victim.d.PID(), syscall.SIGCONT) }()
	var before string
	if err := page.eval(ctx, `document.querySelector('#updated').textContent`, &before); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() string {
		var row, updated string
		if err := page.eval(ctx, `document.querySelector('#nodes tbody tr[data-node="`+victim.name+`"]').textContent`, &row); err != nil {
			return err.Error()
		}
		if err := page.eval(ctx, `document.querySelector('#updated').textContent`, &updated); err != nil {
			return err.Error()
		}
		if !strings.Contains(row, "unreachable") || updated == before {
			return fmt.Sprintf("%s's row %q, %s", victim.name, row, updated)
		}
		return ""
	})
}

// TestDashboardToken: with tokens on, the page asks for one, keeps it for the session only
// (sessionStorage, not localStorage) and shows the node once given a valid infer token.
func TestDashboardToken(t *testing.T) {
	b := startChromium(t)
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	writeModel(t, repo, "m", 1, testmodels.AddConst(1))
	const token = "dashboard-token-0123456789"
	if err := os.WriteFile(filepath.Join(root, "tokens"), []byte("infer "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, root, "inferd.toml", []byte(fmt.Sprintf("[models]\nrepository = %q\ncontrol = \"none\"\n[auth]\ntokens_file = %q\n",
		repo, filepath.Join(root, "tokens"))))
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), filepath.Join(root, "inferd.toml"))
	d.WaitReady(t)

	page := b.page(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := page.call(ctx, "Page.navigate", map[string]any{"url": d.URL + "/"}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() string {
		var msg string
		if err := page.eval(ctx, `document.querySelector('#auth').hidden ? '' : document.querySelector('#auth-message').textContent`, &msg); err != nil {
			return err.Error()
		}
		if !strings.Contains(msg, "401") {
			return "no token box yet: " + msg
		}
		return ""
	})
	var ok bool
	if err := page.eval(ctx, `(() => { document.querySelector('#token').value = '`+token+`'; document.querySelector('#token-form').requestSubmit(); return true })()`, &ok); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() string {
		var rows int
		if err := page.eval(ctx, `document.querySelector('#auth').hidden ? document.querySelectorAll('#models tbody tr[data-model="m"]').length : -1`, &rows); err != nil {
			return err.Error()
		}
		if rows != 1 {
			return fmt.Sprintf("model rows %d after the token", rows)
		}
		return ""
	})
	var stored []string
	if err := page.eval(ctx, `[sessionStorage.getItem('inferd-token'), String(localStorage.length)]`, &stored); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 || stored[0] != token || stored[1] != "0" {
		t.Errorf("token kept as %q", stored)
	}
}
