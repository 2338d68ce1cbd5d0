package kservegrpc

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve/kservepb"
)

// The wire form of the two messages that carry tensors, read and written here without copying
// their raw contents: the protobuf runtime copies every bytes field on both ways, which for a
// 4 MiB tensor costs more than the rest of a call.

// Field numbers of the raw contents and of a stream response's inference response.
const (
	fieldRawInputContents  protowire.Number = 7 // ModelInferRequest.raw_input_contents
	fieldRawOutputContents protowire.Number = 6 // ModelInferResponse.raw_output_contents
	fieldStreamError       protowire.Number = 1 // ModelStreamInferResponse.error_message
	fieldStreamResponse    protowire.Number = 2 // ModelStreamInferResponse.infer_response
)

// inlineRaw is the size under which a raw output is copied into the bytes around it rather than
// sent as a piece of its own: a piece costs about what copying this much does.
const inlineRaw = 16 << 10

// UnmarshalRequest decodes b, the wire form of a ModelInferRequest, into m as proto.Unmarshal
// does, except that each raw_input_contents entry is a slice of b, not a copy (capped at its
// length, so appending to it cannot reach into b). b must stay untouched while m is in use.
// The other fields go through proto.Unmarshal, which keeps their order, merging and unknown
// fields as the runtime defines them.
func UnmarshalRequest(b []byte, m *kservepb.ModelInferRequest) error {
	var raw [][]byte
	var rest []byte // the other fields, when they are not one run of b
	start, end := 0, 0
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return fmt.Errorf("offset %d: %w", off, protowire.ParseError(n))
		}
		if num == fieldRawInputContents && typ == protowire.BytesType {
			v, vn := protowire.ConsumeBytes(b[off+n:])
			if vn < 0 {
				return fmt.Errorf("raw_input_contents at offset %d: %w", off, protowire.ParseError(vn))
			}
			raw = append(raw, v[:len(v):len(v)])
			off += n + vn
			continue
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if vn < 0 {
			return fmt.Errorf("field %d at offset %d: %w", num, off, protowire.ParseError(vn))
		}
		switch {
		case end == start && rest == nil: // the first run
			start, end = off, off+n+vn
		case off == end && rest == nil: // the run goes on
			end = off + n + vn
		default:
			if rest == nil {
				rest = append([]byte(nil), b[start:end]...)
			}
			rest = append(rest, b[off:off+n+vn]...)
		}
		off += n + vn
	}
	if rest == nil {
		rest = b[start:end]
	}
	if err := proto.Unmarshal(rest, m); err != nil {
		return err
	}
	m.RawInputContents = raw
	return nil
}

// RawInputOffset is the offset in b of the first raw_input_contents entry's bytes, where b is
// the start of a ModelInferRequest's wire form; -1 when b ends before that entry's bytes begin
// or is not valid. A reader that knows it can place the message so that those bytes land
// aligned.
func RawInputOffset(b []byte) int {
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return -1
		}
		if num == fieldRawInputContents && typ == protowire.BytesType {
			_, ln := protowire.ConsumeVarint(b[off+n:])
			if ln < 0 {
				return -1
			}
			return off + n + ln
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if vn < 0 {
			return -1
		}
		off += n + vn
	}
	return -1
}

// MarshalResponse is the wire form of resp in pieces whose concatenation is what proto.Marshal
// gives: the raw outputs of inlineRaw bytes or more are pieces of their own, the bytes of
// resp.RawOutputContents themselves, which must stay untouched until the pieces are sent.
// resp must not be in use elsewhere meanwhile: its RawOutputContents is set aside while the
// other fields are marshalled.
func MarshalResponse(resp *kservepb.ModelInferResponse) ([][]byte, error) {
	head, err := marshalHead(nil, resp)
	if err != nil {
		return nil, err
	}
	return appendRaw([][]byte{head}, resp.RawOutputContents), nil
}

// MarshalStreamResponse is MarshalResponse for a stream's response, whose inference response is
// a nested message.
func MarshalStreamResponse(resp *kservepb.ModelStreamInferResponse) ([][]byte, error) {
	var b []byte
	if resp.ErrorMessage != "" {
		b = protowire.AppendTag(b, fieldStreamError, protowire.BytesType)
		b = protowire.AppendString(b, resp.ErrorMessage)
	}
	inner := resp.InferResponse
	if inner == nil {
		return [][]byte{b}, nil
	}
	head, err := marshalHead(nil, inner)
	if err != nil {
		return nil, err
	}
	size := len(head)
	for _, r := range inner.RawOutputContents {
		size += protowire.SizeTag(fieldRawOutputContents) + protowire.SizeBytes(len(r))
	}
	b = protowire.AppendTag(b, fieldStreamResponse, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	return appendRaw([][]byte{append(b, head...)}, inner.RawOutputContents), nil
}

// marshalHead appends the wire form of resp without its raw outputs to b.
func marshalHead(b []byte, resp *kservepb.ModelInferResponse) ([]byte, error) {
	raw := resp.RawOutputContents
	resp.RawOutputContents = nil
	defer func() { resp.RawOutputContents = raw }()
	return proto.MarshalOptions{}.MarshalAppend(b, resp)
}

// appendRaw appends raw_output_contents entries to pieces: each tag and length to the last
// piece, then the bytes, small ones copied in, large ones as pieces of their own.
func appendRaw(pieces [][]byte, raw [][]byte) [][]byte {
	last := pieces[len(pieces)-1]
	for _, r := range raw {
		last = protowire.AppendTag(last, fieldRawOutputContents, protowire.BytesType)
		last = protowire.AppendVarint(last, uint64(len(r)))
		if len(r) < inlineRaw {
			last = append(last, r...)
			continue
		}
		pieces[len(pieces)-1] = last
		pieces = append(pieces, r, nil)
		last = nil
	}
	pieces[len(pieces)-1] = last
	if len(last) == 0 && len(pieces) > 1 {
		pieces = pieces[:len(pieces)-1]
	}
	return pieces
}
