// Package onnxgen writes small ONNX models (ModelProto, IR version 8, default-domain opset 17)
// by encoding protobuf wire format by hand, so that the project can generate its test and demo
// models without a protobuf library or Python.
//
// It owns only serialization: the caller describes a graph with the plain structs below and
// Marshal turns it into bytes. It must not validate graphs (ONNX Runtime does that when it loads
// them), read models back, import ONNX Runtime or any other package of ours, or hold state: every
// function here is pure.
package onnxgen

import (
	"encoding/binary"
	"math"
)

// The versions every generated model declares.
const (
	IRVersion    = 8
	OpsetVersion = 17
	ProducerName = "inferd-onnxgen"
)

// DataType is an ONNX TensorProto.DataType element type number.
type DataType int32

// The ONNX element types this package is used with.
const (
	Float    DataType = 1
	Uint8    DataType = 2
	Int8     DataType = 3
	Uint16   DataType = 4
	Int16    DataType = 5
	Int32    DataType = 6
	Int64    DataType = 7
	String   DataType = 8
	Bool     DataType = 9
	Float16  DataType = 10
	Double   DataType = 11
	Uint32   DataType = 12
	Uint64   DataType = 13
	BFloat16 DataType = 16
)

// Graph is a GraphProto: nodes in topological order, constant initializers, and the graph's
// inputs and outputs.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Node is a NodeProto. An empty Domain means the default ONNX domain.
type Node struct {
	OpType  string
	Name    string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// Tensor is a TensorProto initializer. Raw holds the elements little-endian and row-major
// (ONNX's raw_data); Dims of length 0 is a scalar.
type Tensor struct {
	Name     string
	DataType DataType
	Dims     []int64
	Raw      []byte
}

// ValueInfo is a graph input or output: a tensor of ElemType with Shape. A nil or empty Shape is
// rank 0 (a scalar); the shape is always written, so rank 0 never reads as "unknown rank".
type ValueInfo struct {
	Name     string
	ElemType DataType
	Shape    []Dim
}

// Dim is one dimension of a ValueInfo shape: a fixed Value, or a symbolic Param such as "batch"
// when Param is not empty.
type Dim struct {
	Value int64
	Param string
}

// D returns fixed dimensions.
func D(values ...int64) []Dim {
	dims := make([]Dim, len(values))
	for i, v := range values {
		dims[i] = Dim{Value: v}
	}
	return dims
}

// P returns a symbolic dimension named name.
func P(name string) Dim { return Dim{Param: name} }

// Attribute types of AttributeProto.AttributeType.
const (
	attrFloat   = 1
	attrInt     = 2
	attrString  = 3
	attrGraph   = 5
	attrInts    = 7
	attrStrings = 8
)

// Attr is a node attribute; build one with IntAttr, FloatAttr, StringAttr, IntsAttr,
// StringsAttr or GraphAttr.
type Attr struct {
	name    string
	typ     int
	f       float32
	i       int64
	s       string
	ints    []int64
	strings []string
	graph   *Graph
}

// IntAttr is an INT attribute.
func IntAttr(name string, v int64) Attr { return Attr{name: name, typ: attrInt, i: v} }

// FloatAttr is a FLOAT attribute.
func FloatAttr(name string, v float32) Attr { return Attr{name: name, typ: attrFloat, f: v} }

// StringAttr is a STRING attribute.
func StringAttr(name, v string) Attr { return Attr{name: name, typ: attrString, s: v} }

// IntsAttr is an INTS attribute.
func IntsAttr(name string, v ...int64) Attr { return Attr{name: name, typ: attrInts, ints: v} }

// StringsAttr is a STRINGS attribute.
func StringsAttr(name string, v ...string) Attr {
	return Attr{name: name, typ: attrStrings, strings: v}
}

// GraphAttr is a GRAPH attribute: the body of a control-flow node such as Loop or If.
func GraphAttr(name string, g Graph) Attr { return Attr{name: name, typ: attrGraph, graph: &g} }

// FloatTensor returns an FP32 initializer.
func FloatTensor(name string, dims []int64, data []float32) Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, DataType: Float, Dims: dims, Raw: raw}
}

// Int64Tensor returns an INT64 initializer.
func Int64Tensor(name string, dims []int64, data []int64) Tensor {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return Tensor{Name: name, DataType: Int64, Dims: dims, Raw: raw}
}

