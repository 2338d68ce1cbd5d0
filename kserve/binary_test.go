package kserve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/inferd/inferd/tensor"
)

// allTypes returns one tensor of every datatype, with edge values, built with encoding/binary
// and math rather than with the package's own helpers.
func allTypes() []tensor.Tensor {
	return []tensor.Tensor{
		{Name: "bool", DataType: tensor.Bool, Shape: []int64{2, 2}, Data: []byte{1, 0, 0, 1}},
		{Name: "u8", DataType: tensor.Uint8, Shape: []int64{3}, Data: []byte{0, 1, 255}},
		{Name: "u16", DataType: tensor.Uint16, Shape: []int64{2}, Data: u16s(7, math.MaxUint16)},
		{Name: "u32", DataType: tensor.Uint32, Shape: []int64{2}, Data: u32s(7, math.MaxUint32)},
		{Name: "u64", DataType: tensor.Uint64, Shape: []int64{2}, Data: u64s(7, math.MaxUint64)},
		{Name: "i8", DataType: tensor.Int8, Shape: []int64{2}, Data: []byte{0x80, 0x7f}},
		{Name: "i16", DataType: tensor.Int16, Shape: []int64{2}, Data: i16s(math.MinInt16, math.MaxInt16)},
		{Name: "i32", DataType: tensor.Int32, Shape: []int64{1, 2}, Data: i32s(math.MinInt32, -1)},
		{Name: "i64", DataType: tensor.Int64, Shape: []int64{}, Data: i64s(math.MinInt64)},
		// FP16: 1, -2, 65504 (max), the smallest subnormal, +Inf, a NaN with a payload.
		{Name: "f16", DataType: tensor.FP16, Shape: []int64{6}, Data: u16s(0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e01)},
		// BF16: 1, -0, the largest finite, a NaN.
		{Name: "bf16", DataType: tensor.BF16, Shape: []int64{2, 2}, Data: u16s(0x3f80, 0x8000, 0x7f7f, 0x7fc1)},
		{Name: "f32", DataType: tensor.FP32, Shape: []int64{2, 3}, Data: f32s(0.1, -math.MaxFloat32, math.SmallestNonzeroFloat32,
			float32(math.Inf(-1)), math.Float32frombits(0x7fc00123), float32(math.Copysign(0, -1)))},
		{Name: "f64", DataType: tensor.FP64, Shape: []int64{3}, Data: f64s(0.1, math.SmallestNonzeroFloat64,
			math.Float64frombits(0xfff8000000000abc))},
		{Name: "bytes", DataType: tensor.Bytes, Shape: []int64{2, 2},
			Strings: [][]byte{{}, {0x00}, []byte("tab\t\"é"), {0xff, 0x00, 0xfe}}},
		{Name: "empty", DataType: tensor.FP32, Shape: []int64{0, 4}, Data: []byte{}},
		{Name: "empty_bytes", DataType: tensor.Bytes, Shape: []int64{0}, Strings: [][]byte{}},
	}
}

// wireSize is the binary_data_size of t, computed independently of binaryLen.
func wireSize(t *tensor.Tensor) int {
	if t.DataType != tensor.Bytes {
		n := int64(1)
		for _, d := range t.Shape {
			n *= d
		}
		return int(n) * t.DataType.Size()
	}
	n := 0
	for _, s := range t.Strings {
		n += 4 + len(s)
	}
	return n
}

