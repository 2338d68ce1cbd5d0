package admin_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/admin"
	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/cluster/route"
)

var since = time.Date(2025, 3, 1, 11, 58, 30, 0, time.UTC)

type fakeNode struct{ members []cluster.Member }

func (n fakeNode) Name() string              { return "edge-1" }
func (n fakeNode) Members() []cluster.Member { return n.members }

type fakeRouter struct{}

func (fakeRouter) Stats() route.Stats {
	return route.Stats{Routed: 5, Retries: 1, Peers: []route.PeerStats{{Node: "edge-1", Local: true, Forwarded: 5}}}
}

// fakeRollouts knows one rollout, of model "m", and refuses a promote with a conflict.
type fakeRollouts struct {
	mu     sync.Mutex
	states []rollout.State
	calls  []string
}

func (f *fakeRollouts) Status() []rollout.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.states
}

func (f *fakeRollouts) do(call, model string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call+" "+model)
	if model != "m" {
		return fmt.Errorf("rollout of %q: %w", model, rollout.ErrNoDefinition)
	}
	if call == "promote" {
		return errors.New("the rollout is not paused")
	}
	return nil
}

func (f *fakeRollouts) Start(model string) error       { return f.do("start", model) }
func (f *fakeRollouts) Promote(model string) error     { return f.do("promote", model) }
func (f *fakeRollouts) PromoteFull(model string) error { return f.do("promote-full", model) }
func (f *fakeRollouts) Abort(model, reason string) error {
	return f.do("abort("+reason+")", model)
}

func (f *fakeRollouts) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func serve(t *testing.T, ro *fakeRollouts) string {
	t.Helper()
	node := fakeNode{members: []cluster.Member{
		{Name: "edge-1", Local: true, HTTPAddr: "10.0.0.1:8080", GossipAddr: "10.0.0.1:7946", Serving: cluster.ServingReady,
			Liveness: cluster.LivenessAlive, Class: "cpu", Since: since, MetaGeneration: 3,
			Catalog: cluster.Catalog{Generation: 2, Models: []cluster.CatalogVersion{{Model: "m", Version: "1", State: "ready", Provider: "cpu"}}}},
		{Name: "edge-2", Serving: cluster.ServingDraining, Liveness: cluster.LivenessAlive},
	}}
	mux := http.NewServeMux()
	admin.Server{Node: node, Router: fakeRouter{}, Rollouts: ro}.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

// The bytes on the wire are what scripts and older CLIs read: pin them exactly.
func TestServerJSON(t *testing.T) {
	ro := &fakeRollouts{}
	url := serve(t, ro)
	tests := []struct {
		path, want string
	}{
		{admin.PathMembers, `{"node":"edge-1","members":[` +
			`{"name":"edge-1","local":true,"liveness":"alive","serving":"ready","routable":true,"http_addr":"10.0.0.1:8080","gossip_addr":"10.0.0.1:7946","class":"cpu","since":"2025-03-01T11:58:30Z","catalog_generation":2,"catalog_stale":true,"models":[{"model":"m","version":"1","state":"ready","provider":"cpu"}]},` +
			`{"name":"edge-2","liveness":"alive","serving":"draining","routable":false,"http_addr":"","gossip_addr":"","class":"","since":"0001-01-01T00:00:00Z","catalog_generation":0,"models":[]}],` +
			`"routing":{"routed":5,"retries":1,"budget_exhausted":0,"peers":[{"node":"edge-1","local":true,"in_flight":0,"forwarded":5,"failures":0,"consecutive_failures":0}]}}`},
		// No rollout is [], not null.
		{admin.PathRollouts, `{"node":"edge-1","rollouts":[]}`},
	}
	for _, tt := range tests {
		status, body := do(t, http.MethodGet, url+tt.path, "")
		if status != http.StatusOK || body != tt.want {
			t.Errorf("GET %s: %d\n got %s\nwant %s", tt.path, status, body, tt.want)
		}
	}
}

func TestServerActions(t *testing.T) {
	ro := &fakeRollouts{states: []rollout.State{{Model: "m", Phase: rollout.PhasePaused, Step: 1, CanaryWeight: 10, Generation: 4}}}
	url := serve(t, ro)
	tests := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"start", "/m/start", "", 200, `{"model":"m","step":1,"canary_weight":10,"phase":"paused","generation":4}`},
		{"conflict", "/m/promote", "", 409, `{"error":"the rollout is not paused"}`},
		{"no rollout", "/other/promote-full", "", 404, `{"error":"rollout of \"other\": no rollout is defined for the model on this node"}`},
		{"unknown action", "/m/resume", "", 404, `{"error":"unknown rollout action \"resume\" (start, promote, promote-full, abort)"}`},
		{"abort without reason", "/m/abort", " \n", 200, `{"model":"m","step":1,"canary_weight":10,"phase":"paused","generation":4}`},
		{"abort with reason", "/m/abort", `{"reason":"p99"}`, 200, `{"model":"m","step":1,"canary_weight":10,"phase":"paused","generation":4}`},
		{"abort with a bad body", "/m/abort", `p99`, 400, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, http.MethodPost, url+admin.PathRollouts+tt.path, tt.body)
			if status != tt.status || (tt.want != "" && body != tt.want) {
				t.Errorf("%d %s, want %d %s", status, body, tt.status, tt.want)
			}
		})
	}
	want := []string{"start m", "promote m", "promote-full other", "abort(aborted by an operator) m", "abort(aborted by an operator: p99) m"}
	if got := ro.called(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("controller calls %q, want %q", got, want)
	}
	if status, body := do(t, http.MethodGet, url+"/v2/cluster/nothing", ""); status != 404 || body != `{"error":"no cluster endpoint GET /v2/cluster/nothing"}` {
		t.Errorf("unknown endpoint: %d %s", status, body)
	}
}