// Marshal encodes g as a ModelProto.
func Marshal(g Graph) []byte {
	opset := appendString(nil, 1, "")
	opset = appendVarintField(opset, 2, OpsetVersion)

	graph := encodeGraph(g)
	b := make([]byte, 0, len(graph)+64)
	b = appendVarintField(b, 1, IRVersion)
	b = appendString(b, 2, ProducerName)
	b = appendBytes(b, 7, graph)
	b = appendBytes(b, 8, opset)
	return b
}

func encodeGraph(g Graph) []byte {
	// Children are encoded first so the graph is allocated once: a benchmark model's
	// initializers run to hundreds of megabytes, and growing the slice would copy them repeatedly.
	type child struct {
		field int
		msg   []byte
	}
	var children []child
	size := len(g.Name) + 16
	add := func(field int, msg []byte) {
		children = append(children, child{field, msg})
		size += len(msg) + 16
	}
	for _, n := range g.Nodes {
		add(1, encodeNode(n))
	}
	for _, t := range g.Initializers {
		add(5, encodeTensor(t))
	}
	for _, v := range g.Inputs {
		add(11, encodeValueInfo(v))
	}
	for _, v := range g.Outputs {
		add(12, encodeValueInfo(v))
	}

	b := make([]byte, 0, size)
	b = appendString(b, 2, g.Name)
	for _, c := range children {
		b = appendBytes(b, c.field, c.msg)
	}
	return b
}

func encodeNode(n Node) []byte {
	var b []byte
	for _, s := range n.Inputs {
		b = appendString(b, 1, s)
	}
	for _, s := range n.Outputs {
		b = appendString(b, 2, s)
	}
	if n.Name != "" {
		b = appendString(b, 3, n.Name)
	}
	b = appendString(b, 4, n.OpType)
	for _, a := range n.Attrs {
		b = appendBytes(b, 5, encodeAttr(a))
	}
	if n.Domain != "" {
		b = appendString(b, 7, n.Domain)
	}
	return b
}

func encodeAttr(a Attr) []byte {
	b := appendString(nil, 1, a.name)
	switch a.typ {
	case attrFloat:
		b = appendFixed32(b, 2, math.Float32bits(a.f))
	case attrInt:
		b = appendVarintField(b, 3, uint64(a.i))
	case attrString:
		b = appendString(b, 4, a.s)
	case attrGraph:
		b = appendBytes(b, 6, encodeGraph(*a.graph))
	case attrInts:
		for _, v := range a.ints {
			b = appendVarintField(b, 8, uint64(v))
		}
	case attrStrings:
		for _, s := range a.strings {
			b = appendString(b, 9, s)
		}
	}
	return appendVarintField(b, 20, uint64(a.typ))
}

func encodeTensor(t Tensor) []byte {
	b := make([]byte, 0, len(t.Raw)+len(t.Name)+16+10*len(t.Dims))
	for _, d := range t.Dims {
		b = appendVarintField(b, 1, uint64(d))
	}
	b = appendVarintField(b, 2, uint64(t.DataType))
	b = appendString(b, 8, t.Name)
	return appendBytes(b, 9, t.Raw)
}

func encodeValueInfo(v ValueInfo) []byte {
	var shape []byte
	for _, d := range v.Shape {
		var dim []byte
		if d.Param != "" {
			dim = appendString(nil, 2, d.Param)
		} else {
			dim = appendVarintField(nil, 1, uint64(d.Value))
		}
		shape = appendBytes(shape, 1, dim)
	}
	tensorType := appendVarintField(nil, 1, uint64(v.ElemType))
	tensorType = appendBytes(tensorType, 2, shape) // present even when empty: rank 0
	typ := appendBytes(nil, 1, tensorType)

	b := appendString(nil, 1, v.Name)
	return appendBytes(b, 2, typ)
}

// Protobuf wire types.
const (
	wireVarint  = 0
	wireBytes   = 2
	wireFixed32 = 5
)

func appendTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

// appendVarintField writes an int64/int32/enum field; negative values arrive here as their
// two's-complement uint64, which is how protobuf encodes them (ten bytes).
func appendVarintField(b []byte, field int, v uint64) []byte {
	return binary.AppendUvarint(appendTag(b, field, wireVarint), v)
}

func appendFixed32(b []byte, field int, v uint32) []byte {
	return binary.LittleEndian.AppendUint32(appendTag(b, field, wireFixed32), v)
}

func appendBytes(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(appendTag(b, field, wireBytes), uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, field int, s string) []byte {
	b = binary.AppendUvarint(appendTag(b, field, wireBytes), uint64(len(s)))
	return append(b, s...)
}
