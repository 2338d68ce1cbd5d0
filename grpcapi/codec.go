package grpcapi

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

// codec is gRPC's protobuf codec with one change: an inference request that is not valid
// protobuf is not refused by gRPC itself, which would answer INTERNAL ("failed to unmarshal"),
// but handed on empty and remembered, so that the handler answers INVALID_ARGUMENT like any
// other malformed request, counted and logged as one.
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
	err := c.CodecV2.Unmarshal(data, v)
	if m, ok := v.(*pb.ModelInferRequest); ok && err != nil {
		proto.Reset(m)
		c.malformed.Store(m, fmt.Errorf("%w: malformed protobuf: %w", kserve.ErrInvalidRequest, err))
		return nil
	}
	return err
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
