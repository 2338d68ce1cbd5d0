package deploy

import (
	"context"
	"strconv"
	"sync"

	"github.com/inferd/inferd/cluster"
)

// fakeNode is an in-memory Node: records kept by the cluster's rule (higher generation wins).
type fakeNode struct {
	name    string
	mu      sync.Mutex
	members []cluster.Member
	records map[[2]string]cluster.Record
	changes chan struct{}
}

func newFakeNode(name string, others ...string) *fakeNode {
	n := &fakeNode{name: name, records: map[[2]string]cluster.Record{}, changes: make(chan struct{})}
	n.members = append(n.members, cluster.Member{Name: name, Local: true, Liveness: cluster.LivenessAlive, Serving: cluster.ServingReady, HTTPAddr: "127.0.0.1:1"})
	for i, o := range others {
		n.members = append(n.members, cluster.Member{Name: o, Liveness: cluster.LivenessAlive, Serving: cluster.ServingReady,
			HTTPAddr: "127.0.0." + string(rune('2'+i)) + ":1"})
	}
	return n
}

func (n *fakeNode) Name() string { return n.name }

func (n *fakeNode) Members() []cluster.Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]cluster.Member(nil), n.members...)
}

func (n *fakeNode) setLiveness(name string, l cluster.Liveness) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range n.members {
		if n.members[i].Name == name {
			n.members[i].Liveness = l
		}
	}
}

func (n *fakeNode) PutRecord(r cluster.Record) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := [2]string{r.Kind, r.Key}
	if cur, ok := n.records[k]; ok && cur.Generation >= r.Generation {
		return
	}
	n.records[k] = r
	close(n.changes)
	n.changes = make(chan struct{})
}

func (n *fakeNode) Records(kind string) []cluster.Record {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []cluster.Record
	for k, r := range n.records {
		if k[0] == kind {
			out = append(out, r)
		}
	}
	return out
}

func (n *fakeNode) Changes() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changes
}

func itoa(n int) string { return strconv.Itoa(n) }

// fakeLoader is a repository that holds no version and loads nothing.
type fakeLoader struct{}

func (fakeLoader) Load(context.Context, string) {}

func (fakeLoader) State(string, string) (string, string, bool) { return "", "", false }
