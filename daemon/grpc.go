package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/scheduler"
)

// setupGRPC builds the gRPC front end when the configuration (or the caller's listener) asks
// for one: the same repository, scheduler, tokens, TLS and limits as HTTP, its own counters.
// Every [grpc] key is restart-only, so this runs once.
func (d *Daemon) setupGRPC(cfg *config.Config, inference *metrics.Inference) {
	if cfg.GRPC.Listen == "" && d.opts.GRPCListener == nil {
		return
	}
	m := d.metrics
	g := cfg.GRPC
	opts := grpcapi.Options{
		Name:          "inferd",
		Version:       d.opts.Version,
		Settings:      func() *grpcapi.Settings { return &d.settings.Load().grpc },
		Ready:         func() bool { return d.api.Phase() == api.PhaseServing && d.repo.Ready() },
		ProtectProbes: cfg.Auth.ProtectProbes,
		Denied:        func(reason string) { m.GRPCAuthDenied.WithLabelValues(reason).Inc() },
		LimitExceeded: func(l string) { m.GRPCLimitRejections.WithLabelValues(l).Inc() },
		Refused:       func(model, version string, o scheduler.Outcome) { inference.Refused(model, version, o.String()) },
		Observe: func(service, method string, code codes.Code, took time.Duration) {
			m.GRPCRequests.WithLabelValues(service, method, grpcapi.CodeName(code)).Inc()
			m.GRPCRequestDuration.WithLabelValues(service, method).Observe(took.Seconds())
		},
		// In a cluster, gRPC requests go through the same router as HTTP's (docs/grpc.md).
		Router: func() grpcapi.Router {
			if c := d.cluster.Load(); c != nil {
				return c.router
			}
			return nil
		},
		Trace: d.tracing.StartRPC,
		Transport: grpcapi.Transport{
			MaxMessageBytes:              g.MaxMessageBytes,
			MaxConcurrentStreams:         uint32(g.MaxConcurrentStreams),
			KeepaliveTime:                g.KeepaliveTime,
			KeepaliveTimeout:             g.KeepaliveTimeout,
			KeepaliveMinTime:             g.KeepaliveMinTime,
			KeepalivePermitWithoutStream: g.KeepalivePermitWithoutStream,
		},
	}
	if d.sec.tokens != nil { // a nil *auth.Tokens in the interface would not read as "none"
		opts.Tokens = d.sec.tokens
	}
	if d.sec.tls != nil && d.sec.tls.Certificate() != nil {
		opts.Transport.TLS = d.sec.tls.ServerConfig()
	}
	d.grpc = grpcapi.New(d.repo, d.sched, opts, d.log.With("component", "grpc"))
}

// serveGRPC starts the gRPC listener, if there is one; the channel yields the error that
// stops it before a shutdown.
func (d *Daemon) serveGRPC(cfg *config.Config) (<-chan error, error) {
	errc := make(chan error, 1)
	if d.grpc == nil {
		return errc, nil
	}
	ln := d.opts.GRPCListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.GRPC.Listen); err != nil {
			return nil, fmt.Errorf("listen for gRPC on %s: %w", cfg.GRPC.Listen, err)
		}
	}
	if n := cfg.Server.MaxConnections; n > 0 {
		ln = limitListener(ln, n)
	}
	go func() {
		if err := d.grpc.Serve(ln); err != nil {
			errc <- err
		}
	}()
	d.gaddr <- ln.Addr()
	d.log.Info("grpc listening", "addr", ln.Addr().String(), "tls", d.sec.tls != nil)
	return errc, nil
}

// GRPCAddr returns the address the gRPC listener is bound to, once it is; it blocks until
// then or until ctx ends (forever-pending for a daemon without gRPC, until ctx ends).
func (d *Daemon) GRPCAddr(ctx context.Context) (net.Addr, error) {
	select {
	case a := <-d.gaddr:
		d.gaddr <- a
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// grpcChanged tells gRPC health watchers to look again.
func (d *Daemon) grpcChanged() {
	if d.grpc != nil {
		d.grpc.Changed()
	}
}

// stopGRPC drains the gRPC server within ctx; the channel yields its result.
func (d *Daemon) stopGRPC(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	if d.grpc == nil {
		done <- nil
		return done
	}
	go func() { done <- d.grpc.Shutdown(ctx) }()
	return done
}
