package kserve

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/inferd/inferd/tensor"
)

// Little-endian encoders for expected data, written independently of the decoder.

func u16s(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func u32s(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, x)
	}
	return b
}

func u64s(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

func i16s(v ...int16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, uint16(x))
	}
	return b
}

func i32s(v ...int32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func i64s(v ...int64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}

func f32s(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func f64s(v ...float64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func oneInput(name, dt, shape, data string) string {
	return `{"inputs":[{"name":"` + name + `","datatype":"` + dt + `","shape":` + shape + `,"data":` + data + `}]}`
}

func decodeOne(t *testing.T, body string) tensor.Tensor {
	t.Helper()
	req, err := decodeRequest([]byte(body))
	if err != nil {
		t.Fatalf("decodeRequest(%s): %v", body, err)
	}
	if len(req.Inputs) != 1 {
		t.Fatalf("got %d inputs, want 1", len(req.Inputs))
	}
	in := req.Inputs[0].Tensor
	if err := in.Check(); err != nil {
		t.Fatalf("decoded tensor fails Check: %v", err)
	}
	return in
}

func TestDecodeDatatypes(t *testing.T) {
	tests := []struct {
		dt    string
		shape string
		data  string
		want  []byte
	}{
		{"BOOL", "[4]", `[true,false,false,true]`, []byte{1, 0, 0, 1}},
		{"UINT8", "[3]", `[0,7,255]`, []byte{0, 7, 255}},
		{"UINT16", "[3]", `[0,258,65535]`, u16s(0, 258, 65535)},
		{"UINT32", "[3]", `[0,16909060,4294967295]`, u32s(0, 16909060, 4294967295)},
		{"UINT64", "[3]", `[0,-0,18446744073709551615]`, u64s(0, 0, math.MaxUint64)},
		{"INT8", "[4]", `[-128,-1,0,127]`, []byte{0x80, 0xff, 0, 127}},
		{"INT16", "[3]", `[-32768,-2,32767]`, i16s(-32768, -2, 32767)},
		{"INT32", "[3]", `[-2147483648,5,2147483647]`, i32s(math.MinInt32, 5, math.MaxInt32)},
		{"INT64", "[3]", `[-9223372036854775808,0,9223372036854775807]`, i64s(math.MinInt64, 0, math.MaxInt64)},
		{"FP32", "[6]", `[1.5,-0.1,3e-3,1E2,0,-0]`, f32s(1.5, -0.1, 3e-3, 100, 0, float32(math.Copysign(0, -1)))},
		{"FP32", "[2]", `[3.4028235e38,1e-50]`, f32s(math.MaxFloat32, 0)},
		{"FP32", "[1]", `[16777217]`, f32s(16777216)}, // rounds to nearest float32
		{"FP64", "[4]", `[0.1,-2.5e-300,1.7976931348623157e308,123456789012345678]`,
			f64s(0.1, -2.5e-300, math.MaxFloat64, 123456789012345678)},
		{"FP64", "[5]", `[NaN,Infinity,-Infinity,Inf,-Inf]`,
			f64s(math.NaN(), math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1))},
		{"FP32", "[3]", ` [ NaN , Infinity , -Infinity ] `,
			f32s(float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)))},
	}
	for _, tt := range tests {
		t.Run(tt.dt+tt.data, func(t *testing.T) {
			got := decodeOne(t, oneInput("x", tt.dt, tt.shape, tt.data))
			if got.DataType != tensor.DataType(tt.dt) {
				t.Errorf("datatype %s, want %s", got.DataType, tt.dt)
			}
			if !bytes.Equal(got.Data, tt.want) {
				t.Errorf("data\n got %x\nwant %x", got.Data, tt.want)
			}
		})
	}
}

