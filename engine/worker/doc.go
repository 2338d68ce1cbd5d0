// Package worker runs the sessions of a model version in a worker process of their own, so that
// a native crash, an unbounded allocation or a run that never ends inside ONNX Runtime takes
// down that worker and never the daemon (issue 15, docs/isolation.md).
//
// The daemon side is Isolator: it starts one worker per host (the same binary, run as
// `inferd worker`), supervises it (parent-death signal, memory limit, exit classification,
// restart, give up after repeated failures) and hands out sessions that forward Run to it. The
// worker side is Serve, which answers those calls with an engine.Runtime (engine/ort in the real
// binary, a fake in tests).
//
// Tensor bytes cross the boundary through shared memory (one memfd arena per session, mapped
// in both processes); control travels over Unix sockets as small length-prefixed frames. The
// package holds no cgo: ONNX Runtime stays in engine/ort.
//
// Wire layout of a frame: a 4-byte little-endian length, then the payload: a kind byte, a
// request id and the message fields (see message.go). File descriptors (a session's socket and
// its arena) ride as SCM_RIGHTS on the frame that opens the session.
package worker
