package deploy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/inferd/inferd/cluster"
)

// Record kinds. A deployment is one record per model version, written by its coordinator; a
// node's progress on it is one record per node, written by that node only.
const (
	KindDeployment = "deploy"
	KindNodeStatus = "deploy-node"
	KindCapacity   = "deploy-capacity"
)

// Capacity is what a node tells the others about the room it has for versions, so that
// --replicas can choose where a version goes.
type Capacity struct {
	Node string `json:"node"`
	// MemoryAvailable is the memory the process may still use, in bytes (0: unknown).
	MemoryAvailable uint64 `json:"memory_available"`
	// GPUMemoryFree is the free memory of the node's GPU with the most of it (0: no GPU).
	GPUMemoryFree uint64 `json:"gpu_memory_free,omitempty"`
}

// Phases of a deployment.
const (
	PhaseActive   = "active"   // waves being released
	PhaseComplete = "complete" // every wave released and ready; later targets install at once
	PhaseFailed   = "failed"   // a node of a released wave failed: no further wave is released
	PhaseRemoved  = "removed"  // undeployed: every node removes the version
)

// Deployment is the cluster-wide state of one deployed model version.
type Deployment struct {
	Manifest Manifest `json:"manifest"`
	Digest   string   `json:"digest"`
	Origin   string   `json:"origin"` // the node that received the upload and holds every file
	// AllNodes: the targets are every member, also those that join later; Plan then lists the
	// members at deploy time.
	AllNodes bool `json:"all_nodes,omitempty"`
	// Plan is the waves, in order; Released is how many of them may fetch and install.
	Plan     [][]string `json:"plan"`
	Released int        `json:"released"`
	Phase    string     `json:"phase"`
	Reason   string     `json:"reason,omitempty"`
}

// Targets is every node of the plan.
func (d *Deployment) Targets() []string {
	var out []string
	for _, w := range d.Plan {
		out = append(out, w...)
	}
	return out
}

// releasedTo reports whether node may fetch and install the version now.
func (d *Deployment) releasedTo(node string) bool {
	switch d.Phase {
	case PhaseRemoved:
		return false
	case PhaseComplete:
		if d.AllNodes {
			return true
		}
	}
	for _, w := range d.Plan[:min(d.Released, len(d.Plan))] {
		for _, n := range w {
			if n == node {
				return true
			}
		}
	}
	return false
}

func deploymentKey(model, version string) string { return model + "/" + version }

func decodeDeployment(r cluster.Record) (Deployment, error) {
	var d Deployment
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return d, fmt.Errorf("%w: deployment record %s: %v", ErrInvalid, r.Key, err)
	}
	if err := d.Manifest.Validate(math.MaxInt64); err != nil {
		return d, fmt.Errorf("deployment record %s: %w", r.Key, err)
	}
	if d.Manifest.Digest() != d.Digest || deploymentKey(d.Manifest.Model, d.Manifest.Version) != r.Key {
		return d, fmt.Errorf("%w: deployment record %s: digest or key does not match its manifest", ErrInvalid, r.Key)
	}
	if d.Released < 0 || len(d.Plan) > 4096 {
		return d, fmt.Errorf("%w: deployment record %s: plan", ErrInvalid, r.Key)
	}
	return d, nil
}

// Node states, in the order a node goes through them.
const (
	StateWaiting    = "waiting"   // a target whose wave is not released yet
	StateFetching   = "fetching"  // chunks arriving
	StateInstalled  = "installed" // in the repository, loading
	StateReady      = "ready"     // READY in the repository
	StateFailed     = "failed"    // Reason says why
	StateRemoved    = "removed"   // undeployed here
	StateStored     = "stored"    // the origin, not a target: holds the files for peers
	maxReasonLength = 1024
)

// NodeStatus is one node's progress on one deployment (one digest).
type NodeStatus struct {
	Node   string `json:"node"`
	Digest string `json:"digest"`
	State  string `json:"state"`
	Done   int64  `json:"done"`  // bytes held
	Total  int64  `json:"total"` // bytes of the version
	Reason string `json:"reason,omitempty"`
	// Have is the bitmap of the chunks (Manifest.Chunks order) this node holds verified, so that
	// peers fetch from it before it is done.
	Have string `json:"have,omitempty"`
}

func statusKey(model, version, node string) string { return model + "/" + version + "/" + node }

func decodeStatus(r cluster.Record) (NodeStatus, error) {
	var s NodeStatus
	if err := json.Unmarshal(r.Data, &s); err != nil {
		return s, fmt.Errorf("%w: status record %s: %v", ErrInvalid, r.Key, err)
	}
	if !strings.HasSuffix(r.Key, "/"+s.Node) {
		return s, fmt.Errorf("%w: status record %s names node %q", ErrInvalid, r.Key, s.Node)
	}
	return s, nil
}

// bitmap is a set of chunk indexes.
type bitmap []byte

func newBitmap(n int) bitmap       { return make(bitmap, (n+7)/8) }
func (b bitmap) has(i int) bool    { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }
func (b bitmap) set(i int)         { b[i/8] |= 1 << (i % 8) }
func (b bitmap) encode() string    { return base64.RawStdEncoding.EncodeToString(b) }
func decodeBitmap(s string) bitmap { b, _ := base64.RawStdEncoding.DecodeString(s); return b }
func (b bitmap) count(n int) (c int) {
	for i := range n {
		if b.has(i) {
			c++
		}
	}
	return c
}
