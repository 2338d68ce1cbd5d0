// Package grpcapi serves inferd's gRPC interface: the Open Inference Protocol's
// inference.GRPCInferenceService (server and model liveness, readiness and metadata, ModelInfer)
// with Triton's ModelStreamInfer, and the standard grpc.health.v1.Health service. It is the
// gRPC twin of package api and keeps the same guarantees: requests are decoded and checked
// under the [limits] in force (kservegrpc), handed to the model version that serves them now
// (dispatch), refused with bearer tokens of too low a scope, and answered with a status whose
// message says what was wrong. It never touches the engine or the repository's files.
//
// Status codes come from one mapping (status.go): an invalid request is INVALID_ARGUMENT, an
// unknown model or version NOT_FOUND, a model version that is not ready or a server that is
// stopping UNAVAILABLE, a full queue RESOURCE_EXHAUSTED, a timeout passed in the queue (the
// request's timeout parameter or its gRPC deadline) DEADLINE_EXCEEDED, a failure inside the
// runtime INTERNAL. Inference requests that end here, before the scheduler admits them, are
// reported through Options.Refused with their scheduler.Outcome; the scheduler counts the rest,
// so each request is counted once, whichever protocol carried it.
//
// In a cluster (Options.Router), a decoded and checked inference request goes to the same router
// as HTTP's (route.go): the router decides where it runs by the same split, failover, retry
// budget and ejection, forwards it to a peer over the peer's HTTP API in KServe's binary form,
// and hands the tries it keeps here back to run as they came. The response names the node that
// served it: inferd-served-by metadata for a unary call, the inferd_served_by parameter on each
// response of a stream. A peer's answer takes its code from its HTTP status.
//
// Shutdown drains: new requests are refused with UNAVAILABLE, each ModelStreamInfer stream
// stops reading, answers what it has in flight and ends with UNAVAILABLE, health watchers hear
// NOT_SERVING; what is still running when the caller's deadline passes is cut off.
package grpcapi
