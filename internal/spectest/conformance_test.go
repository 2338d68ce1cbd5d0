package spectest_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/inferd/inferd/internal/spectest"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/tensor"
)

// TestKServeConformance checks that what package kserve writes matches the specification.
func TestKServeConformance(t *testing.T) {
	resp := &kserve.InferResponse{
		ModelName: "m", ModelVersion: "2", ID: "req-1",
		Parameters: map[string]any{"sequence_id": 3, "flag": true},
		Outputs: []tensor.Tensor{
			tensor.FromFloat32s("fp32", []int64{2, 2}, []float32{1, -2.5, 1e-30, math.MaxFloat32}),
			{Name: "scalar", DataType: tensor.Int64, Data: make([]byte, 8)},
			{Name: "bool", DataType: tensor.Bool, Shape: []int64{2}, Data: []byte{0, 1}},
			{Name: "u16", DataType: tensor.Uint16, Shape: []int64{1}, Data: []byte{1, 2}},
			{Name: "fp16", DataType: tensor.FP16, Shape: []int64{1}, Data: []byte{0x00, 0x3c}},
			{Name: "bytes", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("é\"\n"), {0xff}}},
			{Name: "empty", DataType: tensor.FP64, Shape: []int64{0, 3}},
		},
	}
	// JSON responses: without binary outputs, the JSON part is the whole body.
	body, _ := kserve.ResponseParts(nil, resp)
	spectest.Validate(t, "inference_response", body)
	body, _ = kserve.ResponseParts(nil, &kserve.InferResponse{ModelName: "m"})
	spectest.Validate(t, "inference_response", body)
	spectest.Validate(t, "inference_error_response", kserve.EncodeError("input \"x\": bad"))

	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	spectest.Validate(t, "metadata_server_response", marshal(kserve.ServerMetadata{Name: "inferd", Version: "0"}))
	spectest.Validate(t, "metadata_model_response", marshal(kserve.ModelMetadata{Name: "m", Platform: "onnxruntime_onnx"}))
	spectest.Validate(t, "metadata_model_response", marshal(kserve.ModelMetadata{
		Name: "m", Versions: []string{"1"}, Platform: "onnxruntime_onnx",
		Inputs:  []kserve.TensorMetadata{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 4}}},
		Outputs: []kserve.TensorMetadata{{Name: "y", Datatype: "FP32"}},
	}))
}
