package grpcapi

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/auth"
	pb "github.com/inferd/inferd/kserve/kservepb"
)

// scopeOf is the scope a method needs, as auth.Classify decides for HTTP: the liveness and
// readiness probes and the health service are open unless probes are protected; everything
// else is inference (no RPC offered here changes what the node serves).
func (s *Server) scopeOf(fullMethod string) auth.Scope {
	switch fullMethod {
	case pb.GRPCInferenceService_ServerLive_FullMethodName, pb.GRPCInferenceService_ServerReady_FullMethodName,
		healthpb.Health_Check_FullMethodName, healthpb.Health_Watch_FullMethodName, healthpb.Health_List_FullMethodName:
		if s.opts.ProtectProbes {
			return auth.Infer
		}
		return auth.Open
	}
	return auth.Infer
}

// authorize checks the bearer token in ctx's metadata against what fullMethod needs.
func (s *Server) authorize(ctx context.Context, fullMethod string) error {
	if s.opts.Tokens == nil {
		return nil
	}
	need := s.scopeOf(fullMethod)
	if need == auth.Open {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	token, ok := "", len(values) == 1
	if ok {
		token, ok = auth.ParseBearer(values[0])
	}
	if !ok {
		return s.deny("missing", codes.Unauthenticated, "this RPC needs a bearer token (metadata authorization: Bearer <token>)")
	}
	have, ok := s.opts.Tokens.Scope(token)
	if !ok {
		return s.deny("invalid", codes.Unauthenticated, "the bearer token is not valid")
	}
	if have < need {
		return s.deny("scope", codes.PermissionDenied, fmt.Sprintf("this RPC needs a token of scope %s; this token has scope %s", need, have))
	}
	return nil
}

func (s *Server) deny(reason string, code codes.Code, msg string) error {
	if s.opts.Denied != nil {
		s.opts.Denied(reason)
	}
	return status.Error(code, msg)
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return next(ctx, req)
}

// authStream refuses a stream before its handler runs; a refused ModelStreamInfer is observed
// as one request with the refusal's code.
func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	start := time.Now()
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		if info.FullMethod == pb.GRPCInferenceService_ModelStreamInfer_FullMethodName {
			service, method := splitMethod(info.FullMethod)
			s.observe(service, method, status.Code(err), time.Since(start))
		}
		return err
	}
	return next(srv, ss)
}

// observeUnary reports every unary RPC with its code, authentication refusals included.
func (s *Server) observeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if s.opts.Observe == nil {
		return next(ctx, req)
	}
	start := time.Now()
	resp, err := next(ctx, req)
	service, method := splitMethod(info.FullMethod)
	s.opts.Observe(service, method, status.Code(err), time.Since(start))
	return resp, err
}

// splitMethod splits "/inference.GRPCInferenceService/ModelInfer" into service and method.
func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "", full
}
