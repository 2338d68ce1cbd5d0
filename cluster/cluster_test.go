package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/inferd/inferd/internal/testutil"
)

// These tests run real nodes on 127.0.0.1 with kernel-chosen ports and fast timing. They
// wait by polling state with a deadline, never by sleeping for a fixed time. Partitions are
// made by faultTransport, which drops a node's outbound packets and refuses its outbound
// streams to chosen addresses; blocking both directions cuts a link, one direction makes a
// one-way blackhole.

// fastOptions: probes every 200ms, dead within ~1s of silence, re-join every 200ms.
// Push-pull is off (an hour) unless a test turns it on, so propagation tests exercise
// broadcasts and fetches rather than anti-entropy.
func fastOptions(t *testing.T, name string) Options {
	return Options{
		Name:              name,
		Bind:              "127.0.0.1:0",
		HTTPAddr:          "127.0.0.1:18080",
		Class:             "cpu",
		ProbeInterval:     200 * time.Millisecond,
		ProbeTimeout:      100 * time.Millisecond,
		SuspicionMult:     3,
		GossipInterval:    20 * time.Millisecond,
		PushPullInterval:  time.Hour,
		StreamTimeout:     time.Second,
		SuspectAfter:      700 * time.Millisecond,
		RejoinInterval:    200 * time.Millisecond,
		RejoinMaxInterval: time.Second,
		Logger:            testLogger(t, name),
	}
}

type testNode struct {
	*Node
	fault *faultTransport
}

func startNode(t *testing.T, o Options) testNode {
	t.Helper()
	ft := &faultTransport{}
	o.wrapTransport = func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		ft.NodeAwareTransport = inner
		return ft
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start %s: %v", o.Name, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	return testNode{n, ft}
}

// startCluster starts k nodes (node-0 …), each joining node-0, and waits until every node
// sees every node alive.
func startCluster(t *testing.T, k int, mutate func(o *Options)) []testNode {
	t.Helper()
	var nodes []testNode
	for i := range k {
		o := fastOptions(t, fmt.Sprintf("node-%d", i))
		o.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", 18080+i)
		if i > 0 {
			o.Join = []string{nodes[0].GossipAddr()}
		}
		if mutate != nil {
			mutate(&o)
		}
		nodes = append(nodes, startNode(t, o))
	}
	testutil.WaitFor(t, 10*time.Second, "all nodes alive everywhere", func() bool { return allAlive(nodes, k) })
	return nodes
}

func allAlive(nodes []testNode, k int) bool {
	for _, n := range nodes {
		ms := n.Members()
		if len(ms) != k {
			return false
		}
		for _, m := range ms {
			if m.Liveness != LivenessAlive {
				return false
			}
		}
	}
	return true
}

func member(n testNode, name string) (Member, bool) {
	for _, m := range n.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func livenessOf(n testNode, name string) Liveness {
	m, _ := member(n, name)
	return m.Liveness
}

func TestJoinCatalogAndServing(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]

	ms := a.Members()
	for i, m := range ms {
		if m.Name != fmt.Sprintf("node-%d", i) || m.Local != (i == 0) || m.HTTPAddr != fmt.Sprintf("127.0.0.1:%d", 18080+i) ||
			m.Class != "cpu" || m.Serving != ServingReady || !m.Routable() || m.GossipAddr != nodes[i].GossipAddr() {
			t.Errorf("member %d as node-0 sees it: %+v", i, m)
		}
	}

	catalogIs := func(n testNode, owner string, want []CatalogVersion) func() bool {
		return func() bool {
			m, _ := member(n, owner)
			return m.Catalog.Generation == m.MetaGeneration && fmt.Sprint(m.Catalog.Models) == fmt.Sprint(want)
		}
	}
	v1 := []CatalogVersion{{Model: "mlp", Version: "1", State: "ready", Provider: "cpu"}}
	if err := a.SetCatalog(Catalog{Models: v1}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-0's catalog on node-1 and node-2", func() bool {
		return catalogIs(b, "node-0", v1)() && catalogIs(c, "node-0", v1)()
	})
	gen1, _ := member(b, "node-0")

	v2 := append(v1, CatalogVersion{Model: "mlp", Version: "2", State: "ready", Provider: "cpu"})
	if err := a.SetCatalog(Catalog{Models: v2}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-0's updated catalog everywhere", func() bool {
		return catalogIs(b, "node-0", v2)() && catalogIs(c, "node-0", v2)()
	})
	if gen2, _ := member(c, "node-0"); gen2.Catalog.Generation <= gen1.Catalog.Generation {
		t.Errorf("catalog generation did not rise: %d then %d", gen1.Catalog.Generation, gen2.Catalog.Generation)
	}
	if m, _ := member(b, "node-0"); !m.Catalog.Ready("mlp", "2") {
		t.Errorf("node-1 does not see mlp/2 ready on node-0: %+v", m.Catalog)
	}

	changes := a.Changes()
	if err := b.SetServing(ServingDraining); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification on node-0 after node-1 started draining")
	}
	testutil.WaitFor(t, 5*time.Second, "node-1 draining as seen by node-0 and node-2", func() bool {
		ma, _ := member(a, "node-1")
		mc, _ := member(c, "node-1")
		return ma.Serving == ServingDraining && !ma.Routable() && mc.Serving == ServingDraining
	})
	if err := b.SetServing("sleeping"); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetServing(unknown) = %v, want ErrInvalid", err)
	}
}

