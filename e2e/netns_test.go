//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/internal/testutil"
)

// The partition suite runs three daemons in network namespaces of their own, each joined by a
// veth pair to a bridge in a fourth ("hub") namespace, on the private network 10.99.0.0/24
// that exists only inside those namespaces. Links are cut and routes blackholed inside them;
// nothing of the host's network changes. The test reaches each daemon from inside that
// daemon's namespace (a socket created there), so its clients are never partitioned.

const netnsPrefix = "inferd-e2e-"

// netnsLab is the namespaces of one test.
type netnsLab struct {
	t     *testing.T
	hub   string
	nodes []string // namespace of node i
}

// ip runs ip with args and fails the test on error.
func (l *netnsLab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetnsLab creates the hub and n node namespaces (node i at 10.99.0.<i+1>), or skips the
// test where that cannot be done. Cleanup deletes them whatever happens.
func newNetnsLab(t *testing.T, n int) *netnsLab {
	if os.Geteuid() != 0 {
		t.Skip("skipped: network namespaces need root (CI runs this suite as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: iproute2's ip is not installed")
	}
	removeStaleNamespaces()
	base := fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())
	l := &netnsLab{t: t, hub: base + "hub"}
	if out, err := exec.Command("ip", "netns", "add", l.hub).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot create a network namespace here (a container without CAP_SYS_ADMIN?): ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { l.deleteAll() })
	l.ip("-n", l.hub, "link", "set", "lo", "up")
	l.ip("-n", l.hub, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.hub, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%sn%d", base, i+1)
		l.ip("netns", "add", ns)
		l.nodes = append(l.nodes, ns)
		l.ip("-n", ns, "link", "set", "lo", "up")
		port := fmt.Sprintf("h%d", i+1)
		l.ip("-n", l.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("-n", l.hub, "link", "set", port, "master", "br0", "up")
		l.ip("-n", ns, "addr", "add", l.addr(i)+"/24", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
	}
	return l
}

// addr is node i's address.
func (l *netnsLab) addr(i int) string { return fmt.Sprintf("10.99.0.%d", i+1) }

// deleteAll removes the namespaces, and with them their links and routes.
func (l *netnsLab) deleteAll() {
	for _, ns := range append(l.nodes, l.hub) {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	}
}

// removeStaleNamespaces deletes namespaces this suite left behind in a run that was killed
// (named after a process that no longer exists).
func removeStaleNamespaces() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// client returns an HTTP client whose connections are made inside namespace ns.
func (l *netnsLab) client(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return inNetns(ns, func() (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		})
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}}
}

// inNetns runs f on an OS thread switched into namespace ns; a socket f creates stays in ns.
// The net package creates a socket on the calling goroutine's thread, and a locked goroutine
// keeps its thread.
func inNetns(ns string, f func() (net.Conn, error)) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", ns, err)
	}
	conn, ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in ns: leave it locked, so that it exits with this goroutine.
		return conn, ferr
	}
	runtime.UnlockOSThread()
	return conn, ferr
}

// viewOf reports how node n sees every other node: liveness and whether it routes to it.
func viewOf(n *clusterNode) string {
	m, err := n.members(context.Background())
	if err != nil {
		return n.name + ": " + err.Error()
	}
	var parts []string
	for _, x := range m.Members {
		if x.Name != n.name {
			parts = append(parts, fmt.Sprintf("%s %s routable=%v", x.Name, x.Liveness, x.Routable))
		}
	}
	return n.name + " sees " + strings.Join(parts, ", ")
}

