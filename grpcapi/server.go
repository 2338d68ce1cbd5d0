package grpcapi

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/inferd/inferd/auth"
	"github.com/inferd/inferd/dispatch"
	"github.com/inferd/inferd/kserve"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// Repository is what the gRPC front end needs of the model repository.
type Repository interface {
	dispatch.Resolver
	Lookup(name string) (*models.Model, error)
	ReadyVersions(m *models.Model) []string
	Index() []models.IndexEntry
}

// TokenChecker says which scope a bearer token has (auth.Tokens); false: not a valid token.
type TokenChecker interface {
	Scope(token string) (auth.Scope, bool)
}

// Settings are what the service reads from the configuration in force; a reload replaces them
// as a whole. A value is never changed once Options.Settings returned it.
type Settings struct {
	// Limits bound what a request may declare (INVALID_ARGUMENT above them).
	Limits kserve.Limits
}

// Transport is how connections are served. Every field is fixed for the Server's life.
type Transport struct {
	// TLS, when set, serves TLS with it (mutual TLS when it asks for client certificates);
	// nil serves plaintext HTTP/2.
	TLS *tls.Config
	// MaxMessageBytes bounds a received message; a larger one is refused with
	// RESOURCE_EXHAUSTED before it is read. 0: gRPC's default (4 MiB).
	MaxMessageBytes int
	// MaxConcurrentStreams bounds the streams (calls) in flight on one connection; a client
	// waits for a free one. 0: no bound.
	MaxConcurrentStreams uint32
	// KeepaliveTime is how long a connection may be idle before the server pings it, and
	// KeepaliveTimeout how long it waits for the answer before closing it. 0: gRPC's defaults.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the shortest interval at which a client may ping; one that pings more
	// often is sent GOAWAY (too_many_pings) and cut off. KeepalivePermitWithoutStream lets
	// clients ping connections with no call in flight.
	KeepaliveMinTime             time.Duration
	KeepalivePermitWithoutStream bool
}

// Options configure a Server.
type Options struct {
	// Name and Version are reported by ServerMetadata.
	Name, Version string
	// Settings returns the settings in force; it is called for every request and must not
	// block. Nil: the zero Settings.
	Settings func() *Settings
	// Ready reports whether the node serves: its first model load finished and it is not
	// stopping (the HTTP API's readiness). Nil: always.
	Ready func() bool
	// Tokens, when set, makes every RPC need a bearer token in the authorization metadata:
	// ServerLive, ServerReady and the health service need none unless ProtectProbes.
	Tokens        TokenChecker
	ProtectProbes bool
	// Denied, when set, is told why a token was refused: "missing", "invalid" or "scope".
	Denied func(reason string)
	// LimitExceeded, when set, is told the name of each [limits] bound a request goes over.
	LimitExceeded func(limit string)
	// Refused, when set, counts each inference request that ends here without the scheduler
	// having admitted it (as api.Options.Refused); it must not block.
	Refused func(model, version string, outcome scheduler.Outcome)
	// Observe, when set, is told of every answered unary RPC and every request answered on a
	// ModelStreamInfer stream: the service and method, its code and how long it took. It must
	// not block.
	Observe func(service, method string, code codes.Code, d time.Duration)
	// Router, when set, returns the cluster's router, or nil while the node is in no cluster
	// (before it joined, or with the cluster off): then every request is served here. It is
	// called for every inference request and must not block.
	Router func() Router
	// Trace, when set, starts the server span of one inference request (a unary call or one
	// request of a stream; method names which) in ctx, its parent read from the call's
	// metadata, and returns the context to serve it in and what ends the span with the
	// request's error; end is nil when the request is not traced (tracing.Tracing.StartRPC).
	Trace     func(ctx context.Context, method, model string) (_ context.Context, end func(error))
	Transport Transport
}

// Server is the gRPC front end: the inference and health services on one grpc.Server.
type Server struct {
	pb.UnimplementedGRPCInferenceServiceServer
	healthpb.UnimplementedHealthServer

	repo  Repository
	infer dispatch.Inferer
	opts  Options
	log   *slog.Logger
	gs    *grpc.Server

	stopping  atomic.Bool
	stop      chan struct{} // closed when shutdown begins
	stopOnce  sync.Once
	changedMu sync.Mutex
	changed   chan struct{} // closed and replaced by Changed
	malformed sync.Map      // *pb.ModelInferRequest -> its decode error (codec.go)
}

// New returns a Server with both services registered; it serves once Serve is called.
func New(repo Repository, infer dispatch.Inferer, opts Options, log *slog.Logger) *Server {
	s := &Server{repo: repo, infer: infer, opts: opts, log: log, stop: make(chan struct{}), changed: make(chan struct{})}
	if s.opts.Settings == nil {
		s.opts.Settings = func() *Settings { return &Settings{} }
	}
	if s.opts.Ready == nil {
		s.opts.Ready = func() bool { return true }
	}
	if s.opts.Router == nil {
		s.opts.Router = func() Router { return nil }
	}
	s.gs = grpc.NewServer(s.serverOptions()...)
	pb.RegisterGRPCInferenceServiceServer(s.gs, s)
	healthpb.RegisterHealthServer(s.gs, s)
	return s
}

func (s *Server) serverOptions() []grpc.ServerOption {
	t := s.opts.Transport
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newCodec(&s.malformed)),
		grpc.ChainUnaryInterceptor(s.takeMalformed, s.observeUnary, s.authUnary),
		grpc.ChainStreamInterceptor(s.authStream),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: t.KeepaliveMinTime, PermitWithoutStream: t.KeepalivePermitWithoutStream}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: t.KeepaliveTime, Timeout: t.KeepaliveTimeout}),
	}
	if t.MaxMessageBytes > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(t.MaxMessageBytes))
	}
	if t.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(t.MaxConcurrentStreams))
	}
	if t.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(t.TLS)))
	}
	return opts
}

// Serve serves connections from ln until Shutdown; it returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.gs.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown stops the server: it refuses new requests with UNAVAILABLE, lets every call in
// flight finish (streams answer what they hold and end; health watchers hear NOT_SERVING),
// and closes the listener and the connections. Calls still running when ctx ends are cut off;
// the error then says so.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginStop()
	done := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.gs.Stop()
		<-done
		return fmt.Errorf("grpc drain: calls still in flight were cut off: %w", ctx.Err())
	}
}

// beginStop refuses new requests and tells streams and watchers, once.
func (s *Server) beginStop() {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.stop)
		s.Changed()
	})
}

// Changed tells health watchers that readiness may have changed (a model loaded or went
// away, the node became ready); they check again and send what differs. Safe to call from any
// goroutine, at any rate; it must not be called while holding a lock a watcher takes.
func (s *Server) Changed() {
	s.changedMu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.changedMu.Unlock()
}

// changes returns the channel the next Changed closes.
func (s *Server) changes() <-chan struct{} {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	return s.changed
}

// serving reports whether the node takes requests: ready and not stopping.
func (s *Server) serving() bool { return !s.stopping.Load() && s.opts.Ready() }

func (s *Server) settings() *Settings { return s.opts.Settings() }

func (s *Server) limitExceeded(limit string) {
	if s.opts.LimitExceeded != nil {
		s.opts.LimitExceeded(limit)
	}
}

func (s *Server) observe(service, method string, code codes.Code, d time.Duration) {
	if s.opts.Observe != nil {
		s.opts.Observe(service, method, code, d)
	}
}
