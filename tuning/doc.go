// Package tuning finds, for one model version on the machine it runs on, how to serve it: how
// many instances (sessions), how many intra-op threads each, and how large a batch to aim for.
// It owns three things and nothing else:
//
//   - calibration (calibrate.go): a bounded run over candidate configurations with inputs of
//     the model's own shapes, on sessions opened where the version will serve (its engine
//     worker), measuring the service time of one run per batch size;
//   - the choice (choose.go): from such a profile, the configuration and batch target that give
//     the most rows per second for a given number of requests in flight, within the caps and
//     the latency budget, as a pure function;
//   - the cache (store.go): profiles kept on disk, keyed by the model file's hash, the hardware
//     and the runtime's version, so that a restart or a reload of the same file does not
//     calibrate again.
//
// It does not load models, read model.toml or queue requests: the model repository asks it
// for a profile and a decision, and the scheduler batches by the service times it is handed.
package tuning
