package admin

import (
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/cluster/route"
)

// Paths of the endpoints. The JSON is snake_case like the rest of the API.
const (
	// PathMembers answers GET with Members.
	PathMembers = "/v2/cluster/members"
	// PathRollouts answers GET with Rollouts; PathRollouts/{model}/{action} takes a POST of
	// one of the Actions and answers with the model's rollout.State.
	PathRollouts = "/v2/cluster/rollouts"
)

// Actions a rollout takes by POST, in the order the CLI lists them.
const (
	ActionStart       = "start"
	ActionPromote     = "promote"
	ActionPromoteFull = "promote-full"
	ActionAbort       = "abort"
)

// Members is GET /v2/cluster/members: every member as this node sees it, and this node's
// routing counters.
type Members struct {
	Node    string      `json:"node"`
	Members []Member    `json:"members"`
	Routing route.Stats `json:"routing"`
}

// Member is one node as the answering node sees it.
type Member struct {
	Name     string           `json:"name"`
	Local    bool             `json:"local,omitempty"`
	Liveness cluster.Liveness `json:"liveness"`
	Serving  cluster.Serving  `json:"serving"`
	// Routable: alive and not draining, so the answering node may send it requests.
	Routable   bool      `json:"routable"`
	HTTPAddr   string    `json:"http_addr"`
	GossipAddr string    `json:"gossip_addr"`
	Class      string    `json:"class"`
	Since      time.Time `json:"since"`
	// CatalogGeneration is the catalog held; CatalogStale says the member's metadata names a
	// newer one that has not arrived yet.
	CatalogGeneration uint64                   `json:"catalog_generation"`
	CatalogStale      bool                     `json:"catalog_stale,omitempty"`
	Models            []cluster.CatalogVersion `json:"models"`
}

// Rollouts is GET /v2/cluster/rollouts: the rollout state the answering node has converged
// on. rollout.State's JSON names are kept stable by that package.
type Rollouts struct {
	Node     string          `json:"node"`
	Rollouts []rollout.State `json:"rollouts"`
}

// abortBody is the optional body of an abort.
type abortBody struct {
	Reason string `json:"reason"`
}