// wireBytes is the binary form of t, written with encoding/binary.
func wireBytes(t *tensor.Tensor) []byte {
	if t.DataType != tensor.Bytes {
		return t.Data
	}
	var b []byte
	for _, s := range t.Strings {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// sameTensor reports how got differs from want, bit for bit.
func sameTensor(got, want tensor.Tensor) string {
	switch {
	case got.Name != want.Name || got.DataType != want.DataType:
		return "name or datatype: got " + got.Name + " " + string(got.DataType)
	case !reflect.DeepEqual(got.Shape, want.Shape) && len(got.Shape)+len(want.Shape) > 0:
		return "shape"
	case !bytes.Equal(got.Data, want.Data):
		return "data"
	case len(got.Strings) != len(want.Strings):
		return "element count"
	}
	for i := range want.Strings {
		if !bytes.Equal(got.Strings[i], want.Strings[i]) {
			return "BYTES element"
		}
	}
	return ""
}

func TestBinaryRequestRoundTrip(t *testing.T) {
	tensors := allTypes()
	req := &InferRequest{ID: "r1", Parameters: map[string]any{"priority": 1.0},
		Outputs: []RequestedOutput{{Name: "y", Parameters: map[string]any{"binary_data": false}}}}
	for _, tt := range tensors {
		// A stale binary_data_size of the caller's must not reach the wire.
		req.Inputs = append(req.Inputs, Input{Tensor: tt, Parameters: map[string]any{"k": "v", "binary_data_size": 1.0}})
	}
	body, headerLength := EncodeRequest([]byte("prefix"), req, true)
	if !bytes.HasPrefix(body, []byte("prefix")) {
		t.Fatalf("dst's content was not kept")
	}
	body = body[len("prefix"):]
	var wantBin []byte
	for i := range tensors {
		wantBin = append(wantBin, wireBytes(&tensors[i])...)
	}
	if headerLength < 0 || !bytes.Equal(body[headerLength:], wantBin) {
		t.Fatalf("headerLength %d; binary part\n got %x\nwant %x", headerLength, body[max(headerLength, 0):], wantBin)
	}
	if !json.Valid(body[:headerLength]) {
		t.Fatalf("JSON part is not valid JSON: %s", body[:headerLength])
	}

	got, err := decode(body, headerLength)
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, body[:headerLength])
	}
	if got.ID != "r1" || got.Parameters["priority"] != 1.0 || got.Parameters["binary_data_output"] != true {
		t.Errorf("envelope: id %q, parameters %v", got.ID, got.Parameters)
	}
	if !reflect.DeepEqual(got.Outputs, req.Outputs) {
		t.Errorf("outputs %+v, want %+v", got.Outputs, req.Outputs)
	}
	if len(got.Inputs) != len(tensors) {
		t.Fatalf("%d inputs, want %d", len(got.Inputs), len(tensors))
	}
	for i, want := range tensors {
		in := got.Inputs[i]
		if diff := sameTensor(in.Tensor, want); diff != "" {
			t.Errorf("%s: %s differs: got %+v, want %+v", want.Name, diff, in.Tensor, want)
		}
		if size := in.Parameters["binary_data_size"]; size != float64(wireSize(&want)) || in.Parameters["k"] != "v" {
			t.Errorf("%s: parameters %v, want binary_data_size %d and k", want.Name, in.Parameters, wireSize(&want))
		}
	}
}

