package perf

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

// grpcTarget sends the measured requests as ModelInfer calls over one connection.
type grpcTarget struct {
	cc      *grpc.ClientConn
	client  pb.GRPCInferenceServiceClient
	req     *pb.ModelInferRequest
	body    []byte // the request's wire form, for the report's request size
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
	return &grpcTarget{cc: cc, client: pb.NewGRPCInferenceServiceClient(cc), req: m, body: body, format: format, timeout: cfg.RequestTimeout}, nil
}

func (g *grpcTarget) close() { _ = g.cc.Close() }

// send makes one call. kind is "" on success, else the status code's Go name ("Unavailable") or
// "invalid response"; the first answer is checked (checked says it was).
func (g *grpcTarget) send(ctx context.Context, checked *bool) (kind, msg string) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	resp, err := g.client.ModelInfer(ctx, g.req)
	if err != nil {
		st, _ := status.FromError(err)
		return st.Code().String(), st.Message()
	}
	if !*checked {
		outs, err := kservegrpc.DecodeResponse(resp)
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
