package route

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/kserve/kservehttp"
)

// count sends n requests from 16 goroutines (loopback round trips are latency-bound) and counts the answers by key(body).
func count(t *testing.T, rt http.Handler, n int, path string, key func(body string) string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	const workers = 16
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				rec := infer(rt, path, []byte(`{"inputs":[]}`))
				if rec.Code != http.StatusOK {
					t.Errorf("status %d: %s", rec.Code, rec.Body)
					return
				}
				k := key(rec.Body.String())
				mu.Lock()
				counts[k]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}

func nodeOf(body string) string    { n, _, _ := strings.Cut(body, "|"); return n }
func versionOf(body string) string { _, v, _ := strings.Cut(body, "|"); return v }

// TestSplitAccuracy sends 10,000 requests through splits across versions (served here, and
// forwarded with the path rewritten) and across nodes, and checks every share is within one
// percentage point of its weight.
func TestSplitAccuracy(t *testing.T) {
	checkLeaks(t)
	n1, n2 := startPeer(t, "n1"), startPeer(t, "n2")
	tests := []struct {
		name    string
		members []cluster.Member
		split   Split
		key     func(string) string
	}{
		{
			name:    "versions 90/10 served locally",
			members: []cluster.Member{member("n0", "", true, ready("m", "1", "2")), member("n1", n1.addr(), false, ready("m", "1", "2"))},
			split:   Split{Targets: []Target{{Version: "1", Weight: 90}, {Version: "2", Weight: 10}}},
			key:     versionOf,
		},
		{
			name:    "versions thirds served locally",
			members: []cluster.Member{member("n0", "", true, ready("m", "1", "2", "3"))},
			split:   Split{Targets: []Target{{Version: "1", Weight: 33.33}, {Version: "2", Weight: 33.33}, {Version: "3", Weight: 33.34}}},
			key:     versionOf,
		},
		{
			name:    "versions 90/10 on two peers",
			members: []cluster.Member{member("n0", "", true), member("n1", n1.addr(), false, ready("m", "1")), member("n2", n2.addr(), false, ready("m", "2"))},
			split:   Split{Targets: []Target{{Version: "1", Weight: 90}, {Version: "2", Weight: 10}}},
			key:     func(b string) string { return nodeOf(b) + "/" + versionOf(b) },
		},
		{
			name:    "nodes 90/10",
			members: []cluster.Member{member("n0", "", true, ready("m", "1")), member("n1", n1.addr(), false, ready("m", "1"))},
			split:   Split{Targets: []Target{{Node: "n0", Weight: 90}, {Node: "n1", Weight: 10}}},
			key:     nodeOf,
		},
		{
			name: "nodes thirds",
			members: []cluster.Member{member("n0", "", true, ready("m", "1")), member("n1", n1.addr(), false, ready("m", "1")),
				member("n2", n2.addr(), false, ready("m", "1"))},
			split: Split{Targets: []Target{{Node: "n0", Weight: 33.33}, {Node: "n1", Weight: 33.33}, {Node: "n2", Weight: 33.34}}},
			key:   nodeOf,
		},
	}
	const n = 10000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.split.Validate(); err != nil {
				t.Fatal(err)
			}
			members := &fakeMembers{}
			members.set(tt.members...)
			rt := newRouter(t, &echo{name: "n0"}, members, fakeSplits{"m": tt.split}, Options{})
			counts := count(t, rt, n, "/v2/models/m/infer", tt.key)
			for _, target := range tt.split.Targets {
				k := target.Version
				switch {
				case target.Node != "":
					k = target.Node
				case strings.Contains(tt.name, "peers"):
					k = map[string]string{"1": "n1/1", "2": "n2/2"}[target.Version]
				}
				got := 100 * float64(counts[k]) / n
				if math.Abs(got-target.Weight) > 1 {
					t.Errorf("%s got %.2f%% of requests, want %.2f%% ± 1 (all: %v)", k, got, target.Weight, counts)
				}
			}
		})
	}
}

