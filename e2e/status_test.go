//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/status"
)

// statusOf runs `inferd status --cluster --json` against node n and returns the cluster view
// and the command's exit status.
func statusOf(t *testing.T, bin string, n *clusterNode) (status.Cluster, int, time.Duration) {
	t.Helper()
	cmd := exec.Command(bin, "status", "--cluster", "--json", "--server", n.url())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var cl status.Cluster
	if err := json.Unmarshal(stdout.Bytes(), &cl); err != nil {
		t.Fatalf("inferd status exit %d: %v\n%s%s", code, err, stdout.String(), stderr.String())
	}
	return cl, code, took
}

// TestStatusClusterSIGSTOP: three real daemons under load; `inferd status --cluster` sees
// every one ready with its rate, then, with one frozen (SIGSTOP: the kernel still accepts its
// connections, nothing answers), shows it unreachable within the member timeout and exits 3.
func TestStatusClusterSIGSTOP(t *testing.T) {
	c := newTestCluster(t, clusterSpec{nodes: 3, repo: clusterRepo(t)})
	c.startAll("m/1", "m/2")
	n1, victim := c.nodes[0], c.nodes[2]
	load := startLoad(4, "m", c.nodes...)
	defer load.stopLoad()

	testutil.Eventually(t, 30*time.Second, func() string {
		cl, code, _ := statusOf(t, c.bin, n1)
		if code != 0 || len(cl.Nodes) != 3 {
			return "not every node ready: " + summary(cl)
		}
		for _, m := range cl.Nodes {
			served := false
			for _, r := range m.Status.Models {
				if r.Model == "m" && r.RequestsPerSecond > 0 && r.P99Ms != nil {
					served = true
				}
			}
			if !served {
				return m.Name + " shows no rate for m yet: " + summary(cl)
			}
		}
		return ""
	})

	load.remove(t, victim.name)
	if err := syscall.Kill(victim.d.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(victim.d.PID(), syscall.SIGCONT) }()
	cl, code, took := statusOf(t, c.bin, n1)
	t.Logf("inferd status --cluster with %s frozen: exit %d in %s", victim.name, code, took.Round(time.Millisecond))
	if code != 3 {
		t.Errorf("exit %d with a frozen member, want 3: %s", code, summary(cl))
	}
	for _, m := range cl.Nodes {
		frozen := m.Name == victim.name
		if m.Reachable == frozen || (frozen && m.Error == "") {
			t.Errorf("member %s: reachable %v (%s)", m.Name, m.Reachable, m.Error)
		}
	}
	// The member timeout (2s) bounds the command, whatever gossip thinks of the member yet.
	if took > status.DefaultMemberTimeout+3*time.Second {
		t.Errorf("status took %s with a frozen member", took)
	}
	out, err := exec.Command(c.bin, "status", "--cluster", "--server", n1.url()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), victim.name) || !strings.Contains(string(out), "unreachable") {
		t.Errorf("table with a frozen member: %v\n%s", err, out)
	}
}

func summary(cl status.Cluster) string {
	var parts []string
	for _, m := range cl.Nodes {
		s := m.Name + ":"
		switch {
		case m.Status != nil:
			s += m.Status.Node.State
		default:
			s += "unreachable(" + m.Error + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}
