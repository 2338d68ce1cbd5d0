package kserve

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/inferd/inferd/tensor"
)

// encodeJSON encodes a response that has no binary outputs.
func encodeJSON(t *testing.T, dst []byte, r *InferResponse) []byte {
	t.Helper()
	body, headerLength := encodeResponse(dst, r)
	if headerLength != -1 {
		t.Fatalf("ResponseParts without binary outputs: headerLength %d, want -1", headerLength)
	}
	return body
}

func TestEncodeResponse(t *testing.T) {
	tests := []struct {
		name string
		resp InferResponse
		want string
	}{
		{
			name: "minimal",
			resp: InferResponse{ModelName: "m", ModelVersion: "1"},
			want: `{"model_name":"m","model_version":"1","outputs":[]}`,
		},
		{
			name: "full",
			resp: InferResponse{
				ModelName: "m", ModelVersion: "3", ID: "r\"1",
				Parameters: map[string]any{"b": true, "a": 1.5, "n": nil, "s": []any{"x", 2}},
				Outputs: []tensor.Tensor{
					tensor.FromFloat32s("p", []int64{2, 2}, []float32{0.5, -1, 1e-7, 3e20}),
					{Name: "scalar", DataType: tensor.Int64, Data: i64s(-7)},
					{Name: "flags", DataType: tensor.Bool, Shape: []int64{3}, Data: []byte{1, 0, 2}},
					{Name: "s", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("a"), []byte("\n")}},
					{Name: "empty", DataType: tensor.Uint8, Shape: []int64{0, 4}},
				},
			},
			want: `{"model_name":"m","model_version":"3","id":"r\"1","parameters":{"a":1.5,"b":true,"n":null,"s":["x",2]},"outputs":[` +
				`{"name":"p","datatype":"FP32","shape":[2,2],"data":[0.5,-1,1e-07,3e+20]},` +
				`{"name":"scalar","datatype":"INT64","shape":[],"data":[-7]},` +
				`{"name":"flags","datatype":"BOOL","shape":[3],"data":[true,false,true]},` +
				`{"name":"s","datatype":"BYTES","shape":[2],"data":["a","\n"]},` +
				`{"name":"empty","datatype":"UINT8","shape":[0,4],"data":[]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := encodeJSON(t, []byte("prefix"), &tt.resp)
			if string(got) != "prefix"+tt.want {
				t.Errorf("got  %s\nwant prefix%s", got, tt.want)
			}
			if !json.Valid(got[len("prefix"):]) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestEncodeIntegers(t *testing.T) {
	tests := []struct {
		dt   tensor.DataType
		data []byte
		want string
	}{
		{tensor.Uint8, []byte{0, 255}, "0,255"},
		{tensor.Uint16, u16s(0, 65535), "0,65535"},
		{tensor.Uint32, u32s(0, math.MaxUint32), "0,4294967295"},
		{tensor.Uint64, u64s(0, math.MaxUint64), "0,18446744073709551615"},
		{tensor.Int8, []byte{0x80, 0x7f}, "-128,127"},
		{tensor.Int16, i16s(math.MinInt16, math.MaxInt16), "-32768,32767"},
		{tensor.Int32, i32s(math.MinInt32, math.MaxInt32), "-2147483648,2147483647"},
		{tensor.Int64, i64s(math.MinInt64, math.MaxInt64), "-9223372036854775808,9223372036854775807"},
	}
	for _, tt := range tests {
		out := tensor.Tensor{Name: "o", DataType: tt.dt, Shape: []int64{2}, Data: tt.data}
		got := string(encodeJSON(t, nil, &InferResponse{Outputs: []tensor.Tensor{out}}))
		if !strings.Contains(got, `"data":[`+tt.want+`]`) {
			t.Errorf("%s: got %s, want data [%s]", tt.dt, got, tt.want)
		}
	}
}

func TestEncodeSpecialFloats(t *testing.T) {
	tests := []struct {
		name string
		out  tensor.Tensor
		want string
	}{
		{"FP32", tensor.FromFloat32s("o", []int64{5},
			[]float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, math.SmallestNonzeroFloat32}),
			"NaN,Infinity,-Infinity,3.4028235e+38,1e-45"},
		{"FP64", tensor.Tensor{Name: "o", DataType: tensor.FP64, Shape: []int64{4},
			Data: f64s(math.NaN(), math.Inf(-1), 0.1, -0.0)},
			"NaN,-Infinity,0.1,0"},
		// FP16: 1.0, -2.0, 0.099975586 (0x2e66), 65504 (max), smallest subnormal, -0, +Inf, NaN.
		{"FP16", tensor.Tensor{Name: "o", DataType: tensor.FP16, Shape: []int64{8},
			Data: u16s(0x3c00, 0xc000, 0x2e66, 0x7bff, 0x0001, 0x8000, 0x7c00, 0x7e00)},
			"1,-2,0.099975586,65504,5.9604645e-08,-0,Infinity,NaN"},
		// BF16: 1.0, -1.5, 3.0e38-ish (0x7f7f), -Inf, NaN.
		{"BF16", tensor.Tensor{Name: "o", DataType: tensor.BF16, Shape: []int64{5},
			Data: u16s(0x3f80, 0xbfc0, 0x7f7f, 0xff80, 0x7fc0)},
			"1,-1.5,3.3895314e+38,-Infinity,NaN"},
	}
	for _, tt := range tests {
		got := string(encodeJSON(t, nil, &InferResponse{Outputs: []tensor.Tensor{tt.out}}))
		if !strings.Contains(got, `"data":[`+tt.want+`]`) {
			t.Errorf("%s: got %s, want data [%s]", tt.name, got, tt.want)
		}
	}
}

func TestHalfToFloat32(t *testing.T) {
	// Every finite half must convert exactly: compare with a direct computation.
	for h := range uint32(1 << 16) {
		exp, mant := (h>>10)&0x1f, float64(h&0x3ff)
		if exp == 0x1f {
			continue
		}
		want := mant * math.Pow(2, -24)
		if exp > 0 {
			want = (1 + mant/1024) * math.Pow(2, float64(exp)-15)
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if got := halfToFloat32(uint16(h)); float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("halfToFloat32(%#04x) = %v, want %v", h, got, want)
		}
	}
}

func TestEncodeStrings(t *testing.T) {
	tests := []struct {
		in   string
		want string // the encoded JSON string
		back string // what a JSON reader gets back
	}{
		{"plain", `"plain"`, "plain"},
		{`q"b\`, `"q\"b\\"`, `q"b\`},
		{"\x00\x01\x1f\t\n\r\b\f", `"\u0000\u0001\u001f\t\n\r\u0008\u000c"`, "\x00\x01\x1f\t\n\r\b\f"},
		{"é€😀", `"é€😀"`, "é€😀"},
		{"line\u2028sep\u2029", `"line\u2028sep\u2029"`, "line\u2028sep\u2029"},
		{"<html>&", `"<html>&"`, "<html>&"},
		{"bad\xffutf8\xc3", `"bad\ufffdutf8\ufffd"`, "bad\uFFFDutf8\uFFFD"},
		{"\xed\xa0\x80", `"\ufffd\ufffd\ufffd"`, "\uFFFD\uFFFD\uFFFD"}, // encoded surrogate: invalid UTF-8
	}
	for _, tt := range tests {
		got := appendString(nil, []byte(tt.in))
		if string(got) != tt.want {
			t.Errorf("appendString(%q) = %s, want %s", tt.in, got, tt.want)
		}
		if s := string(appendString(nil, tt.in)); s != tt.want {
			t.Errorf("appendString(string %q) = %s, want %s", tt.in, s, tt.want)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != tt.back {
			t.Errorf("json.Unmarshal(%s) = %q, %v; want %q", got, back, err, tt.back)
		}
	}
}

func TestEncodeError(t *testing.T) {
	got := EncodeError("input \"x\": bad\ndata")
	if want := `{"error":"input \"x\": bad\ndata"}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	var v struct{ Error string }
	if err := json.Unmarshal(got, &v); err != nil || v.Error != "input \"x\": bad\ndata" {
		t.Errorf("does not read back: %v %q", err, v.Error)
	}
}

// responseAsRequest turns an encoded response into a request whose inputs are its outputs: the
// output objects have exactly the fields of an input. It cuts the outputs array out of the bytes
// rather than going through encoding/json, which does not read NaN.
func responseAsRequest(t *testing.T, resp []byte) []byte {
	t.Helper()
	i := bytes.Index(resp, []byte(`"outputs":`))
	if i < 0 || !bytes.HasSuffix(resp, []byte("]}")) {
		t.Fatalf("unexpected response layout: %s", resp)
	}
	return []byte(`{"inputs":` + string(resp[i+len(`"outputs":`):len(resp)-1]) + `}`)
}

func TestRoundTrip(t *testing.T) {
	outputs := []tensor.Tensor{
		{Name: "bool", DataType: tensor.Bool, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "u8", DataType: tensor.Uint8, Shape: []int64{3}, Data: []byte{0, 1, 255}},
		{Name: "u16", DataType: tensor.Uint16, Shape: []int64{2}, Data: u16s(7, 65535)},
		{Name: "u32", DataType: tensor.Uint32, Shape: []int64{2}, Data: u32s(7, math.MaxUint32)},
		{Name: "u64", DataType: tensor.Uint64, Shape: []int64{2}, Data: u64s(7, math.MaxUint64)},
		{Name: "i8", DataType: tensor.Int8, Shape: []int64{2}, Data: []byte{0x80, 0x7f}},
		{Name: "i16", DataType: tensor.Int16, Shape: []int64{2}, Data: i16s(-300, 300)},
		{Name: "i32", DataType: tensor.Int32, Shape: []int64{1, 2}, Data: i32s(math.MinInt32, 1)},
		{Name: "i64", DataType: tensor.Int64, Shape: []int64{}, Data: i64s(math.MinInt64)},
		tensor.FromFloat32s("f32", []int64{2, 3}, []float32{0.1, -3.4028235e38, 1e-45, 16777215,
			float32(math.Inf(1)), float32(math.Inf(-1))}),
		{Name: "f64", DataType: tensor.FP64, Shape: []int64{4},
			Data: f64s(0.1, math.SmallestNonzeroFloat64, -math.MaxFloat64, math.Inf(-1))},
		{Name: "bytes", DataType: tensor.Bytes, Shape: []int64{3},
			Strings: [][]byte{[]byte(""), []byte("tab\tquote\"é😀"), []byte("\x00\u2028")}},
		{Name: "empty", DataType: tensor.FP32, Shape: []int64{0}, Data: []byte{}},
	}
	body := encodeJSON(t, nil, &InferResponse{ModelName: "m", ModelVersion: "1", Outputs: outputs})
	req, err := decodeRequest(responseAsRequest(t, body))
	if err != nil {
		t.Fatalf("decoding the encoded outputs: %v\n%s", err, body)
	}
	for i, want := range outputs {
		got := req.Inputs[i].Tensor
		if got.Name != want.Name || got.DataType != want.DataType || !reflect.DeepEqual(got.Shape, want.Shape) ||
			!bytes.Equal(got.Data, want.Data) || !reflect.DeepEqual(got.Strings, want.Strings) {
			t.Errorf("%s: got %+v, want %+v", want.Name, got, want)
		}
	}

	// NaN has many bit patterns; check that it survives as a NaN.
	nan := tensor.FromFloat32s("nan", []int64{1}, []float32{float32(math.NaN())})
	body = encodeJSON(t, nil, &InferResponse{Outputs: []tensor.Tensor{nan}})
	req, err = decodeRequest(responseAsRequest(t, body))
	if err != nil || !math.IsNaN(float64(req.Inputs[0].Tensor.Float32s()[0])) {
		t.Errorf("NaN round trip: %v %v", err, req)
	}
}

func TestMetadataJSON(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{ServerMetadata{Name: "inferd", Version: "0.1"}, `{"name":"inferd","version":"0.1","extensions":[]}`},
		{ServerMetadata{Name: "inferd", Version: "0.1", Extensions: []string{"binary_tensor_data"}},
			`{"name":"inferd","version":"0.1","extensions":["binary_tensor_data"]}`},
		{ModelMetadata{Name: "m", Platform: "onnxruntime_onnx"},
			`{"name":"m","versions":[],"platform":"onnxruntime_onnx","inputs":[],"outputs":[]}`},
		{ModelMetadata{Name: "m", Versions: []string{"1", "2"}, Platform: "onnxruntime_onnx",
			Inputs:  []TensorMetadata{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 3}}},
			Outputs: []TensorMetadata{{Name: "y", Datatype: "INT64"}}},
			`{"name":"m","versions":["1","2"],"platform":"onnxruntime_onnx",` +
				`"inputs":[{"name":"x","datatype":"FP32","shape":[-1,3]}],"outputs":[{"name":"y","datatype":"INT64","shape":[]}]}`},
		{&ModelMetadata{Name: "p"}, `{"name":"p","versions":[],"platform":"","inputs":[],"outputs":[]}`},
		{ModelReady{Name: "m", Ready: true}, `{"name":"m","ready":true}`},
		{[]RepositoryIndexEntry{{Name: "a", Version: "1", State: "READY"}, {Name: "b", State: "UNAVAILABLE", Reason: "bad model"}},
			`[{"name":"a","version":"1","state":"READY"},{"name":"b","state":"UNAVAILABLE","reason":"bad model"}]`},
	}
	for _, tt := range tests {
		got, err := json.Marshal(tt.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

func TestEncodeAllocations(t *testing.T) {
	r := &InferResponse{ModelName: "m", ModelVersion: "1",
		Outputs: []tensor.Tensor{tensor.FromFloat32s("y", []int64{64, 10}, make([]float32, 640))}}
	buf := make([]byte, 0, 64<<10)
	if n := testing.AllocsPerRun(10, func() { buf, _ = ResponseParts(buf[:0], r) }); n != 0 {
		t.Errorf("ResponseParts into a large enough buffer allocates %v times, want 0", n)
	}
}
