package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/cluster/deploy"
)

// A deploy is over when it completes or stops; its error names every failed node's reason.
func TestSettled(t *testing.T) {
	node := func(name, state, reason string) deploy.NodeStatus {
		return deploy.NodeStatus{Node: name, State: state, Reason: reason}
	}
	for _, tc := range []struct {
		name    string
		d       deploy.DeploymentView
		done    bool
		errText []string
	}{
		{"fetching", deploy.DeploymentView{Phase: deploy.PhaseActive, Nodes: []deploy.NodeStatus{node("a", "ready", ""), node("b", "fetching", "")}}, false, nil},
		{"complete", deploy.DeploymentView{Phase: deploy.PhaseComplete, Nodes: []deploy.NodeStatus{node("a", "ready", ""), node("b", "ready", "")}}, true, nil},
		{"stopped", deploy.DeploymentView{Model: "m", Version: "2", Phase: deploy.PhaseFailed, Reason: "node a: load failed: bad",
			Nodes: []deploy.NodeStatus{node("a", "failed", "load failed: bad"), node("b", "waiting", "")}}, true, []string{"stopped", "a: load failed: bad"}},
		{"complete with a failure", deploy.DeploymentView{Model: "m", Version: "2", Phase: deploy.PhaseComplete,
			Nodes: []deploy.NodeStatus{node("a", "ready", ""), node("b", "failed", "no space")}}, true, []string{"1 node(s)", "b: no space"}},
	} {
		done, err := settled(tc.d)
		if done != tc.done || (err != nil) != (tc.errText != nil) {
			t.Errorf("%s: settled = %v, %v", tc.name, done, err)
			continue
		}
		for _, want := range tc.errText {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not name %q", tc.name, err, want)
			}
		}
	}
}

func TestWriteDeployments(t *testing.T) {
	var out bytes.Buffer
	writeDeployments(&out, deploy.View{Node: "n1", Deployments: []deploy.DeploymentView{{
		Model: "m", Version: "2", Digest: "5c96b7c34094aaaa", Bytes: 3 << 20, Files: 2, Deployer: "ops@host",
		Time: time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC), Origin: "n1", Waves: [][]string{{"n1"}, {"n2"}}, Released: 2,
		Phase: deploy.PhaseActive, Nodes: []deploy.NodeStatus{{Node: "n1", State: "ready"}, {Node: "n2", State: "fetching", Done: 1 << 20, Total: 3 << 20}},
	}}})
	want := `m version 2: 3.0 MiB, 2 files, digest 5c96b7c34094, by ops@host at 2026-12-04T03:00:00Z from n1
phase active, waves [[n1] [n2]] (2 released)
NODE  STATE
n1    ready
n2    fetching 1.0 MiB / 3.0 MiB
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	writeDeployments(&out, deploy.View{Node: "n1"})
	if !strings.Contains(out.String(), "no deployments known to n1") {
		t.Errorf("empty view: %q", out.String())
	}
}
