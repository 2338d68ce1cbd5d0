// Package cluster joins inferd appliances on a LAN into one service with hashicorp/memberlist:
// who is in the cluster, whether each node is ready, draining or degraded, which models and
// versions each serves, and cluster-wide records (rollout state) that every node converges on.
// Routing and forwarding of requests between nodes live in cluster/route; rollouts in
// cluster/rollout. Both consume the Member view defined here.
//
// Start returns a Node: its Members (with this node's own judgement of each peer's
// Liveness, see liveness.go), its advertised serving state and catalog (SetServing,
// SetCatalog) and the records every node converges on (PutRecord, Records), with Changes to
// wait for any of them. Node metadata stays small and versioned (meta.go); full catalogs and
// records travel by named broadcasts, reliable fetches and push-pull (gossip.go), in a
// bounded binary format that rejects garbage without panicking (wire.go, FuzzDecodeMessage).
// A re-join loop heals partitions (rejoin.go).
//
// The package must not route or forward requests, decide rollouts, or serve HTTP, and
// imports nothing else of inferd. Its setters never block on the network; only Start, Join,
// Leave and Shutdown do.
package cluster

import "time"

// Serving is what a node says about its own ability to take traffic.
type Serving string

// Serving states a node advertises in its metadata.
const (
	ServingReady    Serving = "ready"    // takes new requests
	ServingDraining Serving = "draining" // finishing what it has; route nothing new to it
	ServingDegraded Serving = "degraded" // up, but something is wrong (a lost GPU, failed loads)
)

// Liveness is this node's own judgement of a peer, kept by the daemon from memberlist's
// events rather than read from memberlist's node table.
type Liveness string

// Liveness states.
const (
	LivenessAlive   Liveness = "alive"
	LivenessSuspect Liveness = "suspect" // failed probes; memberlist has not declared it dead yet
	LivenessDead    Liveness = "dead"    // declared dead by the failure detector
	LivenessLeft    Liveness = "left"    // left gracefully
)

// Member is one node as this node sees it.
type Member struct {
	// Name is the stable node id from config (never the IP).
	Name string
	// Local is true for this node's own entry.
	Local bool
	// HTTPAddr is host:port where the node serves the inference API.
	HTTPAddr string
	// GossipAddr is host:port of its memberlist endpoint.
	GossipAddr string
	Serving    Serving
	Liveness   Liveness
	// Class is the hardware class the node advertises (e.g. "cpu", "gpu:H100").
	Class string
	// Catalog is the newest catalog received from the node (its generation is in the
	// metadata, so a stale catalog is visible as Catalog.Generation < MetaGeneration).
	Catalog        Catalog
	MetaGeneration uint64
	// Since is when Liveness last changed.
	Since time.Time
}

// Routable reports whether new requests may be sent to the member.
func (m Member) Routable() bool {
	return m.Liveness == LivenessAlive && m.Serving != ServingDraining
}

// Catalog is what a node serves: every model version and its state.
type Catalog struct {
	Generation uint64           `json:"gen"`
	Models     []CatalogVersion `json:"models"`
}

// CatalogVersion is one model version in a node's catalog.
type CatalogVersion struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	// State is the models package's state name ("ready", "loading", "unavailable", ...).
	State string `json:"state"`
	// Provider is the execution provider it actually runs on ("cpu", "cuda:0").
	Provider string `json:"provider,omitempty"`
}

// Ready reports whether the catalog has the version of the model in state "ready". An empty
// version asks for any ready version.
func (c Catalog) Ready(model, version string) bool {
	for _, v := range c.Models {
		if v.Model == model && v.State == "ready" && (version == "" || v.Version == version) {
			return true
		}
	}
	return false
}

// ReadyVersions lists the model's ready versions in the catalog, in catalog order.
func (c Catalog) ReadyVersions(model string) []string {
	var out []string
	for _, v := range c.Models {
		if v.Model == model && v.State == "ready" {
			out = append(out, v.Version)
		}
	}
	return out
}

// Record is a cluster-wide piece of state (a rollout's state, for one) that every node
// converges on. Between two records with the same Key the one with the higher Generation
// wins; on equal generations the higher Priority wins (an abort outranks a promotion), and
// on equal priority the one whose Data sorts higher wins, so every node picks the same one.
type Record struct {
	Kind       string `json:"kind"`
	Key        string `json:"key"`
	Generation uint64 `json:"gen"`
	Priority   uint8  `json:"prio,omitempty"`
	Data       []byte `json:"data"`
}