func TestLargeCatalogIsFetched(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	var big []CatalogVersion
	for i := range 200 {
		big = append(big, CatalogVersion{Model: fmt.Sprintf("model-%03d", i), Version: "1", State: "ready", Provider: "cuda:0"})
	}
	if n := len(encodeMessage(&message{Type: msgCatalog, Owner: "node-2", Catalog: Catalog{Models: big}})); n <= nodes[2].maxMsg {
		t.Fatalf("test catalog of %d bytes fits a packet (%d); make it larger", n, nodes[2].maxMsg)
	}
	if err := nodes[2].SetCatalog(Catalog{Models: big}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the 200-version catalog on node-0 and node-1", func() bool {
		for _, n := range nodes[:2] {
			if m, _ := member(n, "node-2"); len(m.Catalog.Models) != 200 || m.Catalog.Generation != m.MetaGeneration {
				return false
			}
		}
		return true
	})
	if nodes[0].Stats().Fetches == 0 && nodes[1].Stats().Fetches == 0 {
		t.Error("a catalog larger than a packet arrived without a fetch")
	}
}

func TestRecordsConverge(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	converged := func(key string, want Record) func() bool {
		return func() bool {
			for _, n := range nodes {
				var got *Record
				for _, r := range n.Records("rollout") {
					if r.Key == key {
						got = &r
					}
				}
				if got == nil || compareRecords(*got, want) != 0 {
					return false
				}
			}
			return true
		}
	}
	rec := func(key string, gen uint64, prio uint8, data string) Record {
		return Record{Kind: "rollout", Key: key, Generation: gen, Priority: prio, Data: []byte(data)}
	}

	// Two nodes write the same generation at once: the abort (higher priority) wins everywhere.
	promote, abort := rec("mlp", 5, 0, "promote"), rec("mlp", 5, 1, "abort")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); nodes[0].PutRecord(promote) }()
	go func() { defer wg.Done(); nodes[2].PutRecord(abort) }()
	wg.Wait()
	testutil.WaitFor(t, 5*time.Second, "abort wins the tie on every node", converged("mlp", abort))

	// A newer generation beats the abort.
	next := rec("mlp", 6, 0, "resume")
	nodes[1].PutRecord(next)
	testutil.WaitFor(t, 5*time.Second, "generation 6 everywhere", converged("mlp", next))
	nodes[0].PutRecord(rec("mlp", 5, 9, "late")) // loses: older generation
	if got := nodes[0].Records("rollout"); len(got) != 1 || got[0].Generation != 6 {
		t.Fatalf("an older record replaced a newer one: %+v", got)
	}

	// A full tie (generation and priority) is broken by the data, the same way everywhere.
	x, y := rec("ocr", 1, 0, "x"), rec("ocr", 1, 0, "y")
	wg.Add(2)
	go func() { defer wg.Done(); nodes[0].PutRecord(y) }()
	go func() { defer wg.Done(); nodes[1].PutRecord(x) }()
	wg.Wait()
	testutil.WaitFor(t, 5*time.Second, "the data tie-break everywhere", converged("ocr", y))

	// A record too large for a packet travels as a notice plus a fetch.
	large := rec("big", 1, 0, strings.Repeat("d", 8<<10))
	nodes[2].PutRecord(large)
	testutil.WaitFor(t, 5*time.Second, "the 8 KiB record everywhere", converged("big", large))
}

