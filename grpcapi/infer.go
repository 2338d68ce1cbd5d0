package grpcapi

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/inferd/inferd/dispatch"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/kserve/kservegrpc"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
	"github.com/inferd/inferd/tracing"
	"github.com/inferd/inferd/tracing/span"
)

// ModelInfer runs one inference request. In cluster mode the response metadata names the node
// that served it (MetadataServedBy).
func (s *Server) ModelInfer(ctx context.Context, m *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	resp, node, err := s.infer1(ctx, "ModelInfer", m)
	if node != "" {
		_ = grpc.SetHeader(ctx, metadata.Pairs(MetadataServedBy, node))
	}
	return resp, statusError(err)
}

// infer1 decodes m, runs it on the version that serves its model and encodes the answer; the
// unary and the streaming RPC both come here. In cluster mode the router decides where it
// runs, and node names the node that answered. Requests it ends before the scheduler admits
// them are counted through Options.Refused.
func (s *Server) infer1(ctx context.Context, method string, m *pb.ModelInferRequest) (resp *pb.ModelInferResponse, node string, err error) {
	if s.opts.Trace != nil {
		var end func(error)
		if ctx, end = s.opts.Trace(ctx, method, m.GetModelName()); end != nil {
			defer func() { end(err) }()
		}
	}
	if s.stopping.Load() {
		s.refused(ctx, m.GetModelName(), nil, errStopping)
		return nil, "", errStopping
	}
	_, decode := span.Start(ctx, "decode")
	defer decode.End()
	if err := s.decodeError(ctx, m); err != nil {
		s.refused(ctx, "", nil, err)
		return nil, "", err
	}
	req, err := kservegrpc.DecodeRequest(m, s.settings().Limits)
	if err != nil {
		if le := (*kserve.LimitError)(nil); errors.As(err, &le) {
			s.limitExceeded(le.Limit)
		}
		s.refused(ctx, m.GetModelName(), nil, err)
		return nil, "", err
	}
	sreq, err := schedulingRequest(req)
	if err != nil {
		s.refused(ctx, m.GetModelName(), nil, err)
		return nil, "", err
	}
	decode.End()
	sreq.Trace = tracing.Queue(ctx)
	if rt := s.opts.Router(); rt != nil {
		return s.route(ctx, rt, m, req, sreq)
	}
	resp, err = s.runLocal(ctx, m, m.GetModelVersion(), sreq)
	return resp, "", err
}

// runLocal runs a checked request on this node, on the model's version ("" = the server's
// choice).
func (s *Server) runLocal(ctx context.Context, m *pb.ModelInferRequest, version string, sreq *scheduler.Request) (*pb.ModelInferResponse, error) {
	res := dispatch.Run(ctx, s.repo, s.infer, m.GetModelName(), version, sreq)
	if res.Refused {
		s.refused(ctx, m.GetModelName(), res.Version, res.Err)
	}
	if res.Err != nil {
		if codeOf(res.Err) == codes.Internal && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "inference failed", "model", m.GetModelName(), "version", version, "id", m.GetId(), "err", res.Err)
		}
		return nil, res.Err
	}
	tracing.SetVersion(ctx, res.Version.Label())
	_, encode := span.Start(ctx, "encode")
	defer encode.End()
	return kservegrpc.EncodeResponse(res.Version.Model, res.Version.Label(), m.GetId(), res.Outputs), nil
}

// schedulingRequest takes the tensors and the scheduling parameters (priority, timeout) out of
// a decoded request, as the HTTP API does.
func schedulingRequest(req *kserve.InferRequest) (*scheduler.Request, error) {
	sreq := &scheduler.Request{Inputs: make([]tensor.Tensor, len(req.Inputs))}
	for i := range req.Inputs {
		sreq.Inputs[i] = req.Inputs[i].Tensor
	}
	if len(req.Outputs) > 0 {
		sreq.Outputs = make([]string, len(req.Outputs))
		for i, o := range req.Outputs {
			sreq.Outputs[i] = o.Name
		}
	}
	if err := sreq.SetParameters(req.Parameters); err != nil {
		return nil, err
	}
	return sreq, nil
}

// refused reports an inference request that ended here to Options.Refused, with the outcome
// of its error (canceled when the client left meanwhile). The model label is the request's
// model only when that model exists, and the version only when one was resolved: a client
// cannot make up series.
func (s *Server) refused(ctx context.Context, model string, v *models.Version, err error) {
	if s.opts.Refused == nil {
		return
	}
	o := outcomeOf(codeOf(err))
	if ctx.Err() != nil {
		o = scheduler.OutcomeCanceled
	}
	var version string
	switch {
	case v != nil:
		model, version = v.Model, v.Label()
	case model != "":
		if _, err := s.repo.Lookup(model); err != nil {
			model = ""
		}
	}
	s.opts.Refused(model, version, o)
}
