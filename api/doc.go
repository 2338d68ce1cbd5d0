// Package api serves inferd's HTTP interface: the KServe v2 / Open Inference Protocol REST
// endpoints (server and model metadata, health, model readiness and configuration, inference)
// and the operators' /health and /ready probes. It decodes and encodes wire formats through
// package kserve, finds model versions through a Repository, and runs requests through an
// Inferer (the scheduler); it never touches the engine or the files of the repository.
//
// Status codes follow Triton: a malformed or invalid request is 400, an unknown model or
// version 404, a model version that is not ready (or a server that is stopping) 503, a body
// over the configured limit 413, and a failure inside the runtime 500. Every error body is
// {"error": "..."}.
//
// Every response carries X-Request-Id (the client's own when well-formed); at debug level each
// request is logged with it once answered, and below debug nothing per request is measured.
// Inference requests that end here, before the scheduler admits them (a refusal with
// scheduler.ErrStopped included), are reported through Options.Refused with their
// scheduler.Outcome; the scheduler counts the rest, so that each request is counted once.
// Requests go to the scheduler as the *models.Version they resolved to (a scheduler.Target).
package api
