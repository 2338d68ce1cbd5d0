// Package route decides, for every inference request a node receives, which node of the cluster
// serves it, and forwards it there: the per-model traffic split across versions and nodes
// (random or sticky by a client header), the preference for the local node, least-outstanding
// choice between peers (two random choices), failover inside the request (other node on a
// connect failure, a reset, a per-try timeout or a 503, within a retry budget and the client's
// deadline) and passive ejection of peers that keep failing from this node.
//
// Router is an http.Handler placed in front of the local KServe API handler. Only
// POST /v2/models/{m}/infer and POST /v2/models/{m}/versions/{v}/infer are routed; everything
// else goes to the local handler untouched. Forwarding keeps the KServe wire format byte for
// byte (JSON and binary tensors, Inference-Header-Content-Length, query string) and marks the
// request, so a forwarded request is always served where it lands and never forwarded again.
// Front ends of other protocols (gRPC) route through RouteInfer: they hand the request over in
// that HTTP form, and serve the tries the router keeps on this node with their own handler.
//
// The package owns no membership: it reads the cluster view through the Members interface
// (cluster.Member values kept by package cluster) and the configured splits through Splits,
// once per request. It must not import the API, the scheduler or the engine, and it never
// parses tensors: a peer's answer is relayed as it came.
package route