// TestSticky checks that a sticky header value reaches the same target on every request and
// on every node (two routers with different random sources), and that sticky traffic still
// follows the weights.
func TestSticky(t *testing.T) {
	checkLeaks(t)
	split := Split{Targets: []Target{{Version: "1", Weight: 50}, {Version: "2", Weight: 30}, {Version: "3", Weight: 20}}, StickyHeader: "X-Session"}
	router := func(node string, seed uint64) *Router {
		members := &fakeMembers{}
		members.set(member(node, "", true, ready("m", "1", "2", "3")))
		return newRouter(t, &echo{name: node}, members, fakeSplits{"m": split}, Options{Node: node, Rand: randSource(seed)})
	}
	a, b := router("a", 1), router("b", 99)
	const users = 3000
	shares := map[string]int{}
	for u := range users {
		session := fmt.Sprintf("user-%d", u)
		first := versionOf(infer(a, "/v2/models/m/infer", nil, "X-Session", session).Body.String())
		for range 2 {
			if got := versionOf(infer(a, "/v2/models/m/infer", nil, "X-Session", session).Body.String()); got != first {
				t.Fatalf("%s went to version %s, then %s", session, first, got)
			}
		}
		if got := versionOf(infer(b, "/v2/models/m/infer", nil, "X-Session", session).Body.String()); got != first {
			t.Fatalf("%s went to version %s on node a, %s on node b", session, first, got)
		}
		shares[first]++
	}
	for _, target := range split.Targets {
		if got := 100 * float64(shares[target.Version]) / users; math.Abs(got-target.Weight) > 3 {
			t.Errorf("version %s got %.1f%% of sessions, want %.0f%% ± 3", target.Version, got, target.Weight)
		}
	}
}

// TestLocalPreference checks that a request goes to this node whenever it is a candidate, and
// to a peer when it is not (not serving the version, or draining).
func TestLocalPreference(t *testing.T) {
	checkLeaks(t)
	n1 := startPeer(t, "n1")
	tests := []struct {
		name   string
		local  cluster.Member
		splits fakeSplits
		path   string
		want   string
	}{
		{"no split", member("n0", "", true, ready("m", "1")), nil, "/v2/models/m/infer", "n0|-"},
		{"version split", member("n0", "", true, ready("m", "1", "2")), fakeSplits{"m": {Targets: []Target{{Version: "2", Weight: 100}}}}, "/v2/models/m/infer", "n0|2"},
		{"pinned", member("n0", "", true, ready("m", "1")), nil, "/v2/models/m/versions/1/infer", "n0|1"},
		{"version not here", member("n0", "", true, ready("m", "1")), fakeSplits{"m": {Targets: []Target{{Version: "2", Weight: 100}}}}, "/v2/models/m/infer", "n1|2"},
		{"pinned not here", member("n0", "", true, ready("m", "1")), nil, "/v2/models/m/versions/2/infer", "n1|2"},
		{"draining", func() cluster.Member {
			m := member("n0", "", true, ready("m", "1", "2"))
			m.Serving = cluster.ServingDraining
			return m
		}(), nil, "/v2/models/m/infer", "n1|-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			members := &fakeMembers{}
			members.set(tt.local, member("n1", n1.addr(), false, ready("m", "1", "2")))
			rt := newRouter(t, &echo{name: "n0"}, members, tt.splits, Options{})
			for range 50 {
				rec := infer(rt, tt.path, []byte("{}"))
				if got := rec.Body.String(); rec.Code != http.StatusOK || got != tt.want {
					t.Fatalf("answer %d %q, want 200 %q", rec.Code, got, tt.want)
				}
				if got := rec.Header().Get(DefaultServedByHeader); got != nodeOf(tt.want) {
					t.Fatalf("served by %q, want %q", got, nodeOf(tt.want))
				}
			}
			if want := nodeOf(tt.want); peerStats(rt, want).Forwarded != 50 {
				t.Errorf("stats of %s: %+v", want, peerStats(rt, want))
			}
		})
	}
}

