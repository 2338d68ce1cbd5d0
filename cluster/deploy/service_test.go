package deploy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/inferd/inferd/cluster"
)

func newTestService(t *testing.T, n *fakeNode) *Service {
	t.Helper()
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Node: n, Store: s, Loader: fakeLoader{}, MaxBytes: 1 << 30, Repository: func() string { return t.TempDir() }})
}

// The plan puts the origin first when it is a target, then the others by name; the first
// wave has --wave nodes and the second the rest. Named targets must be alive members.
func TestPlan(t *testing.T) {
	n := newFakeNode("n2", "n1", "n3", "n4")
	n.setLiveness("n4", cluster.LivenessDead)
	s := newTestService(t, n)
	for _, tc := range []struct {
		req  Request
		want [][]string
		all  bool
	}{
		{Request{}, [][]string{{"n2"}, {"n1", "n3"}}, true},
		{Request{Wave: 2}, [][]string{{"n2", "n1"}, {"n3"}}, true},
		{Request{Wave: 5}, [][]string{{"n2", "n1", "n3"}}, true},
		{Request{Nodes: []string{"n3", "n1"}}, [][]string{{"n1"}, {"n3"}}, false},
		{Request{Nodes: []string{"n3", "n2", "n3"}}, [][]string{{"n2"}, {"n3"}}, false},
	} {
		got, all, err := s.plan(tc.req, need{})
		if err != nil || all != tc.all || !slices.EqualFunc(got, tc.want, slices.Equal) {
			t.Errorf("plan(%+v) = %v, %v, %v; want %v, %v", tc.req, got, all, err, tc.want, tc.all)
		}
	}
	for _, nodes := range [][]string{{"n4"}, {"nobody"}} {
		if _, _, err := s.plan(Request{Nodes: nodes}, need{}); err == nil {
			t.Errorf("plan to %v accepted", nodes)
		}
	}
}

func testDeployment() Deployment {
	m := Manifest{Model: "m", Version: "1", ChunkSize: 1 << 20,
		Files: []File{{Path: "model.onnx", Size: 3, SHA256: hexSum([]byte("abc")), Chunks: []string{hexSum([]byte("abc"))}}}}
	return Deployment{Manifest: m, Digest: m.Digest(), Origin: "n1", Plan: [][]string{{"n1"}, {"n2", "n3"}}, Released: 1, Phase: PhaseActive}
}

func putDeployment(t *testing.T, n *fakeNode, d Deployment, gen uint64) {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	n.PutRecord(cluster.Record{Kind: KindDeployment, Key: "m/1", Generation: gen, Data: data})
}

func putStatus(t *testing.T, n *fakeNode, d Deployment, node, state, reason string, gen uint64) {
	t.Helper()
	data, _ := json.Marshal(NodeStatus{Node: node, Digest: d.Digest, State: state, Reason: reason})
	n.PutRecord(cluster.Record{Kind: KindNodeStatus, Key: statusKey("m", "1", node), Generation: gen, Data: data})
}

// advanceOnce runs the coordinator once and returns the deployment as recorded after.
func advanceOnce(t *testing.T, s *Service, n *fakeNode) Deployment {
	t.Helper()
	d, ok := s.deployments()["m/1"]
	if !ok {
		t.Fatal("no deployment record")
	}
	s.advance(d, n.Members())
	return s.deployments()["m/1"].Deployment
}

// The coordinator releases the second wave only once the first is READY, stops the deployment
// at a failure with that node's reason, and does not wait for a node that is down.
func TestAdvanceWaves(t *testing.T) {
	n := newFakeNode("n1", "n2", "n3")
	s := newTestService(t, n)
	d := testDeployment()
	putDeployment(t, n, d, 1)

	putStatus(t, n, d, "n1", StateInstalled, "", 1)
	if got := advanceOnce(t, s, n); got.Released != 1 || got.Phase != PhaseActive {
		t.Fatalf("first wave loading: released %d, phase %s", got.Released, got.Phase)
	}
	putStatus(t, n, d, "n1", StateReady, "", 2)
	if got := advanceOnce(t, s, n); got.Released != 2 || got.Phase != PhaseActive {
		t.Fatalf("first wave ready: released %d, phase %s; want the second wave released", got.Released, got.Phase)
	}
	if !d.releasedTo("n1") || d.releasedTo("n2") {
		t.Error("releasedTo before the second wave")
	}
	putStatus(t, n, d, "n2", StateReady, "", 1)
	putStatus(t, n, d, "n3", StateFetching, "", 1)
	if got := advanceOnce(t, s, n); got.Phase != PhaseActive {
		t.Fatalf("n3 still fetching: phase %s", got.Phase)
	}
	n.setLiveness("n3", cluster.LivenessDead)
	got := advanceOnce(t, s, n)
	if got.Phase != PhaseComplete {
		t.Fatalf("n3 down, the others ready: phase %s, want complete", got.Phase)
	}
	if !got.releasedTo("n3") {
		t.Error("a complete deployment is not released to a target that was down")
	}

	// A failure in the first wave stops everything.
	n2 := newFakeNode("n1", "n2", "n3")
	s2 := newTestService(t, n2)
	putDeployment(t, n2, d, 1)
	putStatus(t, n2, d, "n1", StateFailed, "load failed: not an ONNX model", 1)
	got = advanceOnce(t, s2, n2)
	if got.Phase != PhaseFailed || got.Reason != "node n1: load failed: not an ONNX model" || got.Released != 1 {
		t.Fatalf("after a failure: %+v", got)
	}
	if got.releasedTo("n2") {
		t.Error("a failed deployment released the next wave")
	}
	// Status records for another digest (an earlier deployment of the version) do not count.
	n3 := newFakeNode("n1", "n2", "n3")
	s3 := newTestService(t, n3)
	putDeployment(t, n3, d, 1)
	other := d
	other.Digest = hexSum([]byte("other"))
	putStatus(t, n3, other, "n1", StateReady, "", 1)
	if got := advanceOnce(t, s3, n3); got.Released != 1 {
		t.Errorf("a status of another digest released a wave")
	}
}

