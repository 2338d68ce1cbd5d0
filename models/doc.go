// Package models owns the model repository on disk: its layout
// (<repository>/<model>/<version>/model.onnx with numeric versions, and an optional
// <repository>/<model>/model.toml), the per-model settings and version policy, and the load and
// unload lifecycle of model versions, and where each version's instances run: on the CPU, or on
// the GPUs package placement admits it to (devices.go), falling back to the CPU only where the
// model allows it and saying why. It opens sessions through the engine.Runtime interface and
// learns about GPUs through the Devices interface, and never touches ONNX Runtime or NVML
// itself; it does not schedule or run requests (package scheduler does), and it does not speak
// HTTP. A *Version is what the front ends hand the scheduler: it implements scheduler.Target
// and scheduler.Series, and the mapping of its settings onto scheduler.Policy lives here, beside
// the settings it reads (models imports scheduler for that type only).
//
// A model's inputs, outputs, datatypes and shapes come from the model file; model.toml only
// overrides what it must (batching, instances, device, version policy, a fixed dimension). A
// model or version that fails to load is UNAVAILABLE with its reason, and every other model keeps
// serving.
package models
