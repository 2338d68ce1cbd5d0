//go:build e2e && bench

package e2e

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testutil"
)

// TestClusterBench measures (and reports; it asserts only that no request fails) what the
// cluster costs a request, on two daemons on 127.0.0.2 and 127.0.0.3 with every request of
// model m split to n2:
//
//   - forwarding overhead: one client alternating between a request sent to n2 (served there,
//     the baseline) and one sent to n1 (forwarded to n2), so both see the same machine state;
//   - failover latency: four clients sending to n1 while n2 is frozen (SIGSTOP: tries end by
//     the 300ms per-try timeout) and then killed (SIGKILL: connections refused), against the
//     latency of the same load before.
//
// Run it with `make bench-cluster`.
func TestClusterBench(t *testing.T) {
	policy := writePolicy(t, "[[split]]\nmodel = \"m\"\ntargets = [ { node = \"n2\", weight = 100 } ]\n")
	c := newTestCluster(t, clusterSpec{nodes: 2, repo: clusterRepo(t), policy: policy})
	c.startAll("m/2")
	n1, n2 := c.nodes[0], c.nodes[1]

	const n = 3000
	var local, forwarded []time.Duration
	for i := range 2 * n {
		entry := n2
		if i%2 == 1 {
			entry = n1
		}
		r := inferAt(context.Background(), entry, "m", nil)
		if !r.ok() || r.servedBy != "n2" {
			t.Fatalf("request %d: %s", i, r)
		}
		if i < 200 {
			continue // warm connections and caches
		}
		if entry == n2 {
			local = append(local, r.latency)
		} else {
			forwarded = append(forwarded, r.latency)
		}
	}
	q := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))]
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }
	fmt.Printf("cluster benchmark: forwarding, concurrency 1: p50 local %s, through a peer %s: overhead %s, ratio %.2f (p99 %s vs %s)\n",
		us(q(local, 0.5)), us(q(forwarded, 0.5)), us(q(forwarded, 0.5)-q(local, 0.5)),
		float64(q(forwarded, 0.5))/float64(q(local, 0.5)), us(q(local, 0.99)), us(q(forwarded, 0.99)))

	for _, sig := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGKILL} {
		name := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGSTOP: "SIGSTOP"}[sig]
		m, err := n1.members(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		retries := m.Routing.Retries
		load := startLoad(4, "m", n1)
		load.waitResults(t, 3000, "steady requests", func(r inferResult) bool { return r.servedBy == "n2" })
		at := time.Now()
		n2.d.Signal(t, sig)
		took := testutil.Eventually(t, 30*time.Second, func() string {
			m, err := n1.members(context.Background())
			if err != nil {
				return err.Error()
			}
			if v, _ := m.view("n2"); v.Routable {
				return "n1 still routes to n2"
			}
			return ""
		})
		load.waitResults(t, 1000, "requests after n2 left n1's view", func(r inferResult) bool { return r.start.After(at.Add(took)) })
		rs := load.stopLoad()
		if k, list := failedResults(rs); k > 0 {
			t.Fatalf("%s: %d of %d requests failed:%s", name, k, len(rs), list)
		}
		var before, during []inferResult
		for _, r := range rs {
			switch {
			case r.start.Before(at):
				before = append(before, r)
			case r.start.Before(at.Add(took)):
				during = append(during, r)
			}
		}
		if m, err = n1.members(context.Background()); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("cluster benchmark: failover after %s of the serving peer, 4 clients: before: %s; until n1 dropped it (%s): %s; %d retries, 0 failed\n",
			name, latencySummary(before), took.Round(time.Millisecond), latencySummary(during), m.Routing.Retries-retries)
		if sig == syscall.SIGSTOP {
			if err := syscall.Kill(n2.d.PID(), syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			c.waitConverged(60*time.Second, "m/2")
		}
	}
}