// TestLeastLoaded holds requests on one peer and checks that two random choices never pick it
// while two idle peers serve the model.
func TestLeastLoaded(t *testing.T) {
	checkLeaks(t)
	busy, n2, n3 := startPeer(t, "busy"), startPeer(t, "n2"), startPeer(t, "n3")
	held := hang(t)
	busy.behave(func(w http.ResponseWriter, r *http.Request) {
		if _, v, _ := parseInferPath(r.URL.EscapedPath()); v == "9" {
			held(w, r)
			return
		}
		busy.echo.ServeHTTP(w, r)
	})
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("busy", busy.addr(), false, ready("m", "1", "9")),
		member("n2", n2.addr(), false, ready("m", "1")), member("n3", n3.addr(), false, ready("m", "1")))
	rt := newRouter(t, &echo{name: "n0"}, members, nil, Options{PerTryTimeout: -1})

	// More held than count's workers can put on the others at once.
	const holding = 20
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range holding {
		wg.Go(func() {
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v2/models/m/versions/9/infer", nil)
			rt.ServeHTTP(httptest.NewRecorder(), req)
		})
	}
	defer wg.Wait()
	defer cancel()
	testutil.Eventually(t, 5*time.Second, func() string {
		if peerStats(rt, "busy").InFlight == holding {
			return ""
		}
		return fmt.Sprintf("busy peer never had %d requests in flight: %+v", holding, rt.Stats())
	})
	counts := count(t, rt, 200, "/v2/models/m/infer", nodeOf)
	if counts["busy"] != 0 || counts["n2"] == 0 || counts["n3"] == 0 {
		t.Errorf("answers by node %v: want none from busy, some from n2 and n3", counts)
	}
}