// The client decodes what the server writes, and tells outcomes apart by status.
func TestClient(t *testing.T) {
	ro := &fakeRollouts{states: []rollout.State{{Model: "m", Phase: rollout.PhasePaused, Updated: since}}}
	c := admin.Client{URL: serve(t, ro) + "/"}
	ctx := context.Background()
	m, err := c.Members(ctx)
	if err != nil || m.Node != "edge-1" || len(m.Members) != 2 || !m.Members[0].CatalogStale || m.Members[1].Routable ||
		m.Members[0].Models[0].Provider != "cpu" || m.Routing.Routed != 5 || !m.Members[0].Since.Equal(since) {
		t.Errorf("members: %+v %v", m, err)
	}
	r, err := c.Rollouts(ctx)
	if err != nil || len(r.Rollouts) != 1 || r.Rollouts[0].Phase != rollout.PhasePaused || !r.Rollouts[0].Updated.Equal(since) {
		t.Errorf("rollouts: %+v %v", r, err)
	}
	if st, err := c.Act(ctx, "m", admin.ActionAbort, "p99"); err != nil || st.Model != "m" {
		t.Errorf("abort: %+v %v", st, err)
	}
	if got := ro.called(); len(got) != 1 || got[0] != "abort(aborted by an operator: p99) m" {
		t.Errorf("abort reached the controller as %q", got)
	}

	_, err = c.Act(ctx, "other", admin.ActionStart, "")
	var se *admin.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound || errors.Is(err, admin.ErrNotClustered) ||
		!strings.Contains(err.Error(), "404 Not Found: rollout of \"other\"") {
		t.Errorf("start of a model without rollout: %v; want a 404 that is not ErrNotClustered", err)
	}
	if _, err := c.Act(ctx, "m", admin.ActionPromote, ""); !errors.As(err, &se) || se.Status != http.StatusConflict {
		t.Errorf("refused promote: %v; want 409", err)
	}
}

// A node without clustering answers 404 whatever its message: that, not the text, is what the
// client goes by.
func TestClientNotClustered(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "whatever a node without clustering says")
	}))
	defer srv.Close()
	c := admin.Client{URL: srv.URL}
	if _, err := c.Members(context.Background()); !errors.Is(err, admin.ErrNotClustered) || !strings.Contains(err.Error(), "whatever a node") {
		t.Errorf("members: %v; want ErrNotClustered with the node's message", err)
	}
	if _, err := c.Rollouts(context.Background()); !errors.Is(err, admin.ErrNotClustered) {
		t.Errorf("rollouts: %v; want ErrNotClustered", err)
	}
}