func TestPushPullCarriesState(t *testing.T) {
	a := startNode(t, fastOptions(t, "node-a"))
	if err := a.SetCatalog(Catalog{Models: []CatalogVersion{{Model: "m", Version: "1", State: "ready"}}}); err != nil {
		t.Fatal(err)
	}
	a.PutRecord(Record{Kind: "rollout", Key: "m", Generation: 3, Data: []byte("state")})
	a.queue.Reset() // drop the queued broadcasts: only the join's push-pull can bring the record
	o := fastOptions(t, "node-b")
	o.Join = []string{a.GossipAddr()}
	b := startNode(t, o)
	testutil.WaitFor(t, 5*time.Second, "node-a's record and catalog on node-b", func() bool {
		m, _ := member(b, "node-a")
		recs := b.Records("rollout")
		return len(recs) == 1 && string(recs[0].Data) == "state" && m.Catalog.Ready("m", "1")
	})
}

func TestLeaveIsLeftShutdownIsDead(t *testing.T) {
	nodes := startCluster(t, 4, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[3].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if self := nodes[3].Members()[3]; !self.Local || self.Liveness != LivenessLeft {
		t.Errorf("after Leave the node sees itself as %+v", self)
	}
	testutil.WaitFor(t, 5*time.Second, "node-3 left, as seen by the others", func() bool {
		for _, n := range nodes[:3] {
			if m, _ := member(n, "node-3"); m.Liveness != LivenessLeft || m.Routable() {
				return false
			}
		}
		return true
	})
	if err := nodes[3].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[3].Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := nodes[3].Leave(ctx); err != nil {
		t.Fatalf("Leave after Shutdown: %v", err)
	}
	if err := nodes[3].SetServing(ServingReady); !errors.Is(err, ErrClosed) {
		t.Errorf("SetServing after Shutdown = %v, want ErrClosed", err)
	}

	before, _ := member(nodes[0], "node-2")
	if err := nodes[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "node-2 dead, as seen by node-0 and node-1", func() bool {
		return livenessOf(nodes[0], "node-2") == LivenessDead && livenessOf(nodes[1], "node-2") == LivenessDead
	})
	if after, _ := member(nodes[0], "node-2"); !after.Since.After(before.Since) {
		t.Errorf("Since did not move: %v then %v", before.Since, after.Since)
	}
	if livenessOf(nodes[0], "node-3") != LivenessLeft {
		t.Errorf("node-3 no longer reads as left after node-2 died")
	}
}

// TestOneWayBlackholeIsSuspect: node-0 cannot send to node-1 but receives from it. memberlist
// keeps both alive (indirect probes through node-2 succeed), while this package's round-trip
// pings make each of the two suspect the other; node-2 sees both alive. Lifting the block
// makes them alive again.
func TestOneWayBlackholeIsSuspect(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	nodes[0].fault.block(nodes[1].GossipAddr())
	testutil.WaitFor(t, 5*time.Second, "node-0 and node-1 suspect each other", func() bool {
		return livenessOf(nodes[0], "node-1") == LivenessSuspect && livenessOf(nodes[1], "node-0") == LivenessSuspect
	})
	for _, name := range []string{"node-0", "node-1"} {
		if l := livenessOf(nodes[2], name); l != LivenessAlive {
			t.Errorf("node-2, which reaches both, sees %s as %s", name, l)
		}
	}
	nodes[0].fault.unblock(nodes[1].GossipAddr())
	testutil.WaitFor(t, 5*time.Second, "alive again after the blackhole lifts", func() bool { return allAlive(nodes, 3) })
}

// TestRejoinAfterPartition cuts node-2 off both ways until each side declares the other
// dead, heals the link, and waits for the re-join loop to merge the cluster again.
func TestRejoinAfterPartition(t *testing.T) {
	nodes := startCluster(t, 3, func(o *Options) {
		// memberlist gossips to the dead for PushPullInterval (GossipToTheDeadTime); keep it
		// short so the heal is the re-join loop's doing.
		o.PushPullInterval = 300 * time.Millisecond
	})
	cut := func(on bool) {
		for _, x := range nodes[:2] {
			set := x.fault.block
			set2 := nodes[2].fault.block
			if !on {
				set, set2 = x.fault.unblock, nodes[2].fault.unblock
			}
			set(nodes[2].GossipAddr())
			set2(x.GossipAddr())
		}
	}
	cut(true)
	testutil.WaitFor(t, 10*time.Second, "both sides declare the other dead", func() bool {
		return livenessOf(nodes[0], "node-2") == LivenessDead && livenessOf(nodes[1], "node-2") == LivenessDead &&
			livenessOf(nodes[2], "node-0") == LivenessDead && livenessOf(nodes[2], "node-1") == LivenessDead
	})
	if l := livenessOf(nodes[0], "node-1"); l != LivenessAlive {
		t.Errorf("the majority side lost its own member: node-1 is %s", l)
	}
	before := nodes[0].Stats().Rejoins + nodes[1].Stats().Rejoins + nodes[2].Stats().Rejoins
	cut(false)
	testutil.WaitFor(t, 10*time.Second, "the cluster re-merged", func() bool { return allAlive(nodes, 3) })
	if after := nodes[0].Stats().Rejoins + nodes[1].Stats().Rejoins + nodes[2].Stats().Rejoins; after == before {
		t.Error("re-merged without the re-join loop")
	}
}

func TestGossipKeyAndLabel(t *testing.T) {
	key1 := bytes.Repeat([]byte{1}, 32)
	key2 := bytes.Repeat([]byte{2}, 32)
	o := fastOptions(t, "keyed")
	o.SecretKey, o.Label = key1, "prod"
	seed := startNode(t, o)

	cases := []struct {
		name  string
		key   []byte
		label string
		ok    bool
	}{
		{"same key and label", key1, "prod", true},
		{"another key", key2, "prod", false},
		{"no key", nil, "prod", false},
		{"another label", key1, "staging", false},
		{"no label", key1, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := fastOptions(t, "joiner-"+strings.ReplaceAll(c.name, " ", "-"))
			o.SecretKey, o.Label = c.key, c.label
			n := startNode(t, o) // without seeds, so the join's error is observable
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			k, err := n.Join(ctx, seed.GossipAddr())
			if c.ok {
				if err != nil || k != 1 {
					t.Fatalf("Join = %d, %v", k, err)
				}
				testutil.WaitFor(t, 5*time.Second, "the seed sees the joiner", func() bool { return livenessOf(seed, o.Name) == LivenessAlive })
				return
			}
			if !errors.Is(err, ErrJoin) {
				t.Fatalf("Join = %d, %v; want ErrJoin", k, err)
			}
			if _, ok := member(seed, o.Name); ok {
				t.Errorf("the seed knows the node that failed to join")
			}
			if ms := n.Members(); len(ms) != 1 {
				t.Errorf("the refused node sees %d members", len(ms))
			}
		})
	}
}