// TestForwardedIsServedHere checks that a request another node forwarded is never forwarded
// again, even when only a peer serves the model.
func TestForwardedIsServedHere(t *testing.T) {
	checkLeaks(t)
	n1 := startPeer(t, "n1")
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("n1", n1.addr(), false, ready("m", "1")))
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"model m not found"}`))
	})
	rt := newRouter(t, local, members, nil, Options{})
	rec := infer(rt, "/v2/models/m/infer", nil, DefaultForwardedByHeader, "n5")
	if rec.Code != http.StatusNotFound || rec.Header().Get(DefaultServedByHeader) != "n0" {
		t.Errorf("answer %d served by %q, want the local 404 from n0", rec.Code, rec.Header().Get(DefaultServedByHeader))
	}
	if n := n1.hits.Load(); n != 0 {
		t.Errorf("peer got %d requests", n)
	}
	// Without the mark it is forwarded.
	if rec := infer(rt, "/v2/models/m/infer", nil); rec.Body.String() != "n1|-" {
		t.Errorf("unmarked request answered %d %q, want it forwarded to n1", rec.Code, rec.Body)
	}
}

// TestForwardKeepsProtocol sends a binary request through a router on a real listener to a
// peer and checks the bytes, the end-to-end headers and the query arrive as sent both ways,
// hop-by-hop headers do not, the version is pinned in the path, and the marks are added.
func TestForwardKeepsProtocol(t *testing.T) {
	checkLeaks(t)
	reqBody := append([]byte(`{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`),
		0, 0, 0x80, 0x3f, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0)
	headerLen := fmt.Sprint(len(reqBody) - 16)
	respBody := append([]byte(`{"model_name":"m","outputs":[{"name":"y","parameters":{"binary_data_size":8}}]}`), 0, 1, 0, 0xfd, 0, 0, 0, 0)
	var seen *http.Request
	var seenBody []byte
	n1 := startPeer(t, "n1")
	n1.behave(func(w http.ResponseWriter, r *http.Request) {
		seenBody, _ = io.ReadAll(r.Body)
		seen = r
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Inference-Header-Content-Length", "76")
		w.Header().Set("X-Peer", "yes")
		w.Header().Set("Connection", "X-Peer-Hop")
		w.Header().Set("X-Peer-Hop", "secret")
		_, _ = w.Write(respBody)
	})
	members := &fakeMembers{}
	members.set(member("n0", "", true, ready("m", "1")), member("n1", n1.addr(), false, ready("m", "1", "2")))
	rt := newRouter(t, &echo{name: "n0"}, members, fakeSplits{"m": {Targets: []Target{{Version: "2", Weight: 100}}}}, Options{})
	var arrived http.Header
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived = r.Header.Clone()
		rt.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	client := front.Client()
	t.Cleanup(client.CloseIdleConnections)

	req, _ := http.NewRequest(http.MethodPost, front.URL+"/v2/models/m/infer?trace=1&q=a%20b", bytes.NewReader(reqBody))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Inference-Header-Content-Length", headerLen)
	req.Header.Set("X-Request-Id", "abc")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "secret")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	if seen == nil {
		t.Fatal("the peer got nothing")
	}
	if arrived.Get("X-Hop") != "secret" {
		t.Fatalf("the hop-by-hop header did not reach the router: %v", arrived)
	}
	if seen.URL.Path != "/v2/models/m/versions/2/infer" || seen.URL.RawQuery != "trace=1&q=a%20b" {
		t.Errorf("peer got %s?%s", seen.URL.Path, seen.URL.RawQuery)
	}
	if !bytes.Equal(seenBody, reqBody) {
		t.Errorf("peer got body %q, want %q", seenBody, reqBody)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": headerLen,
		"X-Request-Id": "abc", "X-Hop": "", DefaultForwardedByHeader: "n0", "Content-Length": fmt.Sprint(len(reqBody)),
	} {
		if v := seen.Header.Get(k); v != want && !(k == "Content-Length" && seen.ContentLength == int64(len(reqBody))) {
			t.Errorf("peer got %s %q, want %q", k, v, want)
		}
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, respBody) {
		t.Errorf("client got %d %q, want 200 %q", resp.StatusCode, got, respBody)
	}
	for k, want := range map[string]string{
		"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "76", "X-Peer": "yes",
		"X-Peer-Hop": "", DefaultServedByHeader: "n1", "Content-Length": fmt.Sprint(len(respBody)),
	} {
		if v := resp.Header.Get(k); v != want {
			t.Errorf("client got %s %q, want %q", k, v, want)
		}
	}
}

// TestFailover makes the first choice fail in each way a try can fail, and checks the
// request is answered by another node within the same request.
func TestFailover(t *testing.T) {
	checkLeaks(t)
	good := startPeer(t, "good")
	tests := []struct {
		name  string
		setup func(t *testing.T) cluster.Member // the first choice, which fails
		local http.Handler
		opts  Options
		slow  bool
	}{
		{"closed port", func(t *testing.T) cluster.Member {
			return member("bad", closedAddr(t), false, ready("m", "1"))
		}, nil, Options{}, false},
		{"hung peer", func(t *testing.T) cluster.Member {
			p := startPeer(t, "bad")
			p.behave(hang(t))
			return member("bad", p.addr(), false, ready("m", "1"))
		}, nil, Options{PerTryTimeout: 150 * time.Millisecond}, true},
		{"peer 503", func(t *testing.T) cluster.Member {
			p := startPeer(t, "bad")
			p.behave(unavailable)
			return member("bad", p.addr(), false, ready("m", "1"))
		}, nil, Options{}, false},
		{"peer resets", func(t *testing.T) cluster.Member {
			p := startPeer(t, "bad")
			p.behave(func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			})
			return member("bad", p.addr(), false, ready("m", "1"))
		}, nil, Options{}, false},
		{"local 503", func(t *testing.T) cluster.Member {
			return member("bad", "", true, ready("m", "1"))
		}, http.HandlerFunc(unavailable), Options{Node: "bad"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			bad := tt.setup(t)
			members := &fakeMembers{}
			ms := []cluster.Member{bad, member("good", good.addr(), false, ready("m", "1"))}
			if !bad.Local {
				ms = append(ms, member("n0", "", true))
			}
			members.set(ms...)
			local := tt.local
			if local == nil {
				local = &echo{name: "n0"}
			}
			rt := newRouter(t, local, members, fakeSplits{"m": {Targets: []Target{{Node: "bad", Weight: 100}}}}, tt.opts)
			start := time.Now()
			rec := infer(rt, "/v2/models/m/infer", []byte("{}"))
			elapsed := time.Since(start)
			if rec.Code != http.StatusOK || rec.Body.String() != "good|-" || rec.Header().Get(DefaultServedByHeader) != "good" {
				t.Fatalf("answer %d %q served by %q, want 200 from good", rec.Code, rec.Body, rec.Header().Get(DefaultServedByHeader))
			}
			if h := rec.Header().Get("Retry-After"); h != "" {
				t.Errorf("the failed try's Retry-After %q leaked into the answer", h)
			}
			if tt.slow && elapsed < 150*time.Millisecond || elapsed > 3*time.Second {
				t.Errorf("took %v", elapsed)
			}
			s := rt.Stats()
			if s.Retries != 1 {
				t.Errorf("%d retries, want 1", s.Retries)
			}
			if !bad.Local {
				if f := peerStats(rt, "bad").Failures; f != 1 {
					t.Errorf("bad peer has %d failures, want 1", f)
				}
			}
		})
	}
}

// TestAllFail checks the answer when every node fails: the last 503 relayed as it came, or a
// KServe 503 naming the tries when no node answered.
func TestAllFail(t *testing.T) {
	checkLeaks(t)
	busy := startPeer(t, "busy")
	busy.behave(unavailable)
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("d1", closedAddr(t), false, ready("m", "1")),
		member("d2", closedAddr(t), false, ready("m", "1")))
	rt := newRouter(t, &echo{name: "n0"}, members, nil, Options{})
	rec := infer(rt, "/v2/models/m/infer", []byte("{}"))
	var e struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != http.StatusServiceUnavailable ||
		!strings.Contains(e.Error, "no node could serve the request (tried d") || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("answer %d %q", rec.Code, rec.Body)
	}

	members.set(member("n0", "", true), member("d1", closedAddr(t), false, ready("m", "1")),
		member("busy", busy.addr(), false, ready("m", "1")))
	rec = infer(rt, "/v2/models/m/infer", []byte("{}"))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != `{"error":"queue full"}` {
		t.Errorf("answer %d %q, want the busy peer's 503", rec.Code, rec.Body)
	}

	// A local 503 held back for a retry that finds no other node is relayed as it was.
	members.set(member("n0", "", true, ready("m", "1")))
	rt = newRouter(t, http.HandlerFunc(unavailable), members, nil, Options{})
	rec = infer(rt, "/v2/models/m/infer", []byte("{}"))
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != `{"error":"queue full"}` ||
		rec.Header().Get("Retry-After") != "1" || rec.Header().Get(DefaultServedByHeader) != "n0" {
		t.Errorf("answer %d %q %v, want the local 503", rec.Code, rec.Body, rec.Header())
	}
}

// TestDeadline checks that no try outlives the client's deadline and none starts after it.
func TestDeadline(t *testing.T) {
	checkLeaks(t)
	hung, good := startPeer(t, "hung"), startPeer(t, "good")
	hung.behave(hang(t))
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("hung", hung.addr(), false, ready("m", "1")), member("good", good.addr(), false, ready("m", "1")))
	rt := newRouter(t, &echo{name: "n0"}, members, fakeSplits{"m": {Targets: []Target{{Node: "hung", Weight: 100}}}}, Options{PerTryTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v2/models/m/infer", strings.NewReader("{}"))
	rec := httptest.NewRecorder()
	start := time.Now()
	rt.ServeHTTP(rec, req)
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %v with a 100ms deadline", elapsed)
	}
	if rec.Code != http.StatusGatewayTimeout || !strings.Contains(rec.Body.String(), "deadline") {
		t.Errorf("answer %d %q, want 504", rec.Code, rec.Body)
	}
	if n := good.hits.Load(); n != 0 {
		t.Errorf("a retry went to good after the deadline")
	}
	if f := peerStats(rt, "hung").Failures; f != 0 {
		t.Errorf("the client's deadline counted as %d failures of the peer", f)
	}
}

// TestRetryBudget checks that retries stop when the budget is spent and resume when the window
// moves on.
func TestRetryBudget(t *testing.T) {
	checkLeaks(t)
	bad, good := startPeer(t, "bad"), startPeer(t, "good")
	bad.behave(unavailable)
	tests := []struct {
		name    string
		budget  RetryBudget
		retried int // of 10 requests
	}{
		{"floor of 3", RetryBudget{Ratio: -1, MinPerSecond: 0.3, Window: 10 * time.Second}, 3},
		{"half of the requests", RetryBudget{Ratio: 0.5, MinPerSecond: -1, Window: 10 * time.Second}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			members := &fakeMembers{}
			members.set(member("n0", "", true), member("bad", bad.addr(), false, ready("m", "1")), member("good", good.addr(), false, ready("m", "1")))
			rt := newRouter(t, &echo{name: "n0"}, members, fakeSplits{"m": {Targets: []Target{{Node: "bad", Weight: 100}}}},
				Options{RetryBudget: tt.budget, Ejection: Ejection{ConsecutiveFailures: -1}, Now: clock.Now})
			byStatus := map[int]int{}
			for range 10 {
				byStatus[infer(rt, "/v2/models/m/infer", nil).Code]++
			}
			if byStatus[http.StatusOK] != tt.retried || byStatus[http.StatusServiceUnavailable] != 10-tt.retried {
				t.Errorf("answers by status %v, want %d retried to 200", byStatus, tt.retried)
			}
			if s := rt.Stats(); s.Retries != uint64(tt.retried) || s.BudgetExhausted != uint64(10-tt.retried) {
				t.Errorf("stats %+v", s)
			}
			clock.Advance(11 * time.Second)
			if rec := infer(rt, "/v2/models/m/infer", nil); tt.budget.MinPerSecond > 0 && rec.Code != http.StatusOK {
				t.Errorf("after the window moved on: %d %q", rec.Code, rec.Body)
			}
		})
	}
}

// TestEjection checks that a peer is ejected after consecutive failures, re-admitted after
// the ejection time, ejected again on its first failure with twice the time, and cleared by a
// success; and that an ejected peer is still used when no other node can serve.
func TestEjection(t *testing.T) {
	checkLeaks(t)
	bad, good := startPeer(t, "bad"), startPeer(t, "good")
	bad.behave(unavailable)
	clock := newFakeClock()
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("bad", bad.addr(), false, ready("m", "1")), member("good", good.addr(), false, ready("m", "1")))
	rt := newRouter(t, &echo{name: "n0"}, members, fakeSplits{"m": {Targets: []Target{{Node: "bad", Weight: 100}}}},
		Options{Ejection: Ejection{ConsecutiveFailures: 3, BaseTime: 10 * time.Second, MaxTime: 15 * time.Second}, Now: clock.Now})
	send := func(wantTried bool) {
		t.Helper()
		before := bad.hits.Load()
		if rec := infer(rt, "/v2/models/m/infer", nil); rec.Code != http.StatusOK {
			t.Fatalf("answer %d %q", rec.Code, rec.Body)
		}
		if tried := bad.hits.Load() > before; tried != wantTried {
			t.Fatalf("bad peer tried: %v, want %v (stats %+v)", tried, wantTried, peerStats(rt, "bad"))
		}
	}
	ejected := func(want time.Duration) {
		t.Helper()
		s := peerStats(rt, "bad")
		var got time.Duration
		if !s.EjectedUntil.IsZero() {
			got = s.EjectedUntil.Sub(clock.Now())
		}
		if got != want {
			t.Fatalf("ejected for %v more, want %v (%+v)", got, want, s)
		}
	}
	for range 3 {
		send(true)
	}
	ejected(10 * time.Second)
	send(false)
	clock.Advance(10 * time.Second)
	ejected(0)
	send(true) // on probation: one failure ejects again, for twice as long (capped at 15 s)
	ejected(15 * time.Second)
	clock.Advance(10 * time.Second)
	send(false)
	clock.Advance(5 * time.Second)
	bad.behave(nil)
	if rec := infer(rt, "/v2/models/m/infer", nil); rec.Body.String() != "bad|-" {
		t.Fatalf("re-admitted peer did not serve: %d %q", rec.Code, rec.Body)
	}
	if s := peerStats(rt, "bad"); s.Ejections != 0 || s.ConsecutiveFailures != 0 {
		t.Fatalf("a success did not clear the record: %+v", s)
	}
	bad.behave(unavailable)
	send(true) // one failure after a success does not eject
	ejected(0)

	// Panic mode: with every peer that serves the model ejected, the ejected one is tried.
	send(true)
	send(true)
	ejected(10 * time.Second)
	members.set(member("n0", "", true), member("bad", bad.addr(), false, ready("m", "1")))
	bad.behave(nil)
	if rec := infer(rt, "/v2/models/m/infer", nil); rec.Body.String() != "bad|-" {
		t.Fatalf("only (ejected) server not tried: %d %q", rec.Code, rec.Body)
	}
}

// TestBodyLimit checks 413 for a body over MaxBodyBytes that the router must buffer, with and
// without a Content-Length.
func TestBodyLimit(t *testing.T) {
	checkLeaks(t)
	n1 := startPeer(t, "n1")
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("n1", n1.addr(), false, ready("m", "1")))
	rt := newRouter(t, &echo{name: "n0"}, members, nil, Options{MaxBodyBytes: func() int64 { return 1024 }})
	for _, length := range []int64{2048, -1} {
		req := httptest.NewRequest(http.MethodPost, "/v2/models/m/infer", bytes.NewReader(make([]byte, 2048)))
		req.ContentLength = length
		rec := httptest.NewRecorder()
		rt.ServeHTTP(rec, req)
		var e struct{ Error string }
		if rec.Code != http.StatusRequestEntityTooLarge || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, "1024 bytes") {
			t.Errorf("content length %d: answer %d %q, want a KServe 413", length, rec.Code, rec.Body)
		}
	}
	if n := n1.hits.Load(); n != 0 {
		t.Errorf("peer got %d requests", n)
	}
	if rec := infer(rt, "/v2/models/m/infer", make([]byte, 1024)); rec.Code != http.StatusOK {
		t.Errorf("a body at the limit: %d %q", rec.Code, rec.Body)
	}
}

// TestUnplaced checks the answer when no node is a candidate: the local handler's when this
// node lists the model or nobody does, else a KServe 503 that says why.
func TestUnplaced(t *testing.T) {
	checkLeaks(t)
	loading := []cluster.CatalogVersion{{Model: "m", Version: "1", State: "loading"}}
	tests := []struct {
		name     string
		members  []cluster.Member
		split    fakeSplits
		want     int
		wantBody string
	}{
		{"nobody lists it", []cluster.Member{member("n0", "", true), member("n1", "127.0.0.1:1", false, ready("x", "1"))}, nil, 404, `not found /v2/models/m/infer`},
		{"here but loading", []cluster.Member{member("n0", "", true, loading), member("n1", "127.0.0.1:1", false)}, nil, 404, `not found /v2/models/m/infer`},
		{"split version nowhere", []cluster.Member{member("n0", "", true, ready("m", "1"))}, fakeSplits{"m": {Targets: []Target{{Version: "2", Weight: 100}}}}, 404, `not found /v2/models/m/versions/2/infer`},
		{"peer loading", []cluster.Member{member("n0", "", true), member("n1", "127.0.0.1:1", false, loading)}, nil, 503, `model \"m\" is not served by this node`},
		{"peer draining", []cluster.Member{member("n0", "", true), func() cluster.Member {
			m := member("n1", "127.0.0.1:1", false, ready("m", "1"))
			m.Serving = cluster.ServingDraining
			return m
		}()}, nil, 503, `no node of the cluster that lists it can take requests now`},
	}
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"not found %s"}`, r.URL.Path)
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			members := &fakeMembers{}
			members.set(tt.members...)
			rt := newRouter(t, local, members, tt.split, Options{})
			rec := infer(rt, "/v2/models/m/infer", nil)
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("answer %d %s, want %d with %q", rec.Code, rec.Body, tt.want, tt.wantBody)
			}
		})
	}
}

// TestNotRouted checks that everything but infer goes to the local handler untouched.
func TestNotRouted(t *testing.T) {
	checkLeaks(t)
	members := &fakeMembers{}
	members.set(member("n0", "", true), member("n1", "127.0.0.1:1", false, ready("m", "1")))
	var got []string
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = append(got, r.Method+" "+r.URL.RequestURI()) })
	rt := newRouter(t, local, members, nil, Options{})
	for _, tt := range []struct{ method, path string }{
		{"GET", "/v2/models/m"}, {"GET", "/v2/models/m/infer"}, {"POST", "/v2/repository/index"},
		{"POST", "/v2/models/m/versions/1/ready?x=1"}, {"GET", "/metrics"},
	} {
		rec := httptest.NewRecorder()
		rt.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
		if rec.Header().Get(DefaultServedByHeader) != "" {
			t.Errorf("%s %s was routed", tt.method, tt.path)
		}
	}
	if len(got) != 5 || got[3] != "POST /v2/models/m/versions/1/ready?x=1" {
		t.Errorf("local handler got %q", got)
	}
	if s := rt.Stats(); s.Routed != 0 {
		t.Errorf("routed %d", s.Routed)
	}
}

// TestBodyHandedOn checks that a body the router read to route a request reaches the local
// handler without being read again: the handler's kservehttp.Read takes the router's buffer
// and leaves the request's body unread, and a peer after a local 503 gets the same bytes.
func TestBodyHandedOn(t *testing.T) {
	checkLeaks(t)
	n1 := startPeer(t, "n1")
	var peerGot atomic.Pointer[[]byte]
	n1.behave(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		peerGot.Store(&b)
	})
	sent := []byte(`{"inputs":[]}`)
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := kservehttp.Read(w, r, kservehttp.Options{Limit: 1024})
		if err != nil {
			t.Errorf("local Read: %v", err)
			return
		}
		if got := bytes.Join(body.Parts(), nil); !bytes.Equal(got, sent) {
			t.Errorf("local handler got %q, want %q", got, sent)
		}
		if rest, _ := io.ReadAll(r.Body); !bytes.Equal(rest, sent) {
			t.Errorf("Read consumed the request's body (%q left): it read the body again", rest)
		}
		unavailable(w, r)
	})
	members := &fakeMembers{}
	members.set(member("n0", "", true, ready("m", "1")), member("n1", n1.addr(), false, ready("m", "1")))
	rt := newRouter(t, local, members, nil, Options{MaxRetries: 1})
	if rec := infer(rt, "/v2/models/m/infer", sent); rec.Code != http.StatusOK || rec.Header().Get(DefaultServedByHeader) != "n1" {
		t.Fatalf("answer %d %q from %q, want 200 from n1 after the local 503", rec.Code, rec.Body, rec.Header().Get(DefaultServedByHeader))
	}
	if got := peerGot.Load(); got == nil || !bytes.Equal(*got, sent) {
		t.Errorf("peer got %q, want %q", got, sent)
	}
}

// RouteInfer serves the tries it keeps here with the handler it is given (another front end's
// own, which reads no body) instead of the router's local handler, by the same rules: a local
// 503 fails over to a peer, a pinned version reaches the handler in the path, and a request
// that is not an inference request is refused.
func TestRouteInfer(t *testing.T) {
	checkLeaks(t)
	n1 := startPeer(t, "n1")
	members := &fakeMembers{}
	members.set(member("n0", "", true, ready("m", "1", "2"), ready("busy", "1")), member("n1", n1.addr(), false, ready("busy", "1"), ready("far", "1")))
	routerLocal := &echo{name: "router's local handler"}
	rt := newRouter(t, routerLocal, members, fakeSplits{"m": {Targets: []Target{{Version: "2", Weight: 100}}}}, Options{})
	own := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		model, version, _ := parseInferPath(r.URL.EscapedPath())
		if model == "busy" {
			unavailable(w, r)
			return
		}
		fmt.Fprintf(w, "own|%s|%s", version, w.Header().Get(DefaultServedByHeader))
	})
	tests := []struct{ path, want, servedBy string }{
		{"/v2/models/m/infer", "own|2|n0", "n0"},   // the split's version, pinned for the handler
		{"/v2/models/busy/infer", "n1|-", "n1"},    // the handler's 503 moves the request on
		{"/v2/models/far/infer", "n1|-", "n1"},     // served only by a peer: forwarded as it is
		{"/v2/models/none/infer", "own||n0", "n0"}, // nobody lists it: the handler answers
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		if err := rt.RouteInfer(rec, httptest.NewRequest(http.MethodPost, tt.path, strings.NewReader("{}")), own); err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		if got := rec.Body.String(); rec.Code != http.StatusOK || got != tt.want || rec.Header().Get(DefaultServedByHeader) != tt.servedBy {
			t.Errorf("%s: %d %q served by %q, want %q from %s", tt.path, rec.Code, got, rec.Header().Get(DefaultServedByHeader), tt.want, tt.servedBy)
		}
	}
	if n := routerLocal.hits.Load(); n != 0 {
		t.Errorf("the router's own local handler served %d requests", n)
	}
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/v2/models/m/infer", nil),
		httptest.NewRequest(http.MethodPost, "/v2/models/m", nil),
	} {
		if err := rt.RouteInfer(httptest.NewRecorder(), r, own); !errors.Is(err, ErrNotInfer) {
			t.Errorf("%s %s: %v, want ErrNotInfer", r.Method, r.URL, err)
		}
	}
}
