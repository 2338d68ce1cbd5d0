// Package admin is the cluster's admin API over HTTP: the /v2/cluster endpoints (members,
// rollouts and the rollout actions), the JSON types they answer with, the handlers a node
// serves them with, and the client `inferd members` and `inferd rollout` call them through.
// Server and client share the types and the paths, so the contract is written once; the
// client tells outcomes apart by HTTP status, never by the text of an error.
//
// It reads the node, the router and the rollout controller through small interfaces and owns
// none of them: package daemon starts them and mounts the handlers.
package admin
