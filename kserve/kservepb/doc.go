// Package kservepb is the generated Go code of inference.proto: the Open Inference Protocol's
// gRPC service (inference.GRPCInferenceService) with Triton's ModelStreamInfer, its messages,
// client and server stubs. Nothing here is written by hand but this file and the .proto;
// `make proto` regenerates the rest with the protoc-gen-go and protoc-gen-go-grpc pinned in
// go.mod's tool directive, and TestGeneratedCodeIsCurrent (kserve/kservepb) fails when the
// committed code is stale. Conversion between these messages and tensors is kservegrpc's.
package kservepb
