package grpcapi

import (
	"context"
	"fmt"
	"sync"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

// codec is gRPC's protobuf codec with two changes.
//
// An inference request that is not valid protobuf is not refused by gRPC itself, which would
// answer INTERNAL ("failed to unmarshal"), but handed on empty and remembered, so that the
// handler answers INVALID_ARGUMENT like any other malformed request, counted and logged as one.
//
// Tensors are not copied more than the transport needs. A request's frames are gathered into
// one buffer of its own, placed so that the first raw input's bytes are 8-byte aligned, and its
// raw_input_contents are slices of that buffer (ONNX Runtime reads them in place, as the HTTP
// binary path's; a later input that the wire left misaligned is copied once, here); the
// buffer is the garbage collector's, so it lives exactly as long as anything, a queued batch
// included, still refers to it. A response's raw outputs are
// handed to the transport as they are, not marshalled into a copy first.
type codec struct {
	encoding.CodecV2
	// malformed maps each *pb.ModelInferRequest that failed to decode to its error, from the
	// codec until the request's first interceptor (unary) or the stream's reader takes it.
	malformed *sync.Map
}

func newCodec(malformed *sync.Map) codec {
	return codec{CodecV2: encoding.GetCodecV2("proto"), malformed: malformed}
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*pb.ModelInferRequest)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	if err := kservegrpc.UnmarshalRequest(gather(data), m); err != nil {
		proto.Reset(m)
		c.malformed.Store(m, fmt.Errorf("%w: malformed protobuf: %w", kserve.ErrInvalidRequest, err))
		return nil
	}
	// The raw inputs after the first lie wherever the wire put them: one that is misaligned
	// gets memory of its own, as every one did from the protobuf runtime.
	for i, r := range m.RawInputContents {
		if i > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(r)))%rawAlign != 0 {
			m.RawInputContents[i] = append(make([]byte, 0, max(len(r), 16)), r...)
		}
	}
	return nil
}

// rawAlign is the alignment gather gives the first raw input: enough for every fixed-size
// element type.
const rawAlign = 8

// gather copies a request's frames into one new buffer, shifted so that the first raw input's
// bytes start at a multiple of rawAlign when the first frame says where they start.
func gather(data mem.BufferSlice) []byte {
	shift := 0
	if len(data) > 0 {
		if off := kservegrpc.RawInputOffset(data[0].ReadOnlyData()); off >= 0 {
			shift = (rawAlign - off%rawAlign) % rawAlign
		}
	}
	// make's memory starts aligned to rawAlign from 16 bytes on (smaller blocks may share
	// an 8-byte word).
	n := data.Len()
	buf := make([]byte, max(shift+n, 16))[shift : shift+n]
	data.CopyTo(buf)
	return buf
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	var pieces [][]byte
	var err error
	switch m := v.(type) {
	case *pb.ModelInferResponse:
		pieces, err = kservegrpc.MarshalResponse(m)
	case *pb.ModelStreamInferResponse:
		pieces, err = kservegrpc.MarshalStreamResponse(m)
	default:
		return c.CodecV2.Marshal(v)
	}
	if err != nil {
		return nil, err
	}
	out := make(mem.BufferSlice, len(pieces))
	for i, p := range pieces {
		out[i] = mem.SliceBuffer(p)
	}
	return out, nil
}

// malformedKey carries a request's decode error from takeMalformed to the handler.
type malformedKey struct{}

// takeMalformed is the first unary interceptor: it takes a request's decode error out of the
// codec's map (so that nothing is left there whatever the later interceptors do) into the
// context, where ModelInfer finds it.
func (s *Server) takeMalformed(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if m, ok := req.(*pb.ModelInferRequest); ok {
		if err, bad := s.malformed.LoadAndDelete(m); bad {
			ctx = context.WithValue(ctx, malformedKey{}, err)
		}
	}
	return next(ctx, req)
}

// decodeError is the decode error of m: from the context (unary) or the codec's map (a
// stream's message); nil when m decoded.
func (s *Server) decodeError(ctx context.Context, m *pb.ModelInferRequest) error {
	if err, ok := ctx.Value(malformedKey{}).(error); ok {
		return err
	}
	if err, ok := s.malformed.LoadAndDelete(m); ok {
		return err.(error)
	}
	return nil
}
