package route

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/kserve/kservehttp"
)

// Members is the cluster view the router reads once per routed request.
type Members interface {
	// Members returns every known member, this node included (Local true). It must not block
	// and must return a slice the caller may read while the view changes (a copy).
	Members() []cluster.Member
}

// Splits are the configured per-model traffic splits, read once per routed request.
type Splits interface {
	// Split returns the model's split, false when none is configured. It must not block. The
	// split should have passed Validate; an invalid one degrades (targets without positive
	// weight are ignored) rather than fails.
	Split(model string) (Split, bool)
}

// Errors of a try, wrapped in the messages of final failures.
var (
	// ErrTryTimeout is a try on a peer that gave no response headers within PerTryTimeout.
	ErrTryTimeout = errors.New("per-try timeout")
	// ErrNoNode is a request for which every node that could serve it failed or was refused
	// by the retry budget.
	ErrNoNode = errors.New("no node could serve the request")
)

// Router routes inference requests across the cluster; see the package comment.
type Router struct {
	local   http.Handler
	members Members
	splits  Splits
	opts    Options
	log     *slog.Logger
	scheme  string
	rand    intner
	budget  *budget

	mu    sync.RWMutex
	peers map[string]*peer

	localServed   atomic.Uint64
	localInFlight atomic.Int64
	routed        atomic.Uint64
	retries       atomic.Uint64
	exhausted     atomic.Uint64
}

// New returns a router in front of local. members may be nil (everything is served locally)
// and splits may be nil (no splits).
func New(local http.Handler, members Members, splits Splits, opts Options, log *slog.Logger) *Router {
	opts = opts.withDefaults()
	rt := &Router{
		local:   local,
		members: members,
		splits:  splits,
		opts:    opts,
		log:     log,
		scheme:  "http",
		rand:    globalRand{},
		budget:  newBudget(opts.RetryBudget, opts.Now),
		peers:   make(map[string]*peer),
	}
	if opts.TLS != nil {
		rt.scheme = "https"
	}
	if opts.Rand != nil {
		rt.rand = &lockedRand{r: rand.New(opts.Rand)}
	}
	return rt
}

// Close releases the idle connections to peers. The router keeps working after it.
func (rt *Router) Close() {
	if t, ok := rt.opts.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// ServeHTTP routes inference requests and hands everything else to the local handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rt.local.ServeHTTP(w, r)
		return
	}
	model, pinned, ok := parseInferPath(r.URL.EscapedPath())
	if !ok {
		rt.local.ServeHTTP(w, r)
		return
	}
	rt.route(w, r, model, pinned, rt.local)
}

// ErrNotInfer is RouteInfer's answer to a request that is not a POST to an inference path.
var ErrNotInfer = errors.New("not an inference request (POST /v2/models/{m}[/versions/{v}]/infer)")

// RouteInfer routes an inference request of another front end (gRPC) by the same split,
// failover, retry budget and ejection as ServeHTTP: the front end hands it over in KServe's
// HTTP form (the body as a peer takes it, the client's metadata as headers), the router
// forwards it to a peer over HTTP as it is, and the tries it keeps on this node go to local
// instead of the router's own local handler, with the version pinned in the path when the
// split chose one. Every answer, a peer's or local's, is written to w with the served-by
// header, as ServeHTTP writes it; local must answer 503 for a failure another node may repair
// (the router then tries one). A request that is not a POST to an inference path is refused
// with ErrNotInfer.
func (rt *Router) RouteInfer(w http.ResponseWriter, r *http.Request, local http.Handler) error {
	model, pinned, ok := parseInferPath(r.URL.EscapedPath())
	if r.Method != http.MethodPost || !ok {
		return ErrNotInfer
	}
	rt.route(w, r, model, pinned, local)
	return nil
}

// route serves an inference request, with local for the tries on this node.
func (rt *Router) route(w http.ResponseWriter, r *http.Request, model, pinned string, local http.Handler) {
	if r.Header.Get(rt.opts.ForwardedByHeader) != "" || rt.members == nil {
		rt.serveLocal(w, r, local)
		return
	}
	rt.routed.Add(1)
	rt.budget.deposit()
	p := rt.newPlan(r, rt.members.Members(), model, pinned)
	rt.serve(w, r, p, local)
}

