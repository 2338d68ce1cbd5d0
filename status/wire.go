// Package status is the one view of a node that `inferd status` and the dashboard read: the
// node's state, its hardware, one row per model version with rates and percentiles over the
// last minute, and its recent events. It declares the JSON once, serves it (GET /v2/status,
// with ?cluster=1 fanning out to every member in parallel under a short per-member timeout,
// and GET /v2/status/events), and is the client of it. It computes nothing itself: the daemon
// hands it a Source.
package status

import (
	"time"

	"github.com/inferd/inferd/events"
	"github.com/inferd/inferd/window"
)

// Paths of the endpoints. The JSON is snake_case like the rest of the API.
const (
	// Path answers GET with Status, or with ?cluster=1 with Cluster.
	Path = "/v2/status"
	// PathEvents answers GET with Events; ?since=SEQ gives those after SEQ.
	PathEvents = "/v2/status/events"
	// PathHistory answers GET with History: the per-second points of every model version.
	PathHistory = "/v2/status/history"
)

// Node states.
const (
	StateReady    = "ready"    // serving every model version it should
	StateDegraded = "degraded" // serving, but a model version, a GPU or the last config reload failed
	StateStarting = "starting" // the first model load has not finished
	StateStopping = "stopping" // draining before exit
)

// Status is one node's view of itself.
type Status struct {
	Node     Node      `json:"node"`
	Hardware Hardware  `json:"hardware"`
	Models   []Model   `json:"models"`
	Rollouts []Rollout `json:"rollouts,omitempty"`
	// WindowSeconds is the window the models' rates and percentiles cover.
	WindowSeconds float64 `json:"window_seconds"`
	// Events are the node's most recent events, oldest first.
	Events []events.Event `json:"events"`
}

// Node is the daemon itself.
type Node struct {
	// Name is the cluster member name, or the host name outside a cluster.
	Name          string  `json:"name"`
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Ready is what GET /ready says; State adds whether anything is degraded, and Reason why
	// the node is not "ready".
	Ready     bool   `json:"ready"`
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	Clustered bool   `json:"clustered"`
}

// Hardware is what the node runs on.
type Hardware struct {
	CPU    CPU    `json:"cpu"`
	Memory Memory `json:"memory"`
	GPUs   []GPU  `json:"gpus"`
	// GPUNote says why no GPU is listed, or that reading them failed.
	GPUNote string `json:"gpu_note,omitempty"`
}

// CPU is the processor as the daemon uses it.
type CPU struct {
	Model    string   `json:"model"`
	Threads  int      `json:"threads"`
	Cores    int      `json:"cores"`
	Features []string `json:"features,omitempty"`
	// UtilizationPercent is the share of Threads the process kept busy in the last interval,
	// 0 to 100; nil until known.
	UtilizationPercent *float64 `json:"utilization_percent"`
}

// Memory is the host's usable memory (bounded by the cgroup limit).
type Memory struct {
	TotalBytes     uint64 `json:"total_bytes"`
	AvailableBytes uint64 `json:"available_bytes"`
}

// GPU is one device with its telemetry.
type GPU struct {
	Index              int     `json:"index"`
	Name               string  `json:"name"`
	MemoryUsedBytes    uint64  `json:"memory_used_bytes"`
	MemoryTotalBytes   uint64  `json:"memory_total_bytes"`
	UtilizationPercent float64 `json:"utilization_percent"`
	Problem            string  `json:"problem,omitempty"`
}

// Model is one model version on the node.
type Model struct {
	Model    string `json:"model"`
	Version  string `json:"version"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Provider string `json:"execution_provider,omitempty"`
	// Instances is the number of sessions that serve it.
	Instances int `json:"instances"`
	// QueueDepth is the requests waiting now, InFlight those admitted and not answered.
	QueueDepth int `json:"queue_depth"`
	InFlight   int `json:"in_flight"`
	// The rates, errors, percentiles and batch size cover the last WindowSeconds. Errors are
	// server errors, timeouts and full queues. P50Ms and P99Ms are nil when no request
	// succeeded in the window.
	RequestsPerSecond float64  `json:"requests_per_second"`
	ErrorsPerSecond   float64  `json:"errors_per_second"`
	Errors            uint64   `json:"errors"`
	P50Ms             *float64 `json:"p50_ms"`
	P99Ms             *float64 `json:"p99_ms"`
	BatchSize         float64  `json:"batch_size"`
	// LastLoad is the outcome of the version's most recent load or reload.
	LastLoad *Load `json:"last_load,omitempty"`
	// WeightPercent is its share of the model's traffic where a split or a rollout sets one.
	WeightPercent *float64 `json:"weight_percent,omitempty"`
	// Rollout is the version's part in its model's rollout: "stable" or "canary", with the
	// rollout's phase and step; nil when no rollout names it.
	Rollout *VersionRollout `json:"rollout,omitempty"`
}

// VersionRollout is a version's part in a rollout.
type VersionRollout struct {
	Role  string `json:"role"` // "stable" or "canary"
	Phase string `json:"phase"`
	Step  int    `json:"step"`
}

// Load is the outcome of loading a version.
type Load struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"` // "loaded", "reloaded" or "failed"
	Error  string    `json:"error,omitempty"`
}

// Rollout is a model's rollout as the node converged on it.
type Rollout struct {
	Model         string  `json:"model"`
	Phase         string  `json:"phase"`
	Step          int     `json:"step"`
	Stable        string  `json:"stable"`
	Canary        string  `json:"canary"`
	CanaryPercent float64 `json:"canary_weight"`
	Reason        string  `json:"reason,omitempty"`
}

// Cluster is GET /v2/status?cluster=1: every member's status as it answered itself.
type Cluster struct {
	// Node is the member that answered.
	Node  string   `json:"node"`
	Nodes []Member `json:"nodes"`
}

// Member is one node of the cluster.
type Member struct {
	Name string `json:"name"`
	// Address is where the member serves HTTP (as gossip advertises it).
	Address string `json:"address,omitempty"`
	Local   bool   `json:"local,omitempty"`
	// Liveness is the answering node's gossip view of the member.
	Liveness string `json:"liveness,omitempty"`
	// Reachable is false for a member that did not answer within the timeout, or answered
	// with an error; Error says which.
	Reachable bool    `json:"reachable"`
	Error     string  `json:"error,omitempty"`
	Status    *Status `json:"status,omitempty"`
}

// Ready reports whether every member answered and is ready.
func (c Cluster) Ready() bool {
	for _, m := range c.Nodes {
		if !m.Reachable || m.Status == nil || !m.Status.Node.Ready {
			return false
		}
	}
	return len(c.Nodes) > 0
}

// Events is GET /v2/status/events.
type Events struct {
	Node   string         `json:"node"`
	Last   uint64         `json:"last"`
	Events []events.Event `json:"events"`
}

// History is GET /v2/status/history: per-interval points of every model version, oldest
// first, for charts.
type History struct {
	Node            string   `json:"node"`
	IntervalSeconds float64  `json:"interval_seconds"`
	Series          []Series `json:"series"`
}

// Series is one model version's points.
type Series struct {
	Model   string         `json:"model"`
	Version string         `json:"version"`
	Points  []window.Point `json:"points"`
}
