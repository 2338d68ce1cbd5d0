package route

import (
	"crypto/tls"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/inferd/inferd/kserve/kservehttp"
)

// Default header names.
const (
	// DefaultForwardedByHeader marks a request forwarded by a node (its value is the node's
	// name); a request carrying it is served where it lands, never forwarded again.
	DefaultForwardedByHeader = "Inferd-Forwarded-By"
	// DefaultServedByHeader names, on every routed response, the node that served it.
	DefaultServedByHeader = "Inferd-Served-By"
)

// Options configure a Router. A zero field takes the default written beside it; for the
// numeric policies a negative value means none (no retries, no timeout, no ejection).
type Options struct {
	// Node is this node's member name, as in cluster.Member.Name. Required.
	Node string
	// MaxBodyBytes returns the bound on a request body the router buffers to forward or retry
	// it (413 above): called once per request, so a configuration reload that changes the
	// limit applies to the next request. It must not block. Default 64 MiB, the API's own
	// default limit.
	MaxBodyBytes func() int64
	// BodyBudget, when set, bounds the request-body bytes in flight
	// (server.max_body_bytes_in_flight; 503 with Retry-After when full). The API handler the
	// router serves local tries with must share it: a body the router read is handed on, not
	// read again, and the router gives its bytes back once the request is answered.
	BodyBudget *kservehttp.Budget
	// PerTryTimeout bounds one try on a peer, from sending the request to its response
	// headers; the body then streams under the client's deadline only. A hung peer costs at
	// most this before the request moves on. Default 5 s; negative: none. Local tries are not
	// bounded here (the scheduler's queue timeout bounds them).
	PerTryTimeout time.Duration
	// DialTimeout bounds a TCP connect to a peer in the default transport. On a LAN a connect
	// takes well under a millisecond, so this only matters for a host that vanished.
	// Default 1 s.
	DialTimeout time.Duration
	// MaxRetries is how many other nodes one request may try after the first. Default 2;
	// negative: none.
	MaxRetries int
	// RetryBudget caps retries across all requests, so that failover cannot multiply load
	// on a cluster that is already failing.
	RetryBudget RetryBudget
	// Ejection is the passive outlier detection of peers.
	Ejection Ejection
	// Transport carries forwarded requests. Default: NewTransport(DialTimeout, TLS). It is used
	// as a RoundTripper (no redirects, no cookies).
	Transport http.RoundTripper
	// TLS, when set, makes the router call peers over https, with this configuration in the
	// default transport (a custom Transport must bring its own).
	TLS *tls.Config
	// ForwardedByHeader and ServedByHeader name the router's headers. Defaults
	// DefaultForwardedByHeader and DefaultServedByHeader.
	ForwardedByHeader string
	ServedByHeader    string
	// Now is the clock of ejection and the retry budget. Default time.Now.
	Now func() time.Time
	// Rand is the source of the router's random choices (split draws, two random choices).
	// Default: math/rand/v2's global generator. Tests pass a seeded one.
	Rand rand.Source
}

// RetryBudget limits retries to Ratio of the requests routed over the last Window, plus
// MinPerSecond×Window so that a quiet node can still fail over (Finagle's and Linkerd's
// budget). The defaults allow 20% extra load, and at least 100 retries per 10 s.
type RetryBudget struct {
	// Ratio of retries to requests. Default 0.2; negative: 0.
	Ratio float64
	// MinPerSecond is the floor. Default 10; negative: 0.
	MinPerSecond float64
	// Window is the span the budget counts over, in 1 s buckets. Default 10 s.
	Window time.Duration
}

// Ejection configures passive outlier detection: a peer that fails ConsecutiveFailures tries
// in a row (connect failure, reset, per-try timeout, 503) is not chosen for BaseTime. After
// that it is on probation: one more failure before a success ejects it again, for twice as
// long as the last time, up to MaxTime; a success clears its record.
type Ejection struct {
	// ConsecutiveFailures before the first ejection. Default 5; negative: never eject.
	ConsecutiveFailures int
	// BaseTime is the first ejection's length. Default 5 s.
	BaseTime time.Duration
	// MaxTime caps the doubling. Default 2 min.
	MaxTime time.Duration
}

// withDefaults fills the zero fields.
func (o Options) withDefaults() Options {
	if o.MaxBodyBytes == nil {
		o.MaxBodyBytes = func() int64 { return 64 << 20 }
	}
	o.PerTryTimeout = orDuration(o.PerTryTimeout, 5*time.Second)
	o.DialTimeout = orDuration(o.DialTimeout, time.Second)
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = 2
	case o.MaxRetries < 0:
		o.MaxRetries = 0
	}
	o.RetryBudget.Ratio = orFloat(o.RetryBudget.Ratio, 0.2)
	o.RetryBudget.MinPerSecond = orFloat(o.RetryBudget.MinPerSecond, 10)
	if o.RetryBudget.Window < time.Second {
		o.RetryBudget.Window = 10 * time.Second
	}
	if o.Ejection.ConsecutiveFailures == 0 {
		o.Ejection.ConsecutiveFailures = 5
	}
	if o.Ejection.BaseTime <= 0 {
		o.Ejection.BaseTime = 5 * time.Second
	}
	if o.Ejection.MaxTime <= 0 {
		o.Ejection.MaxTime = 2 * time.Minute
	}
	o.Ejection.MaxTime = max(o.Ejection.MaxTime, o.Ejection.BaseTime)
	if o.Transport == nil {
		o.Transport = NewTransport(o.DialTimeout, o.TLS)
	}
	if o.ForwardedByHeader == "" {
		o.ForwardedByHeader = DefaultForwardedByHeader
	}
	if o.ServedByHeader == "" {
		o.ServedByHeader = DefaultServedByHeader
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// orDuration maps zero to def and negative to 0 (none).
func orDuration(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func orFloat(f, def float64) float64 {
	switch {
	case f == 0:
		return def
	case f < 0:
		return 0
	}
	return f
}

// NewTransport is the default transport to peers: keep-alive connections sized for a LAN
// cluster (up to 64 idle per peer, so a burst does not pay a connect per request), a short
// connect timeout, HTTP/1.1 (no h2 head-of-line blocking on one connection), and no
// transparent gzip, which would change the bytes and headers relayed to the client.
func NewTransport(dialTimeout time.Duration, tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}
