// Package kserve owns the wire format of the KServe v2 / Open Inference Protocol: decoding
// inference requests into tensor.Tensor values, encoding inference responses and errors, the
// binary tensor data extension on both, the JSON shapes of the metadata endpoints, and the same
// codec turned round for clients (EncodeRequest, DecodeResponse, used by inferd perf). It does no
// I/O, knows nothing of models or HTTP routing (callers pass and set the
// Inference-Header-Content-Length header themselves), and imports only the tensor package and
// the standard library.
//
// Requests are decoded by a hand-written scanner rather than encoding/json: tensor data is parsed
// straight from the body's bytes into the little-endian buffer of the declared datatype, without
// an intermediate []any (that detour is most of a JSON request's CPU cost). The choices it makes
// where the protocol is silent:
//
//   - Strict envelope. Unknown fields are rejected in the request, in each input and in each
//     requested output, and so is a field given twice; a typo such as "datatyp" is an error, not
//     a silently ignored key. An optional field (id, parameters, outputs, an input's or output's
//     parameters) given as null is treated as absent, because some SDKs serialize unset
//     fields that way. Arrays and objects may nest at most MaxDepth deep.
//   - Nesting of data. "data" may be flat ([1,2,3,4]) or nested to any depth ([[1,2],[3,4]]);
//     the nesting is not compared with the shape (ragged nesting is accepted), only the total
//     element count must equal the product of the shape. Data is always read in row-major order.
//   - Integers (UINT*, INT*) must be JSON integer literals: 1.0, 1.5 and 1e2 are rejected (Triton
//     rejects them too, its parser reads them as doubles). Values are range-checked for the
//     datatype; a negative value for an unsigned type is rejected.
//   - Floats are correctly rounded to the datatype: the result is exactly what
//     strconv.ParseFloat(s, 32) (or 64) gives, which the decoder calls unless an exact fast path
//     applies (up to 19 significant digits and small exponents, see number.go). A finite literal
//     beyond the datatype's range is rejected; one below it becomes zero. The non-JSON tokens NaN, Infinity, -Infinity (and
//     Inf, -Inf) are accepted in FP32 and FP64 data, and responses write non-finite values as
//     the bare tokens NaN, Infinity and -Infinity. This is what Triton does since its rapidjson
//     NaN/Inf support (server PR #3870, 2022) and what Triton's users already parse: Python's
//     json module (used by tritonclient and the KServe SDK) reads these tokens as float values.
//     Such a body is not strict RFC 8259 JSON; clients that need strict JSON must avoid
//     non-finite outputs or use the binary tensor extension.
//   - FP16 and BF16 are accepted in binary form only, as in Triton: JSON numbers for them are
//     rejected. In responses they are converted to float32 and written as JSON numbers (Triton
//     would refuse), so every output can be read as JSON; DecodeResponse reads such numbers
//     back, rounding to nearest (exact for what inferd writes).
//   - BOOL data is true/false only; numbers are rejected.
//   - BYTES elements are JSON strings; each becomes its UTF-8 bytes. Invalid UTF-8 in a request
//     is rejected (JSON text must be UTF-8). In responses, bytes that are not valid UTF-8 are
//     written as \ufffd, so the body is always valid JSON; a client that needs the exact bytes
//     asks for binary output.
//   - Parameter values (request, input and output parameters) decode as encoding/json would
//     into an any: numbers are float64, objects map[string]any, arrays []any.
//     The two that steer the encoding, binary_data_output (request) and binary_data (output),
//     must be booleans when present; an output's binary_data overrides binary_data_output.
//
// The binary tensor data extension (binary.go):
//
//   - Zero copy. DecodeLimited does not copy binary data: a binary input's Data, and each
//     element of a binary BYTES input, is a capped sub-slice of the request body, so the request
//     aliases the body (which must stay untouched while the request is in use). The body comes
//     in parts, so that a reader that knows the tensors' sizes before their bytes arrive
//     (BinarySizes) can place each tensor at an aligned address and the engine can hand it on
//     without a copy; within one contiguous body, fixed-size Data may be unaligned for its
//     element type. ResponseParts does not copy fixed-size binary outputs either: they are
//     written from the outputs' own buffers.
//   - Strict framing. The JSON must end exactly at Inference-Header-Content-Length (whitespace
//     may pad it), each binary_data_size must match the shape for fixed-size types, and the
//     binary part must be exactly as long as the sizes add up to: too few or extra bytes are
//     errors, as are BOOL bytes other than 0 and 1 and BYTES elements that overrun their tensor
//     or do not match its element count. Without the header, binary_data_size is an error.
//   - Encoders write BOOL as 0 or 1 (any nonzero byte is true) and never mix data and
//     binary_data_size in one tensor. EncodeRequest sends FP16 and BF16 inputs in binary even
//     when asked for JSON, since servers accept them in binary only.
package kserve

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/inferd/inferd/tensor"
)

