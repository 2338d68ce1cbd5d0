// Package gpucheck holds `make gpu-check` (build tag gpu), the checks that need a real NVIDIA
// GPU and that CI, without one, never runs: package gpu's inventory and telemetry against
// nvidia-smi, a model on ONNX Runtime's CUDA execution provider against the same model on the
// CPU, and raw in-process ORT on CUDA against inferd serving the model on the GPU. Without a
// GPU every check skips and says why; without ORT's CUDA provider libraries (make deps-cuda) only
// the inventory and telemetry checks run. docs/gpu.md says how to run it.
package gpucheck