func TestBinaryResponseRoundTrip(t *testing.T) {
	tensors := allTypes()
	all := make([]bool, len(tensors))
	some := make([]bool, len(tensors))
	for i := range all {
		all[i] = true
		some[i] = i%2 == 0
	}
	for name, bin := range map[string][]bool{"all binary": all, "every other binary": some} {
		t.Run(name, func(t *testing.T) {
			resp := &InferResponse{ModelName: "m", ModelVersion: "2", ID: "r", Parameters: map[string]any{"p": "q"},
				Outputs: tensors, Binary: bin}
			body, headerLength := encodeResponse([]byte("prefix"), resp)
			body = body[len("prefix"):]
			var wantBin []byte
			for i := range tensors {
				if bin[i] {
					wantBin = append(wantBin, wireBytes(&tensors[i])...)
				}
			}
			if headerLength < 0 || !bytes.Equal(body[headerLength:], wantBin) {
				t.Fatalf("headerLength %d; binary part\n got %x\nwant %x", headerLength, body[max(headerLength, 0):], wantBin)
			}
			// JSON readers parse the header, NaN in JSON data aside.
			var hdr struct {
				Outputs []struct {
					Name       string          `json:"name"`
					Parameters map[string]int  `json:"parameters"`
					Data       json.RawMessage `json:"data"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal([]byte(strings.NewReplacer("-Infinity", "0", "Infinity", "0", "NaN", "0").Replace(string(body[:headerLength]))), &hdr); err != nil {
				t.Fatalf("header %s: %v", body[:headerLength], err)
			}
			for i, o := range hdr.Outputs {
				size, ok := o.Parameters["binary_data_size"]
				if ok != bin[i] || (o.Data != nil) == bin[i] || ok && size != wireSize(&tensors[i]) {
					t.Errorf("%s: parameters %v, data %s; binary %v", o.Name, o.Parameters, o.Data, bin[i])
				}
			}

			got, err := DecodeResponse(body, headerLength)
			if err != nil {
				t.Fatalf("DecodeResponse: %v\n%s", err, body[:headerLength])
			}
			if got.ModelName != "m" || got.ModelVersion != "2" || got.ID != "r" || got.Parameters["p"] != "q" {
				t.Errorf("envelope %+v", got)
			}
			if !reflect.DeepEqual(got.Binary, bin) {
				t.Errorf("Binary %v, want %v", got.Binary, bin)
			}
			for i, want := range tensors {
				g := got.Outputs[i]
				if !bin[i] && (want.DataType == tensor.FP32 || want.DataType == tensor.FP64 ||
					want.DataType == tensor.FP16 || want.DataType == tensor.BF16 || want.DataType == tensor.Bytes) {
					// JSON keeps values, not NaN payloads or invalid UTF-8: see TestResponseJSONFloats.
					if err := g.Check(); err != nil || g.Name != want.Name {
						t.Errorf("%s: %v %+v", want.Name, err, g)
					}
					continue
				}
				if diff := sameTensor(g, want); diff != "" {
					t.Errorf("%s: %s differs: got %+v, want %+v", want.Name, diff, g, want)
				}
			}
		})
	}

	// Without binary outputs the body is the JSON of before.
	body, headerLength := encodeResponse(nil, &InferResponse{ModelName: "m", Outputs: tensors[:1], Binary: []bool{false}})
	if headerLength != -1 || string(body) != `{"model_name":"m","model_version":"","outputs":[{"name":"bool","datatype":"BOOL","shape":[2,2],"data":[true,false,false,true]}]}` {
		t.Errorf("JSON response: %d %s", headerLength, body)
	}
}

// TestResponseJSONFloats checks that FP16 and BF16 outputs written as JSON numbers read back as
// the same bits (for every non-NaN value), and FP32 and FP64 as the same values.
func TestResponseJSONFloats(t *testing.T) {
	var h []byte
	for v := 0; v < 1<<16; v++ {
		if v&0x7c00 == 0x7c00 && v&0x3ff != 0 || v&0x7f80 == 0x7f80 && v&0x7f != 0 {
			continue // NaN in FP16 or in BF16; the same bits serve both tensors
		}
		h = binary.LittleEndian.AppendUint16(h, uint16(v))
	}
	n := int64(len(h) / 2)
	outputs := []tensor.Tensor{
		{Name: "f16", DataType: tensor.FP16, Shape: []int64{n}, Data: h},
		{Name: "bf16", DataType: tensor.BF16, Shape: []int64{n}, Data: h},
		{Name: "f32", DataType: tensor.FP32, Shape: []int64{3}, Data: f32s(0.1, -math.MaxFloat32, math.SmallestNonzeroFloat32)},
		{Name: "f64", DataType: tensor.FP64, Shape: []int64{2}, Data: f64s(0.1, math.SmallestNonzeroFloat64)},
	}
	body := encodeJSON(t, nil, &InferResponse{Outputs: outputs})
	got, err := DecodeResponse(body, -1)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range outputs {
		if diff := sameTensor(got.Outputs[i], want); diff != "" {
			t.Errorf("%s: %s differs", want.Name, diff)
		}
	}
	if got.Binary != nil {
		t.Errorf("Binary = %v for a JSON response", got.Binary)
	}
}

func TestFloat32ToHalf(t *testing.T) {
	// Every half converts to a float32 and back to itself; NaNs stay NaNs.
	for v := 0; v < 1<<16; v++ {
		h := uint16(v)
		got := float32ToHalf(halfToFloat32(h))
		if isNaN := h&0x7c00 == 0x7c00 && h&0x3ff != 0; isNaN {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 || got&0x8000 != h&0x8000 {
				t.Fatalf("NaN %#04x became %#04x", h, got)
			}
			continue
		}
		if got != h {
			t.Fatalf("float32ToHalf(halfToFloat32(%#04x)) = %#04x", h, got)
		}
	}
	// Rounding, checked against the neighbours: the result is nearest, ties to even.
	tests := []struct {
		f    float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3c00},             // halfway between 1 and the next half: to even
		{1 + 3.0/2048, 0x3c02},             // halfway, odd below: up
		{1 + 1.0/2048 + 1.0/65536, 0x3c01}, // just above halfway
		{65504, 0x7bff},
		{65519.99, 0x7bff},    // below halfway to 65536
		{65520, 0x7c00},       // halfway to 2^16, whose mantissa is even: infinity
		{1e10, 0x7c00},        // overflow
		{-1e10, 0xfc00},       // overflow
		{0x1p-24, 0x0001},     // smallest subnormal
		{0x1p-25, 0x0000},     // half of it: to even (zero)
		{0x1.8p-25, 0x0001},   // above half of it
		{0x3p-25, 0x0002},     // 1.5 subnormal units: to even
		{0x1p-14, 0x0400},     // smallest normal
		{0x1.ffcp-15, 0x0400}, // rounds up from the subnormals to the smallest normal
		{-0x1p-30, 0x8000},    // underflow keeps the sign
		{float32(math.Inf(-1)), 0xfc00},
		{math.SmallestNonzeroFloat32, 0},
	}
	for _, tt := range tests {
		if got := float32ToHalf(tt.f); got != tt.want {
			t.Errorf("float32ToHalf(%v) = %#04x, want %#04x", tt.f, got, tt.want)
		}
	}
}

func TestFloat32ToBF16(t *testing.T) {
	tests := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3f80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // halfway: to even
		{math.Float32frombits(0x3f818000), 0x3f82}, // halfway, odd below: up
		{math.Float32frombits(0x3f808001), 0x3f81},
		{math.MaxFloat32, 0x7f80}, // rounds to infinity
		{float32(math.Copysign(0, -1)), 0x8000},
		{math.Float32frombits(0x7f800001), 0x7fc0}, // a signalling NaN becomes quiet, not infinity
	}
	for _, tt := range tests {
		if got := float32ToBF16(tt.f); got != tt.want {
			t.Errorf("float32ToBF16(%#08x) = %#04x, want %#04x", math.Float32bits(tt.f), got, tt.want)
		}
	}
}

func TestDecodeMixed(t *testing.T) {
	hdr := `{"inputs":[` +
		`{"name":"a","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},` +
		`{"name":"b","datatype":"INT8","shape":[2],"data":[-1,2]},` +
		`{"name":"c","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":11}},` +
		`{"name":"d","datatype":"BYTES","shape":[1],"data":["json"]},` +
		`{"name":"e","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}}` +
		`],"outputs":[{"name":"y"}]}` + " \n\t "
	bin := f32s(1.5, -2)
	bin = append(bin, 1, 0, 0, 0, 'x', 2, 0, 0, 0, 0, 0)
	bin = append(bin, 1, 0, 1)
	body := append([]byte(hdr), bin...)
	req, err := decode(body, len(hdr))
	if err != nil {
		t.Fatal(err)
	}
	want := []tensor.Tensor{
		{Name: "a", DataType: tensor.FP32, Shape: []int64{2}, Data: f32s(1.5, -2)},
		{Name: "b", DataType: tensor.Int8, Shape: []int64{2}, Data: []byte{0xff, 2}},
		{Name: "c", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("x"), {0, 0}}},
		{Name: "d", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("json")}},
		{Name: "e", DataType: tensor.Bool, Shape: []int64{3}, Data: []byte{1, 0, 1}},
	}
	for i, w := range want {
		if diff := sameTensor(req.Inputs[i].Tensor, w); diff != "" {
			t.Errorf("%s: %s differs: %+v", w.Name, diff, req.Inputs[i].Tensor)
		}
	}

	// The header may be given for a body that is all JSON.
	js := oneInput("x", "UINT8", "[1]", "[7]")
	if req, err := decode([]byte(js), len(js)); err != nil || !bytes.Equal(req.Inputs[0].Tensor.Data, []byte{7}) {
		t.Errorf("JSON body with the header: %v", err)
	}
}

// TestDecodeZeroCopy checks that binary data is a capped sub-slice of the body, not a copy.
func TestDecodeZeroCopy(t *testing.T) {
	req := &InferRequest{Inputs: []Input{
		{Tensor: tensor.FromFloat32s("x", []int64{4}, []float32{1, 2, 3, 4})},
		{Tensor: tensor.Tensor{Name: "s", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("ab"), []byte("cd")}}},
		{Tensor: tensor.Tensor{Name: "n", DataType: tensor.Int16, Shape: []int64{1}, Data: i16s(5)}},
	}}
	body, headerLength := EncodeRequest(nil, req, true)
	got, err := decode(body, headerLength)
	if err != nil {
		t.Fatal(err)
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(body)))
	hi := lo + uintptr(len(body))
	within := func(b []byte) bool {
		p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		return p >= lo && p+uintptr(len(b)) <= hi
	}
	x, s, n := got.Inputs[0].Tensor, got.Inputs[1].Tensor, got.Inputs[2].Tensor
	if !within(x.Data) || !within(s.Strings[0]) || !within(s.Strings[1]) || !within(n.Data) {
		t.Fatalf("decoded data does not lie in the body")
	}
	if unsafe.SliceData(x.Data) != &body[headerLength] {
		t.Errorf("FP32 data does not start right after the header")
	}
	// Mutating the body shows through.
	body[headerLength] ^= 0xff
	if x.Data[0] != req.Inputs[0].Tensor.Data[0]^0xff {
		t.Errorf("tensor did not see the body change")
	}
	// Capped: appending to one tensor's data must not overwrite the next one's.
	if cap(x.Data) != len(x.Data) || cap(s.Strings[0]) != len(s.Strings[0]) {
		t.Errorf("capacities %d %d, want %d %d", cap(x.Data), cap(s.Strings[0]), len(x.Data), len(s.Strings[0]))
	}
}

// binBody is a body made of a JSON header and binary bytes, with its header length.
func binBody(hdr string, bin ...byte) ([]byte, int) {
	return append([]byte(hdr), bin...), len(hdr)
}

func TestDecodeBinaryErrors(t *testing.T) {
	fp32 := func(params string) string {
		return `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"parameters":` + params + `}]}`
	}
	strs := func(shape string, size int) string {
		return `{"inputs":[{"name":"s","datatype":"BYTES","shape":` + shape + `,"parameters":{"binary_data_size":` +
			strconv.Itoa(size) + `}}]}`
	}
	eight := make([]byte, 8)
	valid, validLen := binBody(fp32(`{"binary_data_size":8}`), eight...)
	tests := []struct {
		name string
		body []byte
		hdr  int
		want []string
		also error
	}{
		{"header negative", valid, -2, []string{"Inference-Header-Content-Length -2 is negative"}, nil},
		{"header past end", valid, len(valid) + 1, []string{"past the end of the", "body"}, nil},
		{"header cuts the JSON", valid, validLen - 1, []string{"end of input", "first " + strconv.Itoa(validLen-1) + " bytes"}, nil},
		{"header cuts the JSON short", valid, 10, []string{"first 10 bytes"}, nil},
		{"header covers binary", valid, validLen + 2, []string{"does not end with the request object", "offset " + strconv.Itoa(validLen)}, nil},
		{"header zero", valid, 0, []string{"end of input"}, nil},
		{"no header", valid, -1, []string{`input "x"`, "binary_data_size=8", "needs the Inference-Header-Content-Length header"}, nil},
		{"size negative", bb(fp32(`{"binary_data_size":-8}`)), -3, []string{`input "x"`, "must be a non-negative integer"}, nil},
		{"size fraction", bb(fp32(`{"binary_data_size":7.5}`)), -3, []string{`input "x"`, "must be a non-negative integer"}, nil},
		{"size string", bb(fp32(`{"binary_data_size":"8"}`)), -3, []string{`input "x"`, "must be a non-negative integer"}, nil},
		{"size bool", bb(fp32(`{"binary_data_size":true}`)), -3, []string{`input "x"`, "must be a non-negative integer"}, nil},
		{"size null", bb(fp32(`{"binary_data_size":null}`)), -3, []string{`input "x"`, "must be a non-negative integer"}, nil},
		{"size huge", bb(fp32(`{"binary_data_size":1e300}`)), -3, []string{`input "x"`, "must be a non-negative integer"}, nil},
		{"size not shape", bb(fp32(`{"binary_data_size":12}`), 12), -3, []string{`input "x"`, "binary_data_size is 12 bytes", "needs 8"}, tensor.ErrDataSize},
		{"size and data", bb(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1],"parameters":{"binary_data_size":4}}]}`, 4), -3,
			[]string{`input "x": has both "data" and parameters.binary_data_size`}, nil},
		{"too few bytes", bb(fp32(`{"binary_data_size":8}`), 7), -3, []string{`input "x"`, "binary_data_size 8 needs bytes", "7 bytes of binary data"}, nil},
		{"too few for the second", bb(`{"inputs":[{"name":"a","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}},`+
			`{"name":"b","datatype":"INT8","shape":[2],"parameters":{"binary_data_size":2}}]}`, 2), -3, []string{`input "b"`, "needs bytes"}, nil},
		{"extra bytes", bb(fp32(`{"binary_data_size":8}`), 9), -3, []string{"9 bytes follow", "add up to 8", `input "x"`, "1 extra bytes"}, nil},
		{"bytes but no binary input", bb(oneInput("x", "UINT8", "[1]", "[1]"), 3), -3, []string{"3 bytes follow", "no tensor has parameters.binary_data_size"}, nil},
		{"BOOL not 0 or 1", bb(`{"inputs":[{"name":"b","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}}]}`, 1, 0, 2), -4,
			[]string{`input "b"`, "BOOL element 2", "0x02", "must be 0 or 1"}, nil},
		{"BYTES length cut", bb(strs("[1]", 3), 1, 0, 0), -4, []string{`input "s"`, "BYTES element 0", "4-byte length", "runs past"}, nil},
		{"BYTES element cut", bb(strs("[1]", 6), 3, 0, 0, 0, 'a', 'b'), -4, []string{`input "s"`, "BYTES element 0", "length 3", "runs past", "2 bytes left"}, nil},
		{"BYTES huge length", bb(strs("[1]", 4), 0xff, 0xff, 0xff, 0xff), -4, []string{`input "s"`, "length 4294967295", "runs past"}, nil},
		{"BYTES too few elements", bb(strs("[3]", 8), 0, 0, 0, 0, 0, 0, 0, 0), -4, []string{`input "s"`, "needs 3 BYTES elements", "holds 2"}, tensor.ErrDataSize},
		{"BYTES too many elements", bb(strs("[1]", 8), 0, 0, 0, 0, 0, 0, 0, 0), -4, []string{`input "s"`, "needs 1 BYTES elements", "4 bytes of binary data remain"}, tensor.ErrDataSize},
		{"BYTES huge shape", bb(strs("[1099511627776]", 4), 0, 0, 0, 0), -4, []string{`input "s"`, "holds 1"}, tensor.ErrDataSize},
		{"binary_data_output not bool", bb(`{"parameters":{"binary_data_output":1},"inputs":[]}`), -3, []string{"parameters.binary_data_output must be a boolean"}, nil},
		{"binary_data not bool", bb(`{"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":"true"}}]}`), -3,
			[]string{`output "y": parameters.binary_data must be a boolean`}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := tt.hdr
			switch hdr {
			case -3: // the header is everything up to the closing brace of the JSON
				hdr = bytes.LastIndexByte(tt.body, '}') + 1
			case -4:
				hdr = bytes.Index(tt.body, []byte("}}]}")) + 4
			}
			req, err := decode(tt.body, hdr)
			if err == nil {
				t.Fatalf("decode(%q, %d) = %+v, want an error", tt.body, hdr, req)
			}
			t.Log(err)
			if !errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrInvalidResponse) {
				t.Errorf("error %q does not wrap ErrInvalidRequest alone", err)
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

// bb is a body of a JSON header followed by n zero bytes, or by the given bytes when there are
// several.
func bb(hdr string, bin ...byte) []byte {
	if len(bin) == 1 {
		bin = make([]byte, bin[0])
	}
	b, _ := binBody(hdr, bin...)
	return b
}

func TestDecodeResponseErrors(t *testing.T) {
	out := func(params string) string {
		return `{"model_name":"m","outputs":[{"name":"y","datatype":"INT16","shape":[2],"parameters":` + params + `}]}`
	}
	tests := []struct {
		name string
		body string
		hdr  int
		want string
	}{
		{"error body", `{"error":"model is not ready"}`, -1, "the body is an error response: model is not ready"},
		{"no outputs", `{"model_name":"m"}`, -1, `missing "outputs"`},
		{"not an object", `[]`, -1, "expected the response object"},
		{"binary without header", out(`{"binary_data_size":4}`) + "\x00\x00\x00\x00", -1, `output "y": parameters.binary_data_size=4`},
		{"binary too short", out(`{"binary_data_size":4}`) + "\x00\x00", len(out(`{"binary_data_size":4}`)), `output "y"`},
		{"size not shape", out(`{"binary_data_size":2}`) + "\x00\x00", len(out(`{"binary_data_size":2}`)), "binary_data_size is 2 bytes"},
		{"duplicate output", `{"outputs":[{"name":"y","datatype":"INT8","shape":[],"data":[1]},{"name":"y","datatype":"INT8","shape":[],"data":[1]}]}`, -1,
			`output "y" appears more than once`},
		{"output unknown field", `{"outputs":[{"name":"y","datatyp":"INT8"}]}`, -1, `output "y": unknown field "datatyp"`},
		{"output not object", `{"outputs":[1]}`, -1, "outputs[0] must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := DecodeResponse([]byte(tt.body), tt.hdr)
			if err == nil {
				t.Fatalf("DecodeResponse = %+v, want an error", resp)
			}
			if !errors.Is(err, ErrInvalidResponse) || errors.Is(err, ErrInvalidRequest) {
				t.Errorf("error %q does not wrap ErrInvalidResponse alone", err)
			}
			if !strings.HasPrefix(err.Error(), "invalid inference response: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}

	// Unknown top-level fields are skipped; null strings are empty.
	resp, err := DecodeResponse([]byte(`{"model_name":null,"extra":{"a":[1]},"outputs":[]}`), -1)
	if err != nil || resp.ModelName != "" || len(resp.Outputs) != 0 {
		t.Errorf("lenient envelope: %+v %v", resp, err)
	}
}

func TestBinaryOutput(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		outputs map[string]bool // output name -> BinaryOutput
	}{
		{"nothing asked", `{"inputs":[]}`, map[string]bool{"y": false}},
		{"request level", `{"parameters":{"binary_data_output":true},"inputs":[]}`, map[string]bool{"y": true, "z": true}},
		{"request level false", `{"parameters":{"binary_data_output":false},"inputs":[]}`, map[string]bool{"y": false}},
		{"output level", `{"inputs":[],"outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"z"}]}`,
			map[string]bool{"y": true, "z": false, "w": false}},
		{"output overrides request", `{"parameters":{"binary_data_output":true},"inputs":[],` +
			`"outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"},{"name":"w","parameters":{"other":1}}]}`,
			map[string]bool{"y": false, "z": true, "w": true, "unlisted": true}},
		{"output true, request false", `{"parameters":{"binary_data_output":false},"inputs":[],` +
			`"outputs":[{"name":"y","parameters":{"binary_data":true}}]}`, map[string]bool{"y": true, "z": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := decodeRequest([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.outputs {
				if got := req.BinaryOutput(name); got != want {
					t.Errorf("BinaryOutput(%q) = %v, want %v", name, got, want)
				}
			}
		})
	}

	req, _ := decodeRequest([]byte(`{"inputs":[],"outputs":[{"name":"b","parameters":{"binary_data":true}}]}`))
	outs := []tensor.Tensor{{Name: "a"}, {Name: "b"}}
	if got := req.BinaryOutputs(outs); !reflect.DeepEqual(got, []bool{false, true}) {
		t.Errorf("BinaryOutputs = %v", got)
	}
	if got := req.BinaryOutputs(outs[:1]); got != nil {
		t.Errorf("BinaryOutputs without binary outputs = %v, want nil", got)
	}
}

func TestParseHeaderLength(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"", -1, true}, {"0", 0, true}, {"123", 123, true},
		{"-1", 0, false}, {"abc", 0, false}, {"1.5", 0, false}, {" 12", 0, false}, {"99999999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseHeaderLength(tt.in)
		if (err == nil) != tt.ok || tt.ok && got != tt.want {
			t.Errorf("ParseHeaderLength(%q) = %d, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("error %q does not wrap ErrInvalidRequest", err)
		}
	}
}

func TestEncodeRequestJSON(t *testing.T) {
	req := &InferRequest{
		ID:         "id\"1",
		Parameters: map[string]any{"priority": 2, "binary_data_output": true},
		Inputs: []Input{
			{Tensor: tensor.Tensor{Name: "a", DataType: tensor.Int32, Shape: []int64{2}, Data: i32s(-1, 7)},
				Parameters: map[string]any{"binary_data_size": 8, "z": "w"}},
			{Tensor: tensor.Tensor{Name: "h", DataType: tensor.FP16, Shape: []int64{1}, Data: u16s(0x3c00)}},
			{Tensor: tensor.Tensor{Name: "s", DataType: tensor.Bytes, Shape: []int64{1}, Strings: [][]byte{[]byte("q")}},
				Parameters: map[string]any{"binary_data_size": 5}},
		},
		Outputs: []RequestedOutput{{Name: "y"}, {Name: "z", Parameters: map[string]any{"binary_data": false}}},
	}
	body, headerLength := EncodeRequest(nil, req, false)
	wantHdr := `{"id":"id\"1","parameters":{"binary_data_output":true,"priority":2},"inputs":[` +
		`{"name":"a","datatype":"INT32","shape":[2],"parameters":{"z":"w"},"data":[-1,7]},` +
		`{"name":"h","datatype":"FP16","shape":[1],"parameters":{"binary_data_size":2}},` +
		`{"name":"s","datatype":"BYTES","shape":[1],"data":["q"]}],` +
		`"outputs":[{"name":"y"},{"name":"z","parameters":{"binary_data":false}}]}`
	if headerLength != len(wantHdr) || string(body[:min(headerLength, len(body))]) != wantHdr || !bytes.Equal(body[len(wantHdr):], u16s(0x3c00)) {
		t.Errorf("got %d %q\nwant %d %q", headerLength, body, len(wantHdr), wantHdr)
	}

	// All JSON: no header; and a request without id or parameters.
	req = &InferRequest{Inputs: req.Inputs[:1]}
	body, headerLength = EncodeRequest(nil, req, false)
	want := `{"inputs":[{"name":"a","datatype":"INT32","shape":[2],"parameters":{"z":"w"},"data":[-1,7]}]}`
	if headerLength != -1 || string(body) != want {
		t.Errorf("got %d %s\nwant %s", headerLength, body, want)
	}
	if _, err := decodeRequest(body); err != nil {
		t.Error(err)
	}

	// Binary, with no parameters of the caller's.
	body, headerLength = EncodeRequest(nil, &InferRequest{Inputs: []Input{{Tensor: req.Inputs[0].Tensor}}}, true)
	want = `{"parameters":{"binary_data_output":true},"inputs":[{"name":"a","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}`
	if headerLength != len(want) || string(body[:headerLength]) != want || !bytes.Equal(body[headerLength:], i32s(-1, 7)) {
		t.Errorf("got %d %q\nwant %s", headerLength, body, want)
	}
}

func TestEncodeResponseBinary(t *testing.T) {
	resp := &InferResponse{ModelName: "m", ModelVersion: "1", Outputs: []tensor.Tensor{
		{Name: "f", DataType: tensor.Bool, Shape: []int64{3}, Data: []byte{2, 0, 1}}, // nonzero is true: written as 1
		{Name: "j", DataType: tensor.Uint8, Shape: []int64{1}, Data: []byte{9}},
		{Name: "s", DataType: tensor.Bytes, Shape: []int64{2}, Strings: [][]byte{[]byte("ab"), {}}},
	}, Binary: []bool{true, false, true}}
	body, headerLength := encodeResponse([]byte("xx"), resp)
	wantHdr := `{"model_name":"m","model_version":"1","outputs":[` +
		`{"name":"f","datatype":"BOOL","shape":[3],"parameters":{"binary_data_size":3}},` +
		`{"name":"j","datatype":"UINT8","shape":[1],"data":[9]},` +
		`{"name":"s","datatype":"BYTES","shape":[2],"parameters":{"binary_data_size":10}}]}`
	wantBin := []byte{1, 0, 1, 2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0}
	if headerLength != len(wantHdr) || string(body) != "xx"+wantHdr+string(wantBin) {
		t.Errorf("got %d %q\nwant %d %q", headerLength, body, len(wantHdr), "xx"+wantHdr+string(wantBin))
	}
	if resp.Outputs[0].Data[0] != 2 {
		t.Errorf("encoding changed the output's data")
	}

	// A binary response costs the list of its parts, whatever the size of the data: fixed-size
	// outputs are not copied.
	big := &InferResponse{ModelName: "m", Outputs: []tensor.Tensor{tensor.FromFloat32s("y", []int64{64, 1024}, make([]float32, 64*1024))},
		Binary: []bool{true}}
	buf := make([]byte, 0, 1<<10)
	if n := testing.AllocsPerRun(10, func() { buf, _ = ResponseParts(buf[:0], big) }); n != 1 {
		t.Errorf("binary ResponseParts allocates %v times, want 1 (the parts)", n)
	}
}

// TestResponsePartsZeroCopy checks that fixed-size binary outputs are sent from their own
// buffers, and that a response without binary outputs has no parts.
func TestResponsePartsZeroCopy(t *testing.T) {
	fp := tensor.FromFloat32s("f", []int64{2}, []float32{1.5, -2})
	resp := &InferResponse{
		ModelName: "m", ModelVersion: "1", ID: "x",
		Outputs: []tensor.Tensor{
			fp,
			{Name: "b", DataType: tensor.Bool, Shape: []int64{3}, Data: []byte{0, 2, 1}},
			tensor.FromFloat32s("j", []int64{1}, []float32{3}),
		},
		Binary: []bool{true, true, false},
	}
	_, parts := ResponseParts(nil, resp)
	if len(parts) != 2 || &parts[0][0] != &fp.Data[0] {
		t.Error("a fixed-size output was copied")
	}
	if !bytes.Equal(parts[1], []byte{0, 1, 1}) {
		t.Errorf("BOOL part %v, want [0 1 1]", parts[1])
	}
	resp.Binary = nil
	if _, parts := ResponseParts(nil, resp); parts != nil {
		t.Errorf("JSON response has %d binary parts", len(parts))
	}
}
