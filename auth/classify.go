package auth

import (
	"net/http"
	"strings"
)

// Policy says which endpoints stay open and what /metrics needs.
type Policy struct {
	// ProtectProbes makes /health, /ready and /v2/health/* need an infer token too.
	ProtectProbes bool
	// Metrics is the scope /metrics needs (Open by default).
	Metrics Scope
}

// PeerChunks is the path prefix of the chunks deployments move between members
// (cluster/deploy.PathPeer).
const PeerChunks = "/v2/cluster/deploy/peer/"

// Classify returns the classifier of inferd's routes under the policy: probes are open unless
// protected; the dashboard's page and assets are open; requests that change what the node serves (repository load and unload, rollout
// control, any other non-GET under /v2/cluster) need admin; everything else needs infer.
func Classify(p Policy) Classifier {
	return func(r *http.Request) Scope {
		path := r.URL.Path
		switch {
		case path == "/health" || path == "/ready" || strings.HasPrefix(path, "/v2/health/"):
			if p.ProtectProbes {
				return Infer
			}
			return Open
		case path == "/metrics":
			return p.Metrics
		case path == "/" || strings.HasPrefix(path, "/ui/"):
			// The dashboard's page and assets hold no data; what it reads needs infer.
			return Open
		case strings.HasPrefix(path, "/v2/repository/models/"):
			return Admin
		case strings.HasPrefix(path, PeerChunks) && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			// Peers fetching a deployment carry no client token: the endpoint admits members
			// only (by address, over the cluster's TLS) and serves content-addressed chunks.
			return Open
		case strings.HasPrefix(path, "/v2/cluster/") && r.Method != http.MethodGet && r.Method != http.MethodHead:
			return Admin
		}
		return Infer
	}
}
