package kserve

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/inferd/inferd/tensor"
)

// fp32Request builds a request with one FP32 input of the given shape holding random values
// written as Python's json.dumps writes float32 values converted to float (17 significant
// digits would be worse; short ones flatter the parser), nested by rows as numpy's tolist does.
func fp32Request(rows, cols int) []byte { return fp32RequestBits(rows, cols, 64) }

// fp32RequestBits writes the values in the shortest form for float32 (bits 32: about 9
// significant digits, as inferd perf and most float32-aware clients send) or float64 (17).
func fp32RequestBits(rows, cols, bits int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := []byte(`{"id":"bench","inputs":[{"name":"x","shape":[` + strconv.Itoa(rows) + `,` + strconv.Itoa(cols) +
		`],"datatype":"FP32","data":[`)
	for i := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		for j := range cols {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64(float32(r.NormFloat64())), 'g', -1, bits)
		}
		b = append(b, ']')
	}
	return append(b, `]}],"outputs":[{"name":"y"}]}`...)
}

// BenchmarkDecodeFP32 compares DecodeLimited with the straightforward encoding/json decoder a
// server would otherwise use (data into []any, then converted to little-endian bytes), and with
// encoding/json into a typed [][]float32, on a 64x1024 FP32 request.
func BenchmarkDecodeFP32(b *testing.B) {
	body := fp32Request(64, 1024)

	b.Run("kserve", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			req, err := decodeRequest(body)
			if err != nil || len(req.Inputs[0].Tensor.Data) != 64*1024*4 {
				b.Fatal(err)
			}
		}
	})

	// The same values written as float32 shortest strings: the form inferd perf sends.
	short := fp32RequestBits(64, 1024, 32)
	b.Run("kserve_float32_shortest", func(b *testing.B) {
		b.SetBytes(int64(len(short)))
		b.ReportAllocs()
		for b.Loop() {
			req, err := decodeRequest(short)
			if err != nil || len(req.Inputs[0].Tensor.Data) != 64*1024*4 {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(64*1024), "ns/value")
	})

	b.Run("encoding_json_any", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var req struct {
				ID     string `json:"id"`
				Inputs []struct {
					Name     string  `json:"name"`
					Shape    []int64 `json:"shape"`
					Datatype string  `json:"datatype"`
					Data     []any   `json:"data"`
				} `json:"inputs"`
				Outputs []struct {
					Name string `json:"name"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(body, &req); err != nil {
				b.Fatal(err)
			}
			in := req.Inputs[0]
			data := make([]byte, 0, 64*1024*4)
			var flatten func(v []any)
			flatten = func(v []any) {
				for _, e := range v {
					switch e := e.(type) {
					case []any:
						flatten(e)
					case float64:
						data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(e)))
					}
				}
			}
			flatten(in.Data)
			t := tensor.Tensor{Name: in.Name, DataType: tensor.DataType(in.Datatype), Shape: in.Shape, Data: data}
			if t.Check() != nil {
				b.Fatal(t.Check())
			}
		}
	})

	b.Run("encoding_json_typed", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			var req struct {
				Inputs []struct {
					Data [][]float32 `json:"data"`
				} `json:"inputs"`
			}
			if err := json.Unmarshal(body, &req); err != nil || len(req.Inputs[0].Data) != 64 {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeFP32 measures encoding a 64x1024 FP32 output, against encoding/json on the
// same values as []float32.
func BenchmarkEncodeFP32(b *testing.B) {
	req, err := decodeRequest(fp32Request(64, 1024))
	if err != nil {
		b.Fatal(err)
	}
	out := req.Inputs[0].Tensor
	resp := &InferResponse{ModelName: "m", ModelVersion: "1", ID: "bench", Outputs: []tensor.Tensor{out}}

	b.Run("kserve", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = encodeResponse(buf[:0], resp)
		}
		b.SetBytes(int64(len(buf)))
	})

	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		type output struct {
			Name     string    `json:"name"`
			Datatype string    `json:"datatype"`
			Shape    []int64   `json:"shape"`
			Data     []float32 `json:"data"`
		}
		v := struct {
			ModelName    string   `json:"model_name"`
			ModelVersion string   `json:"model_version"`
			ID           string   `json:"id"`
			Outputs      []output `json:"outputs"`
		}{"m", "1", "bench", []output{{out.Name, string(out.DataType), out.Shape, out.Float32s()}}}
		var n int
		for b.Loop() {
			buf, err := json.Marshal(v)
			if err != nil {
				b.Fatal(err)
			}
			n = len(buf)
		}
		b.SetBytes(int64(n))
	})
}

// BenchmarkDecodeBinary decodes a request with one 4 MB FP32 input in binary form. The data is
// not copied, so the cost is the JSON header's and does not grow with the tensor.
func BenchmarkDecodeBinary(b *testing.B) {
	req := &InferRequest{ID: "bench", Inputs: []Input{{Tensor: tensor.FromFloat32s("x", []int64{1024, 1024}, make([]float32, 1<<20))}},
		Outputs: []RequestedOutput{{Name: "y"}}}
	body, headerLength := EncodeRequest(nil, req, true)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := decode(body, headerLength)
		if err != nil || len(got.Inputs[0].Tensor.Data) != 4<<20 {
			b.Fatal(err)
		}
	}
}