// TestAllowedCIDRs puts the seed on 127.0.0.2 (Linux routes 127/8 to lo) so that a joiner on
// 127.0.0.1 can be told apart by address.
func TestAllowedCIDRs(t *testing.T) {
	for _, c := range []struct {
		allowed string
		ok      bool
	}{{"127.0.0.2/32", false}, {"127.0.0.0/8", true}} {
		t.Run(c.allowed, func(t *testing.T) {
			o := fastOptions(t, "guarded")
			o.Bind = "127.0.0.2:0"
			o.AllowedCIDRs = []string{c.allowed}
			seed := startNode(t, o)
			n := startNode(t, fastOptions(t, "joiner"))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := n.Join(ctx, seed.GossipAddr())
			if c.ok != (err == nil) {
				t.Fatalf("join from 127.0.0.1 with allowed %s: %v", c.allowed, err)
			}
			if !c.ok && !errors.Is(err, ErrJoin) {
				t.Fatalf("join error %v does not wrap ErrJoin", err)
			}
		})
	}
	o := fastOptions(t, "outside")
	o.AllowedCIDRs = []string{"10.0.0.0/8"}
	if _, err := Start(context.Background(), o); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Start advertising outside the allowed networks = %v, want ErrInvalid", err)
	}
}

func TestStartValidates(t *testing.T) {
	ctx := context.Background()
	o := fastOptions(t, "long")
	o.HTTPAddr = strings.Repeat("h", 600) + ":8080"
	if _, err := Start(ctx, o); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("Start with a 600-byte HTTP address = %v, want ErrMetaTooLarge", err)
	}
	o = fastOptions(t, strings.Repeat("n", 200))
	if _, err := Start(ctx, o); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Start with a 200-byte name = %v, want ErrInvalid", err)
	}

	// The longest metadata validation admits travels intact.
	long := fastOptions(t, strings.Repeat("n", maxNameLen))
	long.HTTPAddr = strings.Repeat("h", 470) + ":8080"
	a := startNode(t, long)
	o = fastOptions(t, "peer")
	o.Join = []string{a.GossipAddr()}
	b := startNode(t, o)
	testutil.WaitFor(t, 5*time.Second, "the long-named peer's metadata", func() bool {
		m, _ := member(b, long.Name)
		return m.Liveness == LivenessAlive && m.HTTPAddr == long.HTTPAddr
	})
}