// TestNetnsPartition cuts node n3's link, then blackholes its route to n1 (one way: n1's
// packets still reach n3, nothing of n3's reaches n1), under load sent to n1 and n2 with a
// split that forwards a third of it to n3. The majority side serves every request
// throughout; after each heal the three nodes see each other alive and serving again within
// 30s.
func TestNetnsPartition(t *testing.T) {
	lab := newNetnsLab(t, 3)
	c := newTestCluster(t, clusterSpec{
		nodes: 3, repo: clusterRepo(t), policy: writePolicy(t, nodeSplit("m")),
		hosts:    []string{lab.addr(0), lab.addr(1), lab.addr(2)},
		httpPort: 8080, gossipPort: 7946,
		wrap:   func(i int) []string { return []string{"ip", "netns", "exec", lab.nodes[i]} },
		client: func(i int) *http.Client { return lab.client(lab.nodes[i]) },
	})
	c.startAll("m/2")
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	load := startLoad(4, "m", n1, n2)
	defer load.stopLoad()
	load.waitResults(t, 300, "requests served by n3", func(r inferResult) bool { return r.servedBy == "n3" })

	// A cut link: both directions of n3's only link go dark.
	cut := time.Now()
	lab.ip("-n", lab.hub, "link", "set", "h3", "down")
	gone := testutil.Eventually(t, 30*time.Second, func() string {
		for _, pair := range [][2]*clusterNode{{n1, n3}, {n2, n3}, {n3, n1}, {n3, n2}} {
			m, err := pair[0].members(context.Background())
			if err != nil {
				return err.Error()
			}
			if v, _ := m.view(pair[1].name); v.Liveness != "dead" {
				return viewOf(pair[0])
			}
		}
		return ""
	})
	t.Logf("cut: n1 and n2 declared n3 dead, and n3 both of them, %s after the cut", gone.Round(time.Millisecond))
	// memberlist goes on gossiping to a dead node for PushPullInterval (30s), which heals a
	// short partition by itself. Hold this one longer, so that only inferd's re-join loop
	// can merge the halves: the case the 30s bound is about.
	<-time.After(31 * time.Second) // the partition's length, not a wait for a condition
	held := time.Since(cut)
	if k, list := failedResults(load.snapshot()); k > 0 {
		t.Fatalf("%d requests to the majority side failed during the partition:%s", k, list)
	}
	lab.ip("-n", lab.hub, "link", "set", "h3", "up")
	merged := c.waitConverged(30*time.Second, "m/2")
	t.Logf("cut healed after %s: all three see each other alive and serving %s later (limit 30s)", held.Round(time.Second), merged.Round(time.Millisecond))
	load.waitResults(t, 200, "requests served by n3 after the heal", func(r inferResult) bool {
		return r.servedBy == "n3" && r.start.After(cut.Add(gone+merged))
	})

	// One way: n3 cannot send to n1, n1 still reaches n3 (its connects and pings arrive, the
	// answers do not). memberlist keeps n3 alive through indirect probes via n2, so only n1's
	// own round trips tell it that n3 is unreachable from here; n2 keeps routing to n3.
	hole := time.Now()
	lab.ip("-n", lab.nodes[2], "route", "add", "blackhole", lab.addr(0)+"/32")
	suspect := testutil.Eventually(t, 30*time.Second, func() string {
		m, err := n1.members(context.Background())
		if err != nil {
			return err.Error()
		}
		if v, _ := m.view("n3"); v.Routable {
			return viewOf(n1)
		}
		return ""
	})
	t.Logf("blackhole n3→n1: n1 stopped routing to n3 %s after the route went in (%s; %s)", suspect.Round(time.Millisecond), viewOf(n1), viewOf(n2))
	load.waitResults(t, 200, "requests n2 forwarded to n3 during the blackhole", func(r inferResult) bool {
		return r.servedBy == "n3" && r.entry == "n2" && r.start.After(hole.Add(suspect))
	})
	if m, err := n2.members(context.Background()); err != nil {
		t.Fatal(err)
	} else if v, _ := m.view("n3"); !v.Routable {
		t.Errorf("n2, which reaches n3 both ways, does not route to it: %s", viewOf(n2))
	}
	lab.ip("-n", lab.nodes[2], "route", "del", "blackhole", lab.addr(0)+"/32")
	merged = c.waitConverged(30*time.Second, "m/2")
	t.Logf("blackhole removed: all three see each other alive and serving %s later (limit 30s)", merged.Round(time.Millisecond))

	rs := load.stopLoad()
	if k, list := failedResults(rs); k > 0 {
		t.Fatalf("%d of %d requests to the majority side failed:%s", k, len(rs), list)
	}
	var m membersInfo
	for _, n := range []*clusterNode{n1, n2} {
		var err error
		if m, err = n.members(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d retries in all", n.name, m.Routing.Retries)
	}
	t.Logf("partitions: %d requests to the majority side, 0 failed (%s)", len(rs), latencySummary(rs))
}