// serveLocal serves a request here without choosing: one forwarded to this node, or one no
// node can serve (the local handler gives the right 404 or 503).
func (rt *Router) serveLocal(w http.ResponseWriter, r *http.Request, local http.Handler) {
	rt.localServed.Add(1)
	rt.localInFlight.Add(1)
	defer rt.localInFlight.Add(-1)
	w.Header().Set(rt.opts.ServedByHeader, rt.opts.Node)
	local.ServeHTTP(w, r)
}

// outcome is what a try left to do: nothing (done), or a failure another node may repair.
type outcome struct {
	done bool
	node string
	// A captured 503 response, relayed if no other try follows.
	status int
	header http.Header
	body   []byte
	// err is a failure without a response.
	err error
}

func (rt *Router) serve(w http.ResponseWriter, r *http.Request, p *plan, local http.Handler) {
	ctx := r.Context()
	var (
		body     *kservehttp.Body
		buffered bool
		last     outcome
		tries    int
	)
	// The body's budget goes back once the request is answered; its buffers are left to the
	// garbage collector, as the transport may still be reading a forwarded copy.
	defer func() {
		if body != nil {
			body.Release()
		}
	}()
	for ; ; tries++ {
		if tries > 0 && (tries > rt.opts.MaxRetries || ctx.Err() != nil) {
			break
		}
		c, ok := p.next()
		if !ok {
			break
		}
		if tries > 0 {
			if !rt.budget.withdraw() {
				p.tried = p.tried[:len(p.tried)-1]
				rt.exhausted.Add(1)
				rt.log.DebugContext(ctx, "retry budget exhausted", "model", p.model, "node", c.name)
				break
			}
			rt.retries.Add(1)
		}
		retryable := tries < rt.opts.MaxRetries
		if !buffered && (retryable || !c.local) {
			var err error
			if body, err = kservehttp.Read(w, r, kservehttp.Options{Limit: rt.opts.MaxBodyBytes(), Budget: rt.opts.BodyBudget}); err != nil {
				var be *kservehttp.Error
				errors.As(err, &be)
				if be.RetryAfter {
					w.Header().Set("Retry-After", "1")
				}
				writeError(w, be.Status, err.Error())
				return
			}
			buffered = true
		}
		var o outcome
		if c.local {
			o = rt.tryLocal(w, r, c, body, buffered, retryable, local)
		} else {
			o = rt.tryPeer(w, r, c, body, retryable, tries)
		}
		if o.done {
			return
		}
		last = o
		rt.log.DebugContext(ctx, "try failed", "model", p.model, "node", c.name, "status", o.status, "err", o.err)
	}
	if tries == 0 {
		rt.serveUnplaced(w, r, p, local)
		return
	}
	rt.relayFailure(w, r, p, last)
}

// serveUnplaced answers a request no node is a candidate for. When this node lists the model
// (in any state), or no node does, the local handler answers: it knows the right 404 or 503.
// Otherwise some peer lists it but none can take it now, which only the cluster can say.
func (rt *Router) serveUnplaced(w http.ResponseWriter, r *http.Request, p *plan, local http.Handler) {
	s := p.steps[0]
	need := cmp.Or(s.need, p.pinned)
	anywhere, locally := listed(p.members, p.model, need)
	if locally || !anywhere {
		if s.rewrite != "" {
			r = rewritten(r, p.model, s.rewrite)
		}
		rt.serveLocal(w, r, local)
		return
	}
	what := fmt.Sprintf("model %q", p.model)
	if need != "" {
		what = fmt.Sprintf("model %q version %q", p.model, need)
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
		"%s is not served by this node, and no node of the cluster that lists it can take requests now (none ready, reachable and not draining)", what))
}

// relayFailure answers with the last failure: the 503 a node gave, or an error of ours.
func (rt *Router) relayFailure(w http.ResponseWriter, r *http.Request, p *plan, o outcome) {
	if o.status != 0 {
		h := w.Header()
		copyHeader(h, o.header)
		h.Set(rt.opts.ServedByHeader, o.node)
		w.WriteHeader(o.status)
		_, _ = w.Write(o.body)
		return
	}
	if err := r.Context().Err(); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			writeError(w, http.StatusGatewayTimeout, fmt.Sprintf("model %q: the request's deadline passed after trying %s: %v",
				p.model, strings.Join(p.tried, ", "), o.err))
		}
		// Cancelled: the client left, nobody reads an answer.
		return
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q: %v (tried %s): %v",
		p.model, ErrNoNode, strings.Join(p.tried, ", "), o.err))
}

// ParseInferPath is parseInferPath for other packages (tracing names its spans by it).
func ParseInferPath(escaped string) (model, version string, ok bool) { return parseInferPath(escaped) }