// TestRestartedNodeComesBack: a node killed and restarted under the same name on another
// port is taken back, and its new catalog replaces the one peers held from before.
func TestRestartedNodeComesBack(t *testing.T) {
	o := fastOptions(t, "node-a")
	o.PushPullInterval = 300 * time.Millisecond // also DeadNodeReclaimTime: the new address may take the name
	a := startNode(t, o)
	ob := fastOptions(t, "node-b")
	ob.PushPullInterval = o.PushPullInterval
	ob.Join = []string{a.GossipAddr()}
	b := startNode(t, ob)
	if err := b.SetCatalog(Catalog{Models: []CatalogVersion{{Model: "m", Version: "1", State: "ready"}}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-b's first catalog on node-a", func() bool {
		m, _ := member(a, "node-b")
		return m.Catalog.Ready("m", "1")
	})
	_ = b.Shutdown()
	testutil.WaitFor(t, 10*time.Second, "node-b dead", func() bool { return livenessOf(a, "node-b") == LivenessDead })

	b2 := startNode(t, ob)
	if err := b2.SetCatalog(Catalog{Models: []CatalogVersion{{Model: "m", Version: "2", State: "ready"}}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the restarted node-b alive with its new catalog", func() bool {
		m, _ := member(a, "node-b")
		return m.Liveness == LivenessAlive && m.GossipAddr == b2.GossipAddr() && m.Catalog.Ready("m", "2") && !m.Catalog.Ready("m", "1")
	})
}

// TestShutdownStopsGoroutines checks that no goroutine of this package outlives Shutdown.
func TestShutdownStopsGoroutines(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	nodes[0].PutRecord(Record{Kind: "k", Key: "k", Data: make([]byte, 4<<10)}) // a fetch in flight
	for _, n := range nodes {
		if err := n.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "no cluster goroutines left", func() bool {
		return !strings.Contains(goroutines(), "inferd/cluster.(*Node)")
	})
}

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// faultTransport wraps a memberlist transport and drops this node's outbound traffic to
// blocked addresses: packets vanish, stream dials fail.
type faultTransport struct {
	memberlist.NodeAwareTransport
	mu      sync.Mutex
	blocked map[string]bool
}

func (f *faultTransport) block(addr string)   { f.set(addr, true) }
func (f *faultTransport) unblock(addr string) { f.set(addr, false) }

func (f *faultTransport) set(addr string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blocked == nil {
		f.blocked = map[string]bool{}
	}
	f.blocked[addr] = on
}

func (f *faultTransport) isBlocked(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blocked[addr]
}

var errBlocked = errors.New("blocked by the test")

func (f *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if f.isBlocked(addr) {
		return time.Now(), nil
	}
	return f.NodeAwareTransport.WriteTo(b, addr)
}

func (f *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if f.isBlocked(a.Addr) {
		return time.Now(), nil
	}
	return f.NodeAwareTransport.WriteToAddress(b, a)
}

func (f *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if f.isBlocked(addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errBlocked}
	}
	return f.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (f *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if f.isBlocked(a.Addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errBlocked}
	}
	return f.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// testLogger keeps a node's logs (memberlist's included, at debug) and prints the tail
// through t.Log only if the test fails.
func testLogger(t *testing.T, name string) *slog.Logger {
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(buf.String(), "\n")
			if len(lines) > 150 {
				lines = lines[len(lines)-150:]
			}
			t.Logf("last log lines of %.40s:\n%s", name, strings.Join(lines, "\n"))
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 4<<20 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
