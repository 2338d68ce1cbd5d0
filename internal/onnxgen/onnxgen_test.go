package onnxgen

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"testing"
)

// field is one decoded protobuf field; for wire type 2 raw is the payload.
type field struct {
	num  int
	wire int
	val  uint64
	raw  []byte
}

// decode splits one message into its fields, failing the test on malformed input.
func decode(t *testing.T, b []byte) []field {
	t.Helper()
	var out []field
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			t.Fatalf("bad tag varint")
		}
		b = b[n:]
		f := field{num: int(tag >> 3), wire: int(tag & 7)}
		switch f.wire {
		case 0:
			f.val, n = binary.Uvarint(b)
			if n <= 0 {
				t.Fatalf("field %d: bad varint", f.num)
			}
			b = b[n:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				t.Fatalf("field %d: bad length", f.num)
			}
			f.raw = b[n : n+int(l)]
			b = b[n+int(l):]
		case 5:
			if len(b) < 4 {
				t.Fatalf("field %d: short fixed32", f.num)
			}
			f.val = uint64(binary.LittleEndian.Uint32(b))
			b = b[4:]
		default:
			t.Fatalf("field %d: unexpected wire type %d", f.num, f.wire)
		}
		out = append(out, f)
	}
	return out
}

// only returns the single field numbered num, failing if it is absent or repeated.
func only(t *testing.T, fs []field, num int) field {
	t.Helper()
	var found []field
	for _, f := range fs {
		if f.num == num {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		t.Fatalf("field %d: found %d times, want once", num, len(found))
	}
	return found[0]
}

func TestMarshalModelHeader(t *testing.T) {
	m := decode(t, Marshal(Graph{Name: "g"}))
	if got := only(t, m, 1).val; got != IRVersion {
		t.Errorf("ir_version = %d, want %d", got, IRVersion)
	}
	if got := string(only(t, m, 2).raw); got != ProducerName {
		t.Errorf("producer_name = %q", got)
	}
	opset := decode(t, only(t, m, 8).raw)
	if d := only(t, opset, 1); d.wire != 2 || len(d.raw) != 0 {
		t.Errorf("opset domain = %q, want empty string", d.raw)
	}
	if v := only(t, opset, 2).val; v != OpsetVersion {
		t.Errorf("opset version = %d, want %d", v, OpsetVersion)
	}
	if name := string(only(t, decode(t, only(t, m, 7).raw), 2).raw); name != "g" {
		t.Errorf("graph name = %q", name)
	}
}

func TestMarshalValueInfoShape(t *testing.T) {
	tests := []struct {
		name  string
		shape []Dim
		want  []string // per dim: "p:<param>" or "v:<value>"
	}{
		{"scalar", nil, nil},
		{"fixed", D(2, 3), []string{"v:2", "v:3"}},
		{"symbolic", []Dim{P("batch"), {Value: 4}}, []string{"p:batch", "v:4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := decode(t, Marshal(Graph{Inputs: []ValueInfo{{Name: "x", ElemType: Int64, Shape: tt.shape}}}))
			vi := decode(t, only(t, decode(t, only(t, g, 7).raw), 11).raw)
			if n := string(only(t, vi, 1).raw); n != "x" {
				t.Fatalf("name = %q", n)
			}
			tensorType := decode(t, only(t, decode(t, only(t, vi, 2).raw), 1).raw)
			if et := only(t, tensorType, 1).val; et != uint64(Int64) {
				t.Errorf("elem_type = %d", et)
			}
			shape := only(t, tensorType, 2) // must be present even for rank 0
			var got []string
			for _, d := range decode(t, shape.raw) {
				df := decode(t, d.raw)[0]
				switch df.num {
				case 1:
					got = append(got, "v:"+strconv.FormatUint(df.val, 10))
				case 2:
					got = append(got, "p:"+string(df.raw))
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("dims = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("dim %d = %s, want %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestMarshalAttrs(t *testing.T) {
	tests := []struct {
		attr  Attr
		typ   uint64
		check func(t *testing.T, fs []field)
	}{
		{IntAttr("to", -1), attrInt, func(t *testing.T, fs []field) {
			if v := int64(only(t, fs, 3).val); v != -1 {
				t.Errorf("i = %d, want -1", v)
			}
		}},
		{FloatAttr("alpha", 0.25), attrFloat, func(t *testing.T, fs []field) {
			if v := math.Float32frombits(uint32(only(t, fs, 2).val)); v != 0.25 {
				t.Errorf("f = %v, want 0.25", v)
			}
		}},
		{StringAttr("mode", "UPPER"), attrString, func(t *testing.T, fs []field) {
			if v := string(only(t, fs, 4).raw); v != "UPPER" {
				t.Errorf("s = %q", v)
			}
		}},
		{IntsAttr("perm", 1, 0), attrInts, func(t *testing.T, fs []field) {
			var got []uint64
			for _, f := range fs {
				if f.num == 8 {
					got = append(got, f.val)
				}
			}
			if len(got) != 2 || got[0] != 1 || got[1] != 0 {
				t.Errorf("ints = %v, want [1 0]", got)
			}
		}},
		{StringsAttr("stopwords", "a", "b"), attrStrings, func(t *testing.T, fs []field) {
			var got []string
			for _, f := range fs {
				if f.num == 9 {
					got = append(got, string(f.raw))
				}
			}
			if len(got) != 2 || got[0] != "a" || got[1] != "b" {
				t.Errorf("strings = %v", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.attr.name, func(t *testing.T) {
			g := Graph{Nodes: []Node{{OpType: "Op", Inputs: []string{"a"}, Outputs: []string{"b"}, Attrs: []Attr{tt.attr}}}}
			node := decode(t, only(t, decode(t, only(t, decode(t, Marshal(g)), 7).raw), 1).raw)
			if op := string(only(t, node, 4).raw); op != "Op" {
				t.Errorf("op_type = %q", op)
			}
			a := decode(t, only(t, node, 5).raw)
			if n := string(only(t, a, 1).raw); n != tt.attr.name {
				t.Errorf("name = %q", n)
			}
			if typ := only(t, a, 20).val; typ != tt.typ {
				t.Errorf("type = %d, want %d", typ, tt.typ)
			}
			tt.check(t, a)
		})
	}
}

func TestMarshalInitializer(t *testing.T) {
	g := Graph{Initializers: []Tensor{FloatTensor("w", []int64{2}, []float32{1, -2})}}
	tp := decode(t, only(t, decode(t, only(t, decode(t, Marshal(g)), 7).raw), 5).raw)
	if dt := only(t, tp, 2).val; dt != uint64(Float) {
		t.Errorf("data_type = %d", dt)
	}
	if d := only(t, tp, 1).val; d != 2 {
		t.Errorf("dims = %d", d)
	}
	want := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0}
	if raw := only(t, tp, 9).raw; !bytes.Equal(raw, want) {
		t.Errorf("raw_data = % x, want % x", raw, want)
	}
}
