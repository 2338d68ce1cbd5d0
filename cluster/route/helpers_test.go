package route

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/internal/testutil"
)

// fakeMembers is a settable cluster view.
type fakeMembers struct {
	mu   sync.Mutex
	list []cluster.Member
}

func (f *fakeMembers) Members() []cluster.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.list)
}

func (f *fakeMembers) set(ms ...cluster.Member) {
	f.mu.Lock()
	f.list = ms
	f.mu.Unlock()
}

// fakeSplits is a fixed set of splits.
type fakeSplits map[string]Split

func (f fakeSplits) Split(model string) (Split, bool) {
	s, ok := f[model]
	return s, ok
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ready lists ready versions of a model for a catalog.
func ready(model string, versions ...string) []cluster.CatalogVersion {
	var out []cluster.CatalogVersion
	for _, v := range versions {
		out = append(out, cluster.CatalogVersion{Model: model, Version: v, State: "ready"})
	}
	return out
}

// member is an alive, ready member serving the catalog entries.
func member(name, addr string, local bool, catalog ...[]cluster.CatalogVersion) cluster.Member {
	return cluster.Member{
		Name:     name,
		Local:    local,
		HTTPAddr: addr,
		Serving:  cluster.ServingReady,
		Liveness: cluster.LivenessAlive,
		Catalog:  cluster.Catalog{Generation: 1, Models: slices.Concat(catalog...)},
	}
}

// echo answers "<node>|<version>" (version "-" when the path pins none) and counts requests.
type echo struct {
	name string
	hits atomic.Int64
}

func (e *echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.hits.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	_, v, _ := parseInferPath(r.URL.EscapedPath())
	if v == "" {
		v = "-"
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s|%s", e.name, v)
}

// peerServer is a peer node on 127.0.0.1 whose behaviour the test can switch.
type peerServer struct {
	echo
	srv     *httptest.Server
	handler atomic.Pointer[http.Handler]
}

func startPeer(t testing.TB, name string) *peerServer {
	t.Helper()
	p := &peerServer{echo: echo{name: name}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := p.handler.Load(); h != nil {
			p.hits.Add(1)
			(*h).ServeHTTP(w, r)
			return
		}
		p.echo.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *peerServer) addr() string { return p.srv.Listener.Addr().String() }

// behave replaces the echo; nil restores it.
func (p *peerServer) behave(h http.HandlerFunc) {
	if h == nil {
		p.handler.Store(nil)
		return
	}
	var hh http.Handler = h
	p.handler.Store(&hh)
}

// unavailable answers a KServe 503 as a full queue does.
func unavailable(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(`{"error":"queue full"}`))
}

// hang holds the request until the client gives up or the test ends.
func hang(t testing.TB) http.HandlerFunc {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}
}

// closedAddr is a 127.0.0.1 address nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// newRouter builds a router for node n0 with a seeded random source and a quiet logger.
func newRouter(t testing.TB, local http.Handler, members Members, splits Splits, opts Options) *Router {
	t.Helper()
	if opts.Node == "" {
		opts.Node = "n0"
	}
	if opts.Rand == nil {
		opts.Rand = rand.NewPCG(1, 2)
	}
	rt := New(local, members, splits, opts, slog.New(slog.DiscardHandler))
	t.Cleanup(rt.Close)
	return rt
}

// infer sends a POST to the router in process and returns the recorded answer.
func infer(rt http.Handler, path string, body []byte, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	rt.ServeHTTP(rec, req)
	return rec
}

// checkLeaks fails the test if goroutines started during it outlive it. Call it first, so
// that its cleanup runs after the servers' and the router's.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		testutil.Eventually(t, 5*time.Second, func() string {
			if n := runtime.NumGoroutine(); n > before {
				buf := make([]byte, 1<<20)
				return fmt.Sprintf("%d goroutines at the end, %d at the start:\n%s", n, before, buf[:runtime.Stack(buf, true)])
			}
			return ""
		})
	})
}

// peerStats returns the router's record of a node.
func peerStats(rt *Router, node string) PeerStats {
	for _, p := range rt.Stats().Peers {
		if p.Node == node {
			return p
		}
	}
	return PeerStats{Node: node}
}

func randSource(seed uint64) rand.Source { return rand.NewPCG(seed, seed+1) }