// parseInferPath matches /v2/models/{m}/infer and /v2/models/{m}/versions/{v}/infer in the
// escaped path, segment by segment as net/http's ServeMux does.
func parseInferPath(path string) (model, version string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/v2/models/")
	if !ok {
		return "", "", false
	}
	m, rest, ok := strings.Cut(rest, "/")
	if !ok || m == "" {
		return "", "", false
	}
	if rest != "infer" {
		var v string
		if rest, ok = strings.CutPrefix(rest, "versions/"); !ok {
			return "", "", false
		}
		if v, rest, ok = strings.Cut(rest, "/"); !ok || v == "" || rest != "infer" {
			return "", "", false
		}
		if version, ok = unescape(v); !ok {
			return "", "", false
		}
	}
	if model, ok = unescape(m); !ok {
		return "", "", false
	}
	return model, version, true
}

func unescape(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	u, err := url.PathUnescape(s)
	return u, err == nil
}

// inferPath is the pinned path of a model version: unescaped, and escaped for the wire.
func inferPath(model, version string) (path, raw string) {
	path = "/v2/models/" + model + "/versions/" + version + "/infer"
	raw = "/v2/models/" + url.PathEscape(model) + "/versions/" + url.PathEscape(version) + "/infer"
	if raw == path {
		raw = ""
	}
	return path, raw
}

// rewritten is a shallow copy of r whose path pins the version.
func rewritten(r *http.Request, model, version string) *http.Request {
	r2 := r.WithContext(r.Context())
	u := *r.URL
	u.Path, u.RawPath = inferPath(model, version)
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	return r2
}

// writeError writes a KServe error body, as the API does.
func writeError(w http.ResponseWriter, status int, msg string) { kservehttp.WriteError(w, status, msg) }

// peerFor returns the record of the named peer, creating it on first use.
func (rt *Router) peerFor(name string) *peer {
	rt.mu.RLock()
	p := rt.peers[name]
	rt.mu.RUnlock()
	if p != nil {
		return p
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if p = rt.peers[name]; p == nil {
		p = &peer{name: name}
		rt.peers[name] = p
		rt.pruneLocked()
	}
	return p
}

// pruneLocked forgets idle peers that left the cluster view, so that the records stay bounded
// by the members seen recently. It runs only when a record is created, which is rare.
func (rt *Router) pruneLocked() {
	if rt.members == nil || len(rt.peers) < 16 {
		return
	}
	current := rt.members.Members()
	for name, p := range rt.peers {
		if p.inFlight.Load() == 0 && !slices.ContainsFunc(current, func(m cluster.Member) bool { return m.Name == name }) {
			delete(rt.peers, name)
		}
	}
}

// Stats returns a snapshot of the router's counters and of every peer record, sorted by node;
// the local node is first.
func (rt *Router) Stats() Stats {
	now := rt.opts.Now()
	s := Stats{
		Routed:          rt.routed.Load(),
		Retries:         rt.retries.Load(),
		BudgetExhausted: rt.exhausted.Load(),
	}
	rt.mu.RLock()
	for _, p := range rt.peers {
		ps := PeerStats{
			Node:      p.name,
			InFlight:  p.inFlight.Load(),
			Forwarded: p.forwarded.Load(),
			Failures:  p.failures.Load(),
		}
		p.mu.Lock()
		ps.Addr, ps.ConsecutiveFailures, ps.Ejections = p.addr, p.consecutive, p.ejections
		p.mu.Unlock()
		if p.ejected(now) {
			ps.EjectedUntil = timeFromNanos(p.ejectedUntil.Load())
		}
		s.Peers = append(s.Peers, ps)
	}
	rt.mu.RUnlock()
	slices.SortFunc(s.Peers, func(a, b PeerStats) int { return strings.Compare(a.Node, b.Node) })
	s.Peers = slices.Insert(s.Peers, 0, PeerStats{
		Node:      rt.opts.Node,
		Local:     true,
		InFlight:  rt.localInFlight.Load(),
		Forwarded: rt.localServed.Load(),
	})
	return s
}

// intner is the router's source of random choices.
type intner interface{ IntN(n int) int }

// globalRand uses math/rand/v2's global generator, which is safe for concurrent use.
type globalRand struct{}

func (globalRand) IntN(n int) int { return rand.IntN(n) }

// lockedRand serializes an injected source, which need not be safe for concurrent use.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) IntN(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.IntN(n)
}
