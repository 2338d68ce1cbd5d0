package perf

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

// grpcTarget sends the measured requests as ModelInfer calls over one connection. The request
// is encoded once, as the HTTP body is, and sent as those bytes (wireCodec): what is measured
// is the server and the transport, not this process's protobuf runtime.
type grpcTarget struct {
	cc      *grpc.ClientConn
	client  pb.GRPCInferenceServiceClient
	body    []byte // the request's wire form, without an id
	format  string
	timeout time.Duration // bounds one call
}

// dialGRPC prepares the gRPC request of req: raw contents with cfg.Binary, typed otherwise
// (FP16 and BF16 inputs always raw). The connection is plaintext; it is made on first use.
func dialGRPC(cfg Config, req *kserve.InferRequest) (*grpcTarget, error) {
	m, err := kservegrpc.EncodeRequest(req, cfg.Model, cfg.Version, cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("%w: gRPC request: %w", ErrConfig, err)
	}
	body, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: gRPC request: %w", ErrConfig, err)
	}
	cc, err := grpc.NewClient("passthrough:///"+cfg.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return nil, fmt.Errorf("%w: --grpc %s: %w", ErrConfig, cfg.GRPC, err)
	}
	format := "grpc typed"
	if len(m.RawInputContents) > 0 {
		format = "grpc raw"
	}
	return &grpcTarget{cc: cc, client: pb.NewGRPCInferenceServiceClient(cc), body: body, format: format, timeout: cfg.RequestTimeout}, nil
}

func (g *grpcTarget) close() { _ = g.cc.Close() }

// withID is the request with this id: the encoded body and the id field after it (a field
// may come in any order, and the body has no id).
func (g *grpcTarget) withID(id string) encoded {
	f := protowire.AppendTag(nil, fieldRequestID, protowire.BytesType)
	return encoded{g.body, protowire.AppendString(f, id)}
}

// fieldRequestID is ModelInferRequest.id's field number.
const fieldRequestID = 3

// send makes one call, its response's bytes kept in rep. kind is "" on success, else the
// status code's Go name ("Unavailable") or "invalid response"; the first answer is decoded and
// checked (checked says it was).
func (g *grpcTarget) send(ctx context.Context, rep *reply, checked *bool) (kind, msg string) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	err := g.cc.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, encoded{g.body}, rep, grpc.ForceCodecV2(wireCodec{}))
	if err != nil {
		st, _ := status.FromError(err)
		return st.Code().String(), st.Message()
	}
	if !*checked {
		var resp pb.ModelInferResponse
		if err := proto.Unmarshal(rep.buf, &resp); err != nil {
			return "invalid response", err.Error()
		}
		outs, err := kservegrpc.DecodeResponse(&resp)
		if err != nil {
			return "invalid response", err.Error()
		}
		if len(outs) == 0 {
			return "invalid response", ErrResponse.Error() + ": no outputs"
		}
		*checked = true
	}
	return "", ""
}

// wireCodec is the protobuf codec, except for a request already encoded (sent as its bytes,
// not copied) and a reply (its bytes copied into a buffer reused from call to call, as the
// HTTP sender reads its bodies, rather than decoded).
type wireCodec struct{}

// encoded is a message's wire form in pieces, sent one after the other.
type encoded [][]byte

// reply is a response's wire form.
type reply struct{ buf []byte }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	e, ok := v.(encoded)
	if !ok {
		return encoding.GetCodecV2("proto").Marshal(v)
	}
	out := make(mem.BufferSlice, len(e))
	for i, p := range e {
		out[i] = mem.SliceBuffer(p)
	}
	return out, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*reply)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	n := data.Len()
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	data.CopyTo(r.buf)
	return nil
}

func (wireCodec) Name() string { return "proto" }
