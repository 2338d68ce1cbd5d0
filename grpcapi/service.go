package grpcapi

import (
	"context"
	"errors"

	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

// platform is what model metadata reports for every model inferd serves (as over HTTP).
const platform = "onnxruntime_onnx"

// ServerLive answers live for as long as the process answers.
func (s *Server) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

// ServerReady answers ready once the first model load finished, until shutdown begins.
func (s *Server) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.serving()}, nil
}

// ServerMetadata names the server. Its extensions list is empty: none of the HTTP extensions
// (binary tensor data, model configuration, repository, statistics) has RPCs here, and raw
// tensor contents are part of the gRPC protocol itself.
func (s *Server) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: s.opts.Name, Version: s.opts.Version, Extensions: []string{}}, nil
}

// ModelReady answers whether the model can serve at the version (or at the one the server
// would pick); a model or version that does not exist is NOT_FOUND, as over HTTP.
func (s *Server) ModelReady(_ context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	_, err := s.repo.Resolve(req.GetName(), req.GetVersion())
	switch {
	case err == nil:
		return &pb.ModelReadyResponse{Ready: true}, nil
	case errors.Is(err, models.ErrUnavailable):
		return &pb.ModelReadyResponse{Ready: false}, nil
	default:
		return nil, statusError(err)
	}
}

// ModelMetadata describes the inputs and outputs of the version that serves the model.
func (s *Server) ModelMetadata(_ context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	v, err := s.repo.Resolve(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, statusError(err)
	}
	m, err := s.repo.Lookup(v.Model)
	if err != nil {
		return nil, statusError(err)
	}
	return &pb.ModelMetadataResponse{
		Name:     v.Model,
		Versions: s.repo.ReadyVersions(m),
		Platform: platform,
		Inputs:   tensorMetadata(v.Signature.Inputs),
		Outputs:  tensorMetadata(v.Signature.Outputs),
	}, nil
}

func tensorMetadata(specs []tensor.Spec) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(specs))
	for i, sp := range specs {
		out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: sp.Name, Datatype: string(sp.DataType), Shape: sp.Shape}
	}
	return out
}
