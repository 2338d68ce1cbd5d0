package daemon

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/auth"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/tlsconf"
)

// security is what guards the listener: TLS material and bearer tokens, both re-read from
// their files when these change.
type security struct {
	tls    *tlsconf.Reloader // nil: plain HTTP
	tokens *auth.Tokens      // nil: no tokens needed
	policy auth.Policy
}

func newSecurity(cfg *config.Config, d *Daemon) (*security, error) {
	s := &security{}
	files := tlsconf.Files{
		CertFile: cfg.Server.TLS.CertFile, KeyFile: cfg.Server.TLS.KeyFile,
		ClientCAFile: cfg.Server.TLS.ClientCAFile, ClientAuth: tlsconf.ClientAuth(cfg.Server.TLS.ClientAuth),
	}
	if files.Enabled() || files.ClientCAFile != "" {
		r, err := tlsconf.New(files, d.log.With("component", "tls"))
		if err != nil {
			return nil, fmt.Errorf("server.tls: %w", err)
		}
		r.Reloaded = func(err error) {
			result := "success"
			if err != nil {
				result = "failure"
			}
			d.metrics.SecretReloads.WithLabelValues("tls", result).Inc()
		}
		s.tls = r
	}
	if cfg.Auth.TokensFile != "" {
		t, err := auth.LoadTokens(cfg.Auth.TokensFile, d.log.With("component", "auth"))
		if err != nil {
			return nil, fmt.Errorf("auth.tokens_file: %w", err)
		}
		s.tokens = t
	}
	scope, err := auth.ParseScope(cfg.Auth.MetricsScope)
	if err != nil {
		return nil, fmt.Errorf("auth.metrics_scope: %w", err)
	}
	s.policy = auth.Policy{ProtectProbes: cfg.Auth.ProtectProbes, Metrics: scope}
	return s, nil
}

// wrap puts the token check in front of next when tokens are configured.
func (s *security) wrap(next http.Handler, denied auth.Denied) http.Handler {
	if s.tokens == nil {
		return next
	}
	return auth.Middleware(next, s.tokens, auth.Classify(s.policy), denied)
}

// listener adds TLS and the connection limit to ln.
func (s *security) listener(ln net.Listener, maxConns int) net.Listener {
	if maxConns > 0 {
		ln = limitListener(ln, maxConns)
	}
	if s.tls != nil && s.tls.Certificate() != nil {
		ln = tls.NewListener(ln, s.tls.ServerConfig())
	}
	return ln
}

// peerTLS is the client configuration for forwarding to peers; nil means plain HTTP.
func (s *security) peerTLS() *tls.Config {
	if s.tls == nil || s.tls.Certificate() == nil {
		return nil
	}
	return s.tls.ClientConfig()
}

// limits maps the [limits] section onto the decoder's.
func limits(cfg *config.Config) kserve.Limits {
	l := cfg.Limits
	return kserve.Limits{MaxDepth: l.MaxJSONDepth, MaxInputs: l.MaxInputs, MaxRank: l.MaxRank,
		MaxElements: l.MaxElements, MaxStringBytes: l.MaxStringBytes}
}

// limitListener holds Accept while n connections are open: further clients wait in the
// kernel's backlog instead of costing a file descriptor and a goroutine each.
func limitListener(ln net.Listener, n int) net.Listener {
	return &limited{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type limited struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limited) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

// Close stops Accept, also while it waits for a free slot.
func (l *limited) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// handlerSwitch is the listener's handler, swapped once the cluster's router is in front.
type handlerSwitch struct{ h atomic.Pointer[http.Handler] }

func (s *handlerSwitch) set(h http.Handler) { s.h.Store(&h) }

func (s *handlerSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// denied counts a refused token.
func (d *Daemon) denied(reason string) { d.metrics.AuthDenied.WithLabelValues(reason).Inc() }

// front is what every request passes before the API (or the cluster's router): the header
// size limit, then the token check.
func (d *Daemon) front(next http.Handler, cfg *config.Config) http.Handler {
	limit := cfg.Server.MaxHeaderBytes
	inner := d.sec.wrap(d.tracing.Wrap(next), d.denied)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := headerBytes(r); n > limit {
			d.metrics.LimitRejections.WithLabelValues("max_header_bytes").Inc()
			api.WriteError(w, http.StatusRequestHeaderFieldsTooLarge,
				fmt.Sprintf("request headers of %d bytes are over the limit of %d bytes (server.max_header_bytes)", n, limit))
			return
		}
		inner.ServeHTTP(w, r)
	})
}

// headerBytes is the size of the request line and headers as sent (close enough: ": " and
// CRLF per field).
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n + len(r.Host) + 8
}
