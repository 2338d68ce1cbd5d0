// Package perf is inferd's load generator and physical-limit probe, in the spirit of Triton's
// perf_analyzer. It owns three measurements:
//
//   - Closed loop (Run with Concurrency): for each concurrency level, that many clients each
//     send one KServe v2 inference request, wait for the answer and send the next.
//   - Open loop (Run with Rate): requests are scheduled at a fixed rate whatever the server
//     does, with at most MaxOutstanding in flight; a request that finds every sender busy is
//     dropped and one sent more than LateThreshold after its scheduled time is late. Latency is
//     measured from the scheduled time, so a slow server cannot hide its queueing behind a slow
//     client (coordinated omission).
//   - Raw (RunRaw): no server at all. The model runs in-process through an engine.Runtime over a
//     sweep of batch size × instances × intra-op threads; the best rows/s is the ceiling any
//     server on this machine can approach.
//
// Every step reports throughput (requests/s and batch rows/s), latency percentiles, the share of
// the machine's CPU this process used while measuring (so a caller can compute the ceiling left
// to a server sharing the machine), and, for servers with the statistics extension, the
// server-side queue/compute split and average batch size.
//
// Choices where perf_analyzer and the protocol are silent:
//
//   - Request bodies are built once per step and reused, so the client spends its CPU on HTTP
//     and not on encoding. Input data is seeded random (reproducible) or zero.
//   - Input shapes come from --shape (the full shape, dimension 0 included) or else from the
//     model's metadata with each variable dimension (-1) replaced by 1. Batch, when set, replaces
//     dimension 0 of every input whose model dimension 0 is variable; rows per request is
//     dimension 0 of the first input.
//   - A request is counted in a step when it completes inside the measurement window (after the
//     warmup); in-flight requests at the end of the window finish but are not counted. Latency
//     samples are capped (MaxSamples in all) so memory stays bounded; beyond the cap requests
//     are still counted.
//   - Responses are checked by status; the first successful response of each sender in a step
//     is also decoded, which catches a server that answers 200 with a malformed body without
//     charging the client a decode per request.
//
// The package must not import onnxruntime_go (the caller passes the engine.Runtime) nor any
// server package: it talks to servers only over the network (HTTP, and gRPC as a client of
// kserve/kservepb).
package perf