// Only the origin coordinates while it is alive; then the lowest routable member does.
func TestCoordinates(t *testing.T) {
	d := testDeployment()
	d.Origin = "n2"
	members := func(origin cluster.Liveness) []cluster.Member {
		return []cluster.Member{
			{Name: "n1", Local: true, Liveness: cluster.LivenessAlive, Serving: cluster.ServingReady},
			{Name: "n2", Liveness: origin, Serving: cluster.ServingReady},
			{Name: "n3", Liveness: cluster.LivenessAlive, Serving: cluster.ServingReady},
		}
	}
	if coordinates(&d, "n1", members(cluster.LivenessAlive)) || !coordinates(&d, "n2", members(cluster.LivenessAlive)) {
		t.Error("with the origin alive, only it coordinates")
	}
	if !coordinates(&d, "n1", members(cluster.LivenessDead)) || coordinates(&d, "n3", members(cluster.LivenessDead)) {
		t.Error("with the origin dead, the lowest routable member coordinates")
	}
}

// A record whose manifest does not match its digest or key, or breaks a limit, is ignored.
func TestDecodeDeploymentRefuses(t *testing.T) {
	d := testDeployment()
	good, _ := json.Marshal(d)
	if _, err := decodeDeployment(cluster.Record{Key: "m/1", Data: good}); err != nil {
		t.Fatalf("good record: %v", err)
	}
	if _, err := decodeDeployment(cluster.Record{Key: "m/2", Data: good}); err == nil {
		t.Error("a record under another key accepted")
	}
	bad := d
	bad.Manifest.Files[0].Path = "../../etc/cron.d/x"
	bad.Digest = bad.Manifest.Digest()
	data, _ := json.Marshal(bad)
	if _, err := decodeDeployment(cluster.Record{Key: "m/1", Data: data}); err == nil {
		t.Error("a manifest with a climbing path accepted")
	}
	lie := d
	lie.Digest = hexSum([]byte("x"))
	data, _ = json.Marshal(lie)
	if _, err := decodeDeployment(cluster.Record{Key: "m/1", Data: data}); err == nil {
		t.Error("a digest that is not the manifest's accepted")
	}
	if _, err := decodeDeployment(cluster.Record{Key: "m/1", Data: []byte("{")}); err == nil {
		t.Error("garbage accepted")
	}
}

// --replicas takes the nodes with the most memory available among those that can admit the
// model (twice its file), names breaking ties, and refuses when too few can.
func TestChooseReplicas(t *testing.T) {
	caps := []Capacity{
		{Node: "a", MemoryAvailable: 8 << 30},
		{Node: "b", MemoryAvailable: 16 << 30},
		{Node: "c", MemoryAvailable: 16 << 30},
		{Node: "d", MemoryAvailable: 1 << 30},
		{Node: "e"}, // unknown
	}
	for _, tc := range []struct {
		n     int
		model int64
		want  []string
	}{
		{1, 1 << 20, []string{"b"}},
		{2, 1 << 20, []string{"b", "c"}},
		{3, 1 << 20, []string{"b", "c", "a"}},
		{4, 1 << 20, []string{"b", "c", "a", "d"}},
		{3, 3 << 30, []string{"b", "c", "a"}},
	} {
		got, err := chooseReplicas(caps, tc.n, need{bytes: tc.model})
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("chooseReplicas(%d, %d) = %v, %v; want %v", tc.n, tc.model, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		n     int
		model int64
	}{{5, 1 << 20}, {3, 5 << 30}} {
		if got, err := chooseReplicas(caps, tc.n, need{bytes: tc.model}); err == nil {
			t.Errorf("chooseReplicas(%d, %d) = %v, want a refusal", tc.n, tc.model, got)
		}
	}
	// A GPU model goes by free GPU memory; nodes without a GPU cannot take it.
	gpus := []Capacity{
		{Node: "a", MemoryAvailable: 64 << 30, GPUMemoryFree: 10 << 30},
		{Node: "b", MemoryAvailable: 8 << 30, GPUMemoryFree: 70 << 30},
		{Node: "c", MemoryAvailable: 128 << 30},
	}
	if got, err := chooseReplicas(gpus, 2, need{bytes: 1 << 30, gpu: true}); err != nil || !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("GPU model: %v, %v; want [b a]", got, err)
	}
	if _, err := chooseReplicas(gpus, 3, need{bytes: 1 << 30, gpu: true}); err == nil || !strings.Contains(err.Error(), "GPU memory") {
		t.Errorf("three GPU replicas with two GPU nodes: %v", err)
	}
	if got, err := chooseReplicas(gpus, 1, need{bytes: 1 << 30}); err != nil || !slices.Equal(got, []string{"c"}) {
		t.Errorf("CPU model: %v, %v; want [c]", got, err)
	}
}