// ErrInvalidRequest marks a request the client must fix; the HTTP API answers it with status 400
// and the error's text.
var ErrInvalidRequest = errors.New("invalid inference request")

// ErrInvalidResponse marks an inference response that DecodeResponse cannot read.
var ErrInvalidResponse = errors.New("invalid inference response")

// MaxDepth bounds the nesting of arrays and objects in a request, so that a hostile body cannot
// exhaust the stack of a recursive reader or hide a huge tensor in deep brackets. It is also
// the most Limits.MaxDepth may raise it to.
const MaxDepth = 64

// Limits bound what one request may declare, beyond the size of its body. Zero fields take
// the default: MaxDepth for the nesting, no bound for the rest. A request over a limit fails
// with an error that wraps ErrInvalidRequest and is a *LimitError.
type Limits struct {
	// MaxDepth bounds the nesting of arrays and objects (at most the MaxDepth constant).
	MaxDepth int
	// MaxInputs bounds the number of input tensors.
	MaxInputs int
	// MaxRank bounds the number of dimensions of a tensor.
	MaxRank int
	// MaxElements bounds the element count of one tensor (the product of its shape).
	MaxElements int64
	// MaxStringBytes bounds the length of one BYTES element, JSON or binary.
	MaxStringBytes int
}

// LimitError says which of the Limits a request went over.
type LimitError struct {
	// Limit is the name of the setting: "max_depth", "max_inputs", "max_rank",
	// "max_elements" or "max_string_bytes".
	Limit  string
	detail string
}

func (e *LimitError) Error() string { return e.detail }

// LimitErrorf returns the error of a request over limit (a LimitError, wrapping
// ErrInvalidRequest), for front ends that decode another wire format under the same Limits.
func LimitErrorf(limit, format string, args ...any) error { return limitf(limit, format, args...) }

func limitf(limit, format string, args ...any) error {
	return &decodeError{sentinel: ErrInvalidRequest, detail: &LimitError{Limit: limit, detail: fmt.Sprintf(format, args...)}}
}

// InferRequest is a decoded inference request.
type InferRequest struct {
	ID string
	// Parameters are the request-level parameters (priority, timeout, binary_data_output, ...).
	Parameters map[string]any
	Inputs     []Input
	// Outputs lists the requested outputs; empty means all of the model's outputs.
	Outputs []RequestedOutput
}

// Input is one input tensor of a request with its parameters.
type Input struct {
	Tensor     tensor.Tensor
	Parameters map[string]any
}

// RequestedOutput is one entry of a request's "outputs".
type RequestedOutput struct {
	Name       string
	Parameters map[string]any
}

// InferResponse is an inference response ready to encode, or decoded by a client.
type InferResponse struct {
	ModelName, ModelVersion, ID string
	Parameters                  map[string]any
	Outputs                     []tensor.Tensor
	// Binary[i] says that Outputs[i] travels in binary form (the binary tensor data extension);
	// nil or short means JSON for the outputs it does not cover. InferRequest.BinaryOutputs
	// computes it from what the client asked for.
	Binary []bool
}

// ServerMetadata is the body of GET /v2.
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// MarshalJSON writes a nil Extensions as [] (the spec requires an array).
func (m ServerMetadata) MarshalJSON() ([]byte, error) {
	type plain ServerMetadata
	p := plain(m)
	p.Extensions = nonNil(p.Extensions)
	return json.Marshal(p)
}

// ModelMetadata is the body of GET /v2/models/{m}[/versions/{v}].
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// MarshalJSON writes nil slices as [] rather than null, which the spec does not allow.
func (m ModelMetadata) MarshalJSON() ([]byte, error) {
	type plain ModelMetadata
	p := plain(m)
	p.Versions = nonNil(p.Versions)
	p.Inputs = nonNil(p.Inputs)
	p.Outputs = nonNil(p.Outputs)
	return json.Marshal(p)
}

// TensorMetadata describes one model input or output; -1 in Shape is a variable dimension.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// MarshalJSON writes a nil Shape (a scalar) as [].
func (m TensorMetadata) MarshalJSON() ([]byte, error) {
	type plain TensorMetadata
	p := plain(m)
	p.Shape = nonNil(p.Shape)
	return json.Marshal(p)
}

// ModelReady is the body of GET /v2/models/{m}[/versions/{v}]/ready.
type ModelReady struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// RepositoryIndexEntry is one element of the body of POST /v2/repository/index. State is one of
// READY, UNAVAILABLE, LOADING, UNLOADING.
type RepositoryIndexEntry struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	State   string `json:"state"`
	Reason  string `json:"reason,omitempty"`
	// Worker fields (inferd's extension): the version's worker process when it runs in one
	// (engine.isolation = "process"), its restarts, why it last ended and its resident memory.
	WorkerPID      int    `json:"worker_pid,omitempty"`
	WorkerRestarts int    `json:"worker_restarts,omitempty"`
	WorkerLastExit string `json:"worker_last_exit,omitempty"`
	WorkerRSSBytes uint64 `json:"worker_rss_bytes,omitempty"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