func TestDecodeBytes(t *testing.T) {
	got := decodeOne(t, oneInput("s", "BYTES", "[2,3]",
		`[["plain","", "esc\"\\\/\b\f\n\r\t"],["\u00e9\u20ac","\ud83d\ude00 raw: é€😀","lone \ud800 x"]]`))
	want := [][]byte{
		[]byte("plain"), {}, []byte("esc\"\\/\b\f\n\r\t"),
		[]byte("é€"), []byte("😀 raw: é€😀"), []byte("lone \uFFFD x"),
	}
	if len(got.Strings) != len(want) {
		t.Fatalf("got %d strings, want %d", len(got.Strings), len(want))
	}
	for i := range want {
		if !bytes.Equal(got.Strings[i], want[i]) {
			t.Errorf("element %d = %q, want %q", i, got.Strings[i], want[i])
		}
	}
	// Elements share one buffer but must not overwrite each other when appended to.
	_ = append(got.Strings[0], "XYZ"...)
	if string(got.Strings[1]) != "" || string(got.Strings[2][:3]) != "esc" {
		t.Errorf("appending to one element changed the next: %q %q", got.Strings[1], got.Strings[2])
	}
}

func TestDecodeNesting(t *testing.T) {
	want := i32s(1, 2, 3, 4, 5, 6)
	bodies := map[string]string{
		"flat":           oneInput("x", "INT32", "[2,3]", `[1,2,3,4,5,6]`),
		"nested":         oneInput("x", "INT32", "[2,3]", `[[1,2,3],[4,5,6]]`),
		"deeper":         oneInput("x", "INT32", "[2,3]", `[[[1],[2],[3]],[[4],[5],[6]]]`),
		"ragged":         oneInput("x", "INT32", "[2,3]", `[[1,2],[3,4,5,6]]`),
		"mixed":          oneInput("x", "INT32", "[2,3]", `[1,[2,[3,4]],[],5,[[6]]]`),
		"whitespace":     "\n{ \"inputs\" : [ { \"name\" : \"x\" , \"datatype\" : \"INT32\" , \"shape\" : [ 2 , 3 ] , \"data\" : [ [ 1 , 2 , 3 ] ,\r\n\t[ 4 , 5 , 6 ] ] } ] }\n",
		"data first":     `{"inputs":[{"data":[[1,2,3],[4,5,6]],"shape":[2,3],"datatype":"INT32","name":"x"}]}`,
		"data mid":       `{"inputs":[{"datatype":"INT32","data":[1,2,3,4,5,6],"name":"x","shape":[2,3]}]}`,
		"string w/ ]":    `{"inputs":[{"data":[1,2,3,4,5,6],"name":"x","datatype":"INT32","shape":[2,3],"parameters":{"k":"]}"}}]}`,
		"shape last":     `{"inputs":[{"name":"x","datatype":"INT32","data":[1,2,3,4,5,6],"shape":[2,3]}]}`,
		"inputs not 1st": `{"id":"a","outputs":[{"name":"y"}],"inputs":[{"name":"x","datatype":"INT32","shape":[2,3],"data":[1,2,3,4,5,6]}]}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			got := decodeOne(t, body)
			if !bytes.Equal(got.Data, want) || !reflect.DeepEqual(got.Shape, []int64{2, 3}) || got.Name != "x" {
				t.Errorf("got %s %v %x, want x [2 3] %x", got.Name, got.Shape, got.Data, want)
			}
		})
	}
}

func TestDecodeShapes(t *testing.T) {
	tests := []struct {
		shape, data string
		want        []int64
	}{
		{"[]", "[7]", []int64{}},
		{"[0]", "[]", []int64{0}},
		{"[3,0]", "[[],[],[]]", []int64{3, 0}},
		{"[1,1,1]", "[[[7]]]", []int64{1, 1, 1}},
	}
	for _, tt := range tests {
		got := decodeOne(t, oneInput("x", "UINT8", tt.shape, tt.data))
		if !reflect.DeepEqual(got.Shape, tt.want) {
			t.Errorf("shape %s: got %v, want %v", tt.shape, got.Shape, tt.want)
		}
	}
}

func TestDecodeEnvelope(t *testing.T) {
	body := `{
		"id": "req-42",
		"parameters": {"priority": 1, "timeout": 5000, "binary_data_output": false, "tag": "a\nb", "nested": {"l": [1, null, true]}},
		"inputs": [
			{"name": "a", "datatype": "FP32", "shape": [1], "data": [1], "parameters": {"k": "v"}},
			{"name": "b", "datatype": "BYTES", "shape": [1], "data": ["z"], "parameters": null}
		],
		"outputs": [{"name": "y", "parameters": {"binary_data": true}}, {"name": "z"}]
	}`
	req, err := decodeRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := &InferRequest{
		ID: "req-42",
		Parameters: map[string]any{
			"priority": 1.0, "timeout": 5000.0, "binary_data_output": false, "tag": "a\nb",
			"nested": map[string]any{"l": []any{1.0, nil, true}},
		},
		Inputs: []Input{
			{Tensor: tensor.Tensor{Name: "a", DataType: tensor.FP32, Shape: []int64{1}, Data: f32s(1)},
				Parameters: map[string]any{"k": "v"}},
			{Tensor: tensor.Tensor{Name: "b", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("z")}}},
		},
		Outputs: []RequestedOutput{{Name: "y", Parameters: map[string]any{"binary_data": true}}, {Name: "z"}},
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("got  %+v\nwant %+v", req, want)
	}

	// Optional fields given as null are absent.
	req, err = decodeRequest([]byte(`{"id":null,"parameters":null,"outputs":null,"inputs":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if req.ID != "" || req.Parameters != nil || req.Outputs != nil || len(req.Inputs) != 0 {
		t.Errorf("nulls: got %+v", req)
	}
}

func TestDecodeErrors(t *testing.T) {
	deep := strings.Repeat("[", 70) + "1" + strings.Repeat("]", 70)
	deepParam := `{"parameters":{"a":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `},"inputs":[]}`
	tests := []struct {
		name string
		body string
		want []string // substrings of the message
		also error    // another sentinel the error must wrap
	}{
		// Malformed JSON, with offsets.
		{"empty body", ``, []string{"malformed JSON", "offset 0"}, nil},
		{"not an object", `[1]`, []string{"offset 0", "expected the request object", "an array"}, nil},
		{"truncated", `{"inputs":[{"name":"x"`, []string{"malformed JSON", "end of input", "offset 22"}, nil},
		{"trailing garbage", `{"inputs":[]} x`, []string{"offset 14", "after the request object"}, nil},
		{"two objects", `{"inputs":[]}{}`, []string{"offset 13"}, nil},
		{"missing colon", `{"inputs" []}`, []string{"offset 10", "':'"}, nil},
		{"missing comma", `{"id":"a" "inputs":[]}`, []string{"offset 10", "',' or '}'"}, nil},
		{"trailing comma", `{"inputs":[],}`, []string{"offset 13", "object key"}, nil},
		{"unquoted key", `{inputs:[]}`, []string{"offset 1", "object key"}, nil},
		{"bad escape", `{"id":"a\x","inputs":[]}`, []string{"invalid escape", "offset 8"}, nil},
		{"short unicode escape", `{"id":"\u12","inputs":[]}`, []string{"4 hex digits"}, nil},
		{"raw control char", "{\"id\":\"a\nb\",\"inputs\":[]}", []string{"control character", "offset 8"}, nil},
		{"invalid utf-8", "{\"id\":\"a\xffb\",\"inputs\":[]}", []string{"invalid UTF-8", "offset 8"}, nil},
		{"unterminated string", `{"id":"abc`, []string{"unterminated string", "offset 6"}, nil},
		{"bad literal", `{"id":nul,"inputs":[]}`, []string{"offset 6", "expected a JSON value"}, nil},
		{"bad literal in params", `{"parameters":{"a":tru},"inputs":[]}`, []string{"offset 19", "expected a JSON value"}, nil},
		{"bad number in params", `{"parameters":{"a":01},"inputs":[]}`, []string{"offset 20"}, nil},
		{"number out of range in params", `{"parameters":{"a":1e999},"inputs":[]}`, []string{"out of range"}, nil},
		{"deep data", oneInput("x", "FP32", "[1]", deep), []string{"nesting deeper than 64"}, nil},
		{"deep parameters", deepParam, []string{"nesting deeper than 64"}, nil},

		// Envelope.
		{"inputs missing", `{"id":"a"}`, []string{`missing "inputs"`}, nil},
		{"inputs null", `{"inputs":null}`, []string{`"inputs" must be an array`, "null"}, nil},
		{"inputs object", `{"inputs":{}}`, []string{`"inputs" must be an array`, "an object"}, nil},
		{"input not object", `{"inputs":[1]}`, []string{"inputs[0] must be an object"}, nil},
		{"unknown top-level", `{"inputs":[],"model_name":"m"}`, []string{`unknown field "model_name"`}, nil},
		{"duplicate top-level", `{"inputs":[],"inputs":[]}`, []string{`duplicate field "inputs"`}, nil},
		{"id number", `{"id":42,"inputs":[]}`, []string{`"id" must be a string`, "a number"}, nil},
		{"parameters array", `{"parameters":[],"inputs":[]}`, []string{`"parameters" must be an object`}, nil},
		{"parameters duplicate key", `{"parameters":{"a":1,"a":2},"inputs":[]}`, []string{`duplicate key "a"`}, nil},
		{"outputs object", `{"inputs":[],"outputs":{}}`, []string{`"outputs" must be an array`}, nil},
		{"output not object", `{"inputs":[],"outputs":["y"]}`, []string{"outputs[0] must be an object"}, nil},
		{"output no name", `{"inputs":[],"outputs":[{}]}`, []string{`outputs[0]: missing "name"`}, nil},
		{"output unknown field", `{"inputs":[],"outputs":[{"name":"y","data":[]}]}`, []string{`output "y"`, `unknown field "data"`}, nil},
		{"output params type", `{"inputs":[],"outputs":[{"name":"y","parameters":3}]}`, []string{`output "y"`, `"parameters" must be an object`}, nil},

		// Input fields.
		{"no name", `{"inputs":[{"datatype":"FP32","shape":[1],"data":[1]}]}`, []string{`inputs[0]: missing "name"`}, nil},
		{"empty name", oneInput("", "FP32", "[1]", "[1]"), []string{`inputs[0]: "name" must not be empty`}, nil},
		{"name number", `{"inputs":[{"name":1}]}`, []string{`inputs[0]: "name" must be a string`}, nil},
		{"no shape", `{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}`, []string{`input "x": missing "shape"`}, nil},
		{"no datatype", `{"inputs":[{"name":"x","shape":[1],"data":[1]}]}`, []string{`input "x": missing "datatype"`}, nil},
		{"no data", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}`, []string{`input "x": missing "data"`}, nil},
		{"unknown datatype", oneInput("x", "FLOAT", "[1]", "[1]"), []string{`input "x"`, `unknown datatype "FLOAT"`}, tensor.ErrUnknownDataType},
		{"datatype lowercase", oneInput("x", "fp32", "[1]", "[1]"), []string{`unknown datatype "fp32"`}, tensor.ErrUnknownDataType},
		{"unknown input field", `{"inputs":[{"name":"x","datatyp":"FP32"}]}`, []string{`input "x"`, `unknown field "datatyp"`}, nil},
		{"duplicate input field", `{"inputs":[{"name":"x","shape":[1],"shape":[1]}]}`, []string{`input "x": duplicate field "shape"`}, nil},

		// Shapes.
		{"shape not array", oneInput("x", "FP32", "2", "[1,2]"), []string{`input "x": "shape" must be an array`}, nil},
		{"shape string dim", oneInput("x", "FP32", `["2"]`, "[1,2]"), []string{`input "x": "shape"[0] must be an integer`}, nil},
		{"shape float dim", oneInput("x", "FP32", `[2.0]`, "[1,2]"), []string{`"shape"[0] = 2.0 is not a 64-bit integer`}, nil},
		{"shape huge dim", oneInput("x", "FP32", `[99999999999999999999]`, "[1]"), []string{`is not a 64-bit integer`}, nil},
		{"negative dim", oneInput("x", "FP32", "[2,-1]", "[1,2]"), []string{`input "x"`, "negative dimension -1"}, tensor.ErrShape},
		{"shape overflow", oneInput("x", "FP32", "[4294967296,4294967296]", "[1]"), []string{`input "x"`, "more than"}, tensor.ErrShape},
		{"shape overflow int64", oneInput("x", "FP32", "[9223372036854775807,9223372036854775807,4]", "[1]"), []string{`input "x"`}, tensor.ErrShape},

		// Data shape and type.
		{"data not array", oneInput("x", "FP32", "[1]", "1"), []string{`input "x": "data" must be an array`, "a number"}, nil},
		{"data object", oneInput("x", "FP32", "[1]", "{}"), []string{`input "x": "data" must be an array`}, nil},
		{"deferred data not array", `{"inputs":[{"data":"abc","name":"x"}]}`, []string{`"data" must be an array`, "a string"}, nil},
		{"too few", oneInput("x", "FP32", "[2,2]", "[1,2,3]"), []string{`input "x"`, "shape [2,2] needs 4 elements", "has 3"}, tensor.ErrDataSize},
		{"too many nested", oneInput("x", "FP32", "[2,2]", "[[1,2],[3,4],[5]]"), []string{`input "x"`, "needs 4 elements", "has 5"}, tensor.ErrDataSize},
		{"scalar needs one", oneInput("x", "INT64", "[]", "[]"), []string{"needs 1 elements", "has 0"}, tensor.ErrDataSize},
		{"string in FP32", oneInput("x", "FP32", "[2]", `[1,"2"]`), []string{`input "x"`, "element 1", "expected a number for FP32", "a string"}, nil},
		{"bool in FP64", oneInput("x", "FP64", "[1]", `[true]`), []string{"element 0", "expected a number for FP64", "a boolean"}, nil},
		{"null in FP32", oneInput("x", "FP32", "[1]", `[null]`), []string{"expected a number for FP32", "null"}, nil},
		{"object in data", oneInput("x", "FP32", "[1]", `[{}]`), []string{"expected a number for FP32", "an object"}, nil},
		{"FP32 out of range", oneInput("x", "FP32", "[2]", `[1,1e39]`), []string{"element 1", "1e39 is out of range for FP32"}, nil},
		{"FP64 out of range", oneInput("x", "FP64", "[1]", `[-1e309]`), []string{"-1e309 is out of range for FP64"}, nil},
		{"NaN in INT32", oneInput("x", "INT32", "[1]", `[NaN]`), []string{"expected an integer for INT32"}, nil},
		{"nan lowercase", oneInput("x", "FP32", "[1]", `[nan]`), []string{"expected a number for FP32"}, nil},
		{"malformed number", oneInput("x", "FP32", "[1]", `[1.]`), []string{`input "x"`, "element 0", "malformed number"}, nil},
		{"leading plus", oneInput("x", "FP32", "[1]", `[+1]`), []string{"expected a number for FP32"}, nil},
		{"leading zero", oneInput("x", "FP32", "[1]", `[01]`), []string{`input "x"`, "expected ',' or ']'"}, nil},
		{"hex", oneInput("x", "INT32", "[1]", `[0x10]`), []string{`input "x"`, "expected ',' or ']'"}, nil},
		{"number in BOOL", oneInput("x", "BOOL", "[2]", `[true,1]`), []string{"element 1", "expected true or false for BOOL", "a number"}, nil},
		{"string in BOOL", oneInput("x", "BOOL", "[1]", `["true"]`), []string{"expected true or false for BOOL"}, nil},
		{"float in UINT8", oneInput("x", "UINT8", "[2]", `[1,1.5]`), []string{`input "x"`, "element 1", "1.5 is not an integer"}, nil},
		{"1.0 in INT32", oneInput("x", "INT32", "[1]", `[1.0]`), []string{"1.0 is not an integer"}, nil},
		{"exponent in INT64", oneInput("x", "INT64", "[1]", `[1e2]`), []string{"1e2 is not an integer"}, nil},
		{"300 in UINT8", oneInput("x", "UINT8", "[1]", `[300]`), []string{"300 is out of range for UINT8 [0, 255]"}, nil},
		{"128 in INT8", oneInput("x", "INT8", "[1]", `[128]`), []string{"128 is out of range for INT8 [-128, 127]"}, nil},
		{"-129 in INT8", oneInput("x", "INT8", "[1]", `[-129]`), []string{"-129 is out of range for INT8"}, nil},
		{"65536 in UINT16", oneInput("x", "UINT16", "[1]", `[65536]`), []string{"out of range for UINT16"}, nil},
		{"-32769 in INT16", oneInput("x", "INT16", "[1]", `[-32769]`), []string{"out of range for INT16"}, nil},
		{"2^32 in UINT32", oneInput("x", "UINT32", "[1]", `[4294967296]`), []string{"out of range for UINT32"}, nil},
		{"2^31 in INT32", oneInput("x", "INT32", "[1]", `[2147483648]`), []string{"out of range for INT32"}, nil},
		{"2^64 in UINT64", oneInput("x", "UINT64", "[1]", `[18446744073709551616]`), []string{"out of range for UINT64"}, nil},
		{"-2^63-1 in INT64", oneInput("x", "INT64", "[1]", `[-9223372036854775809]`), []string{"out of range for INT64"}, nil},
		{"huge in INT64", oneInput("x", "INT64", "[1]", `[123456789012345678901234567890]`), []string{"out of range for INT64"}, nil},
		{"negative in UINT8", oneInput("x", "UINT8", "[1]", `[-1]`), []string{"-1 is negative, UINT8 is unsigned"}, nil},
		{"negative in UINT64", oneInput("x", "UINT64", "[1]", `[-5]`), []string{"-5 is negative, UINT64 is unsigned"}, nil},
		{"string in INT32", oneInput("x", "INT32", "[1]", `["1"]`), []string{"expected an integer for INT32", "a string"}, nil},
		{"number in BYTES", oneInput("x", "BYTES", "[1]", `[1]`), []string{"expected a string for BYTES", "a number"}, nil},
		{"bad utf-8 in BYTES", oneInput("x", "BYTES", "[1]", "[\"\xc3\x28\"]"), []string{`input "x"`, "element 0", "invalid UTF-8"}, nil},
		{"FP16 as JSON", oneInput("x", "FP16", "[1]", `[1.5]`), []string{`input "x"`, "FP16", "binary only"}, nil},
		{"BF16 as JSON", oneInput("x", "BF16", "[1]", `[1.5]`), []string{`input "x"`, "BF16", "binary only"}, nil},
		{"data trailing comma", oneInput("x", "FP32", "[2]", `[1,2,]`), []string{"element 2", "expected a number"}, nil},
		{"data leading comma", oneInput("x", "FP32", "[1]", `[,1]`), []string{"element 0", "expected a number"}, nil},
		{"data mismatched bracket", oneInput("x", "FP32", "[2]", `[[1,2}]`), []string{`input "x"`, "expected ',' or ']'", "'}'"}, nil},
		{"data unterminated", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2`, []string{`input "x"`, "end of input"}, nil},
		{"deferred data unterminated", `{"inputs":[{"data":[1,2`, []string{"unterminated \"data\""}, nil},
		{"deferred data error", `{"inputs":[{"data":[1,"a"],"name":"x","datatype":"FP32","shape":[2]}]}`, []string{`input "x"`, "element 1", "a string"}, nil},

		// Binary extension, not supported without the header.
		{"binary data", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}}]}`,
			[]string{`input "x"`, "binary_data_size=8", "Inference-Header-Content-Length"}, nil},
		{"binary and data", `{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`,
			[]string{`input "x": has both "data" and parameters.binary_data_size`}, nil},
		{"binary size wrong", `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":7}}]}`,
			[]string{`input "x"`, "binary_data_size is 7 bytes", "needs 8"}, tensor.ErrDataSize},
		{"binary size negative", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":-1}}]}`,
			[]string{`input "x": parameters.binary_data_size must be a non-negative integer`}, nil},
		{"binary size string", `{"inputs":[{"name":"x","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":"8"}}]}`,
			[]string{"binary_data_size must be a non-negative integer"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := decodeRequest([]byte(tt.body))
			if err == nil {
				t.Fatalf("decodeRequest(%s) = %+v, want an error", tt.body, req)
			}
			t.Log(err)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("error %q does not wrap ErrInvalidRequest", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Errorf("error %q does not wrap %v", err, tt.also)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestDecodeBinaryHeader checks the seam the binary extension will use: the JSON part of a body
// with binary inputs decodes, and reports which inputs wait for binary data.
func TestDecodeBinaryHeader(t *testing.T) {
	body := `{"inputs":[{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},` +
		`{"name":"b","datatype":"INT8","shape":[1],"data":[3]},` +
		`{"name":"c","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":9}}]}`
	d := &decoder{}
	var req *InferRequest
	pending, err := d.parseBody(newWire([][]byte{[]byte(body)}), len(body), func() (p []binaryInput, err error) {
		req, p, err = d.request()
		return p, err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []binaryInput{{index: 0, size: 8, label: `input "a"`}, {index: 2, size: 9, label: `input "c"`}}
	if !reflect.DeepEqual(pending, want) {
		t.Errorf("pending = %+v, want %+v", pending, want)
	}
	if len(req.Inputs) != 3 || !bytes.Equal(req.Inputs[1].Tensor.Data, []byte{3}) {
		t.Errorf("inputs = %+v", req.Inputs)
	}
}

// TestDecodeHugeShapeSmallBody makes sure a declared shape does not size allocations.
func TestDecodeHugeShapeSmallBody(t *testing.T) {
	body := []byte(oneInput("x", "FP64", "[1099511627776]", "[1,2,3]"))
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := decodeRequest(body); !errors.Is(err, tensor.ErrDataSize) {
			t.Fatalf("err = %v, want ErrDataSize", err)
		}
	})
	_ = allocs // the run itself would fail (out of memory) if the shape sized the buffer
}

// TestDecodeLeavesNamesToTheModel checks that a name given twice is no wire error: whether a
// model takes it is models.Version.CheckRequest's to say, with the model's names at hand.
func TestDecodeLeavesNamesToTheModel(t *testing.T) {
	x := `{"name":"x","datatype":"FP32","shape":[1],"data":[1]}`
	req, err := decodeRequest([]byte(`{"inputs":[` + x + `,` + x + `],"outputs":[{"name":"y"},{"name":"y"}]}`))
	if err != nil || len(req.Inputs) != 2 || len(req.Outputs) != 2 {
		t.Fatalf("decodeRequest = %+v, %v; want two inputs and two outputs", req, err)
	}
}

// TestBinarySizes checks what a reader learns from the JSON part before the binary data arrives.
func TestBinarySizes(t *testing.T) {
	hdr := `{"inputs":[{"name":"a","datatype":"FP16","shape":[3],"parameters":{"binary_data_size":6}},` +
		`{"name":"b","datatype":"INT8","shape":[1],"data":[3]},` +
		`{"name":"c","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":9}}]}`
	if sizes, ok := BinarySizes([]byte(hdr)); !ok || !reflect.DeepEqual(sizes, []int64{6, 9}) {
		t.Errorf("BinarySizes = %v, %v; want [6 9], true", sizes, ok)
	}
	if sizes, ok := BinarySizes([]byte(hdr[:20])); ok {
		t.Errorf("BinarySizes of a cut header = %v, true; want false", sizes)
	}
}

// TestDecodeParts checks a body read in parts: a tensor within one part aliases it, one split
// across parts is gathered, and offsets in errors count bytes on the wire.
func TestDecodeParts(t *testing.T) {
	hdr := `{"inputs":[{"name":"h","datatype":"FP16","shape":[1],"parameters":{"binary_data_size":2}},` +
		`{"name":"f","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},` +
		`{"name":"g","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`
	f := f32s(1.5, -2)
	parts := [][]byte{[]byte(hdr), {7, 8}, f, {1}, {0}}
	req, err := DecodeLimited(parts, len(hdr), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Inputs[1].Tensor.Data; &got[0] != &f[0] || cap(got) != len(f) {
		t.Error("a tensor within one part was copied or not capped")
	}
	if got := req.Inputs[2].Tensor.Data; !bytes.Equal(got, []byte{1, 0}) {
		t.Errorf("a tensor split across parts: %v, want [1 0]", got)
	}
	parts[4] = []byte{2}
	_, err = DecodeLimited(parts, len(hdr), Limits{})
	if want := fmt.Sprintf("(body offset %d)", len(hdr)+11); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one that says %s", err, want)
	}
}