// A version's need comes from its model.onnx and its model.toml's device.
func TestNeedOf(t *testing.T) {
	s, _ := OpenStore(t.TempDir())
	gpu := ingestManifest(t, s, "m", "1", entry{name: "model.onnx", data: []byte("12345")}, entry{name: "model.toml", data: []byte("[instance]\ndevice = \"gpu\"\n")})
	if n := needOf(s, &gpu); n.bytes != 5 || !n.gpu {
		t.Errorf("GPU version: %+v", n)
	}
	cpu := ingestManifest(t, s, "m", "2", entry{name: "model.onnx", data: []byte("123")}, entry{name: "model.toml", data: []byte("[instance]\ndevice = \"auto\"\n")})
	if n := needOf(s, &cpu); n.bytes != 3 || n.gpu {
		t.Errorf("auto version: %+v", n)
	}
}

// The schedule takes a chunk another fetcher holds first; from the nodes that are done only
// one chunk at a time per such node while others fetch too, the chunks of its own rank first
// in order, then those of other ranks from the end.
func TestSchedule(t *testing.T) {
	newSchedule := func(chunks ...int) *schedule {
		sc := &schedule{pending: map[int]bool{}, left: len(chunks)}
		for _, c := range chunks {
			sc.pending[c] = true
		}
		return sc
	}
	peer := newBitmap(8)
	peer.set(5)
	sc := newSchedule(0, 1, 2, 3, 4, 5)
	v := peerView{fetching: []bitmap{peer}, doneCount: 1, rank: 1, of: 2}
	if i, fromDone, ok, _ := sc.next(v); !ok || fromDone || i != 5 {
		t.Fatalf("first pick = %d (from done %v, ok %v), want chunk 5 from the fetching peer", i, fromDone, ok)
	}
	i, fromDone, ok, _ := sc.next(v)
	if !ok || !fromDone || i != 1 {
		t.Fatalf("second pick = %d (from done %v, ok %v), want chunk 1 from the origin: the lowest of rank 1 of 2", i, fromDone, ok)
	}
	if _, _, ok, _ := sc.next(v); ok {
		t.Fatal("a second transfer from the origin while another node fetches")
	}
	sc.done(i, true, false) // failed: back among the pending
	if j, fromDone, ok, _ := sc.next(v); !ok || !fromDone || j%2 != 1 {
		t.Fatalf("after a failed transfer: %d %v %v", j, fromDone, ok)
	}
	// With two nodes done, two transfers from them at once.
	two := newSchedule(0, 1, 2, 3)
	for range 2 {
		if _, fromDone, ok, _ := two.next(peerView{fetching: []bitmap{newBitmap(4)}, doneCount: 2, rank: 0, of: 2}); !ok || !fromDone {
			t.Fatal("held to one transfer from two nodes that are done")
		}
	}
	if _, _, ok, _ := two.next(peerView{fetching: []bitmap{newBitmap(4)}, doneCount: 2, rank: 0, of: 2}); ok {
		t.Fatal("a third transfer from two nodes that are done while another node fetches")
	}
	// Its own share done, a fetcher takes the highest chunk of another's share.
	rest := newSchedule(1, 3, 5)
	if c, _, ok, _ := rest.next(peerView{fetching: []bitmap{newBitmap(8)}, doneCount: 1, rank: 0, of: 2}); !ok || c != 5 {
		t.Fatalf("with its share done a fetcher took chunk %d (ok %v), want 5", c, ok)
	}
	// Alone, a fetcher may take several chunks from the origin at once.
	alone := newSchedule(0, 1, 2)
	for range 3 {
		if _, fromDone, ok, _ := alone.next(peerView{doneCount: 1, rank: 0, of: 1}); !ok || !fromDone {
			t.Fatal("a lone fetcher was held to one transfer")
		}
	}
	// Nobody holds anything: wait.
	if _, _, ok, finished := newSchedule(0).next(peerView{}); ok || finished {
		t.Fatal("a chunk no member holds was handed out")
	}
	done := newSchedule(0)
	c, _, _, _ := done.next(peerView{doneCount: 1, of: 1})
	done.done(c, true, true)
	if _, _, _, finished := done.next(peerView{}); !finished {
		t.Fatal("not finished after the last chunk")
	}
}
