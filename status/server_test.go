package status_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/inferd/inferd/events"
	"github.com/inferd/inferd/status"
)

// fixed is a Source that answers the same status always.
type fixed struct{ st status.Status }

func (f fixed) Name() string                         { return f.st.Node.Name }
func (f fixed) Status(context.Context) status.Status { return f.st }
func (f fixed) Events(since uint64, limit int) (uint64, []events.Event) {
	return 0, nil
}
func (f fixed) History() status.History { return status.History{Node: f.st.Node.Name} }

func serve(t *testing.T, s *status.Server) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	s.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// The cluster view asks every member with the caller's credentials, and says why a member
// has no status: gossip holds it gone, it advertises no address, or it refused.
func TestClusterFanOut(t *testing.T) {
	peer := serve(t, &status.Server{Source: fixed{status.Status{Node: status.Node{Name: "b", Ready: true}}}})
	var sawAuth string
	guarded := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"the bearer token is not valid"}`)
	}))
	defer guarded.Close()
	addr := func(u string) string { return strings.TrimPrefix(u, "http://") }
	s := &status.Server{
		Source: fixed{status.Status{Node: status.Node{Name: "a", Ready: true}}},
		Scheme: "http", Client: http.DefaultClient,
		Peers: func() []status.Peer {
			return []status.Peer{
				{Name: "a", Local: true, Liveness: "alive"},
				{Name: "b", Address: addr(peer.URL), Liveness: "alive"},
				{Name: "c", Address: addr(guarded.URL), Liveness: "alive"},
				{Name: "d", Address: "127.0.0.1:1", Liveness: "dead", Gone: true},
				{Name: "e", Liveness: "alive"},
			}
		},
	}
	srv := serve(t, s)
	cl, err := status.Client{URL: srv.URL, Token: "tok-1"}.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sawAuth != "Bearer tok-1" {
		t.Errorf("the member was asked with %q", sawAuth)
	}
	if len(cl.Nodes) != 5 || cl.Node != "a" || cl.Ready() {
		t.Fatalf("cluster %+v", cl)
	}
	want := []struct {
		name      string
		reachable bool
		err       string
	}{
		{"a", true, ""}, {"b", true, ""}, {"c", false, "401 Unauthorized: the bearer token is not valid"},
		{"d", false, "not asked: gossip holds it dead"}, {"e", false, "it advertises no HTTP address"},
	}
	for i, w := range want {
		m := cl.Nodes[i]
		if m.Name != w.name || m.Reachable != w.reachable || !strings.Contains(m.Error, w.err) || (m.Reachable != (m.Status != nil)) {
			t.Errorf("member %d: %+v, want %+v", i, m, w)
		}
	}
	if cl.Nodes[1].Status.Node.Name != "b" {
		t.Errorf("b's status: %+v", cl.Nodes[1].Status)
	}
	// Every member ready: the cluster is.
	if !(status.Cluster{Nodes: cl.Nodes[:2]}).Ready() || (status.Cluster{}).Ready() {
		t.Error("Ready of two ready members, or of none")
	}
	// History and events answer JSON.
	resp, err := http.Get(srv.URL + status.PathHistory)
	if err != nil {
		t.Fatal(err)
	}
	var h status.History
	err = json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if err != nil || h.Node != "a" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("history: %v %+v %v", err, h, resp.Header)
	}
	var evs status.Events
	resp, err = http.Get(srv.URL + status.PathEvents)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&evs)
	resp.Body.Close()
	if err != nil || evs.Events == nil || evs.Node != "a" {
		t.Errorf("events: %v %+v", err, evs)
	}
}
