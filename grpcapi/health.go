package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/models"
)

// recheckEvery is how often a Watch looks again without being told of a change: unloads and
// model failures reach watchers through Changed only where the daemon reports them, so a
// watcher also checks at this pace.
const recheckEvery = time.Second

// healthOf is the health of a service name: "" and the inference service are the server
// (serving while ready and not stopping); a model name is that model's readiness at the
// version the server would pick. An unknown name is SERVICE_UNKNOWN.
func (s *Server) healthOf(service string) healthpb.HealthCheckResponse_ServingStatus {
	if service == "" || service == pb.GRPCInferenceService_ServiceDesc.ServiceName {
		if s.serving() {
			return healthpb.HealthCheckResponse_SERVING
		}
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	_, err := s.repo.Resolve(service, "")
	switch {
	case err == nil && !s.stopping.Load():
		return healthpb.HealthCheckResponse_SERVING
	case err == nil, errors.Is(err, models.ErrUnavailable):
		return healthpb.HealthCheckResponse_NOT_SERVING
	default:
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	}
}

// Check answers the health of one service; an unknown one is NOT_FOUND, as the health
// protocol says.
func (s *Server) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	st := s.healthOf(req.GetService())
	if st == healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		return nil, status.Error(codes.NotFound, fmt.Sprintf("unknown service %q: neither the server (\"\" or %s) nor a model", req.GetService(), pb.GRPCInferenceService_ServiceDesc.ServiceName))
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

// List answers the server's health under "" and each model's.
func (s *Server) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	out := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{
		"": {Status: s.healthOf("")},
		pb.GRPCInferenceService_ServiceDesc.ServiceName: {Status: s.healthOf("")},
	}}
	for _, e := range s.repo.Index() {
		if _, seen := out.Statuses[e.Name]; !seen {
			out.Statuses[e.Name] = &healthpb.HealthCheckResponse{Status: s.healthOf(e.Name)}
		}
	}
	return out, nil
}

// Watch sends the service's health at once and then each time it changes, until the client
// leaves or the server stops (after it sent NOT_SERVING). An unknown service is
// SERVICE_UNKNOWN, and may become known when such a model appears.
func (s *Server) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ticker := time.NewTicker(recheckEvery)
	defer ticker.Stop()
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	for {
		changed := s.changes()
		if st := s.healthOf(req.GetService()); st != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		if s.stopping.Load() {
			return status.Error(codes.Unavailable, errStopping.Error())
		}
		select {
		case <-changed:
		case <-ticker.C:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		}
	}
}
