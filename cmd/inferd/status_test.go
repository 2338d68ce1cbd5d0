package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/engine/enginetest"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/status"
)

// startDaemon runs an in-process daemon over a fake engine serving versions 1 and 2 of model
// "double", with cfg changed by mutate, and returns its URL once GET ready answers 200.
func startDaemon(t *testing.T, name string, mutate func(*config.Config), ready string) string {
	t.Helper()
	repo := t.TempDir()
	rt := enginetest.New()
	for _, v := range []string{"1", "2"} {
		testutil.WriteFile(t, repo, "double/"+v+"/model.onnx", []byte("fake"))
		rt.Register(filepath.Join(repo, "double", v, "model.onnx"), doubleSig, identity)
	}
	testutil.WriteFile(t, repo, "double/model.toml", []byte("[version_policy]\nall = true\n"))
	cfg := config.Default()
	cfg.Models.Repository = repo
	mutate(&cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	d, err := daemon.New(&cfg, daemon.Options{Version: "test", Runtime: rt, Listener: ln}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	url := "http://" + ln.Addr().String()
	testutil.WaitFor(t, 20*time.Second, name+" answers "+ready, func() bool {
		resp, err := http.Get(url + ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url
}

// TestStatusTables renders fixed answers of the status endpoint at a fixed time.
func TestStatusTables(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct{ fixture, golden string }{
		{"status.json", "status.golden"},
		{"status-cluster.json", "status-cluster.golden"},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", c.fixture))
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if strings.Contains(c.fixture, "cluster") {
			var cl status.Cluster
			if err := json.Unmarshal(data, &cl); err != nil {
				t.Fatal(err)
			}
			writeCluster(&b, cl, now)
		} else {
			var st status.Status
			if err := json.Unmarshal(data, &st); err != nil {
				t.Fatal(err)
			}
			writeStatus(&b, st, now)
		}
		golden(t, c.golden, b.String())
	}
}

// infer sends one request to version v of model double.
func infer(t *testing.T, url, v string) {
	t.Helper()
	body := `{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1,2]}]}`
	resp, err := http.Post(url+"/v2/models/double/versions/"+v+"/infer", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("infer: %d %s", resp.StatusCode, b)
	}
}

// TestStatusAgainstDaemon reads a real daemon's status under load: tables, JSON and exit
// status, and the events of its loads.
func TestStatusAgainstDaemon(t *testing.T) {
	url := startDaemon(t, "solo", func(cfg *config.Config) { cfg.Cluster.Name = "solo" }, "/ready")
	var st status.Status
	testutil.Eventually(t, 20*time.Second, func() string {
		infer(t, url, "1")
		out, err := run(t, "status", "--server", url, "--json")
		if err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(st.Models) == 2 && st.Models[0].RequestsPerSecond > 0 && st.Models[0].P50Ms != nil {
			return ""
		}
		return "no rate for double 1 yet: " + out
	})
	if st.Node.Name != "solo" || !st.Node.Ready || st.Node.State != status.StateReady || st.Node.Version != "test" {
		t.Errorf("node %+v", st.Node)
	}
	m := st.Models[0]
	if m.Model != "double" || m.Version != "1" || m.State != "ready" || m.Instances < 1 || m.Errors != 0 || m.LastLoad == nil || m.LastLoad.Result != "loaded" {
		t.Errorf("row of double 1: %+v", m)
	}
	if st.Hardware.CPU.Threads < 1 || st.Hardware.Memory.TotalBytes == 0 || st.WindowSeconds != 60 {
		t.Errorf("hardware %+v window %v", st.Hardware, st.WindowSeconds)
	}
	loads := 0
	for _, e := range st.Events {
		if e.Kind == "load" && e.Model == "double" {
			loads++
		}
	}
	if loads != 2 {
		t.Errorf("events: %+v, want a load of each version", st.Events)
	}
	out, err := run(t, "status", "--server", url)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"node:", "solo, inferd test", "state:", "ready", "MODEL", "double", "loaded", "load"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// The events endpoint gives what came after a sequence number.
	var evs status.Events
	if err := json.Unmarshal(get(t, url+status.PathEvents+"?since=1").body, &evs); err != nil {
		t.Fatal(err)
	}
	if evs.Last < 2 || len(evs.Events) != int(evs.Last-1) || evs.Events[0].Seq != 2 {
		t.Errorf("events since 1: %+v", evs)
	}
	if resp, err := http.Get(url + status.PathEvents + "?since=x"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("events since=x: %v %v, want 400", resp, err)
	}
	if resp, err := http.Get(url + status.Path + "?cluster=maybe"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status cluster=maybe: %v %v, want 400", resp, err)
	}
	// Outside a cluster the cluster view is this node alone.
	out, err = run(t, "status", "--server", url, "--cluster")
	if err != nil || !strings.Contains(out, "solo (answering)") {
		t.Errorf("status --cluster of a lone node: %v\n%s", err, out)
	}
}

// blackhole accepts connections and never answers, like a member that was SIGSTOPped or
// partitioned after the handshake.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestStatusClusterWithAnUnreachableMember: a member whose HTTP listener does not answer shows
// as unreachable, the others as they are, and the exit status says not every member is ready.
func TestStatusClusterWithAnUnreachableMember(t *testing.T) {
	a := startNode(t, "a", nil, "")
	var raw struct {
		Members []struct {
			GossipAddr string `json:"gossip_addr"`
		} `json:"members"`
	}
	if err := json.Unmarshal(get(t, a+"/v2/cluster/members").body, &raw); err != nil || len(raw.Members) != 1 {
		t.Fatalf("members: %v %+v", err, raw)
	}
	hole := blackhole(t)
	startDaemon(t, "b", func(cfg *config.Config) {
		cfg.Cluster.Enabled, cfg.Cluster.Name, cfg.Cluster.Bind = true, "b", "127.0.0.1:0"
		cfg.Cluster.Join = []string{raw.Members[0].GossipAddr}
		cfg.Cluster.LeaveTimeout = 10 * time.Millisecond
		cfg.Cluster.HTTPAdvertise = hole
	}, "/ready")
	testutil.WaitFor(t, 20*time.Second, "a sees b", func() bool {
		return strings.Contains(string(get(t, a+"/v2/cluster/members").body), `"name":"b"`)
	})
	out, err := run(t, "status", "--server", a, "--cluster")
	var code exitCode
	if !errors.As(err, &code) || code != exitNotReady {
		t.Fatalf("status --cluster with b unreachable: %v, want exit %d\n%s", err, exitNotReady, out)
	}
	for _, want := range []string{"a (answering)", "ready", "b ", "unreachable", "no answer within 2s", "NODE  MODEL"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var cl status.Cluster
	out, _ = run(t, "status", "--server", a, "--cluster", "--json")
	if err := json.Unmarshal([]byte(out), &cl); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(cl.Nodes) != 2 || !cl.Nodes[0].Reachable || cl.Nodes[0].Status == nil || cl.Nodes[1].Reachable || cl.Nodes[1].Address != hole {
		t.Errorf("cluster JSON: %+v", cl)
	}
	// a's events say b joined.
	testutil.Eventually(t, 10*time.Second, func() string {
		body := string(get(t, a+status.PathEvents).body)
		if strings.Contains(body, `"kind":"member_join","level":"info","node":"b"`) {
			return ""
		}
		return "no join of b in " + body
	})
}

// TestStatusTokens: the command says in one line what a 401 or 403 means, and reads the
// status with a valid token.
func TestStatusTokens(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("infer letmein-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startDaemon(t, "guarded", func(cfg *config.Config) { cfg.Auth.TokensFile = tokens }, "/ready")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "401 Unauthorized (no token was sent: pass --token or set $INFERD_TOKEN)"},
		{[]string{"--token", "wrong"}, "401 Unauthorized (the token was refused)"},
	} {
		_, err := run(t, append([]string{"status", "--server", url}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("status %v: %v, want one line with %q", c.args, err, c.want)
		}
	}
	if out, err := run(t, "status", "--server", url, "--token", "letmein-0123456789"); err != nil || !strings.Contains(out, "double") {
		t.Errorf("status with a valid token: %v\n%s", err, out)
	}
	// Every scope of the token file reaches the status, so a 403 comes from a front that
	// asks for more.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":"this endpoint needs a token of scope admin; this token has scope infer"}`)
	}))
	defer srv.Close()
	_, err := run(t, "status", "--server", srv.URL, "--token", "x")
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden") || !strings.Contains(err.Error(), "scope admin") {
		t.Errorf("a 403: %v", err)
	}
	// A node that does not answer at all is an error, not a "not ready".
	_, err = run(t, "status", "--server", "http://"+blackhole(t), "--timeout", "50ms")
	var code exitCode
	if err == nil || errors.As(err, &code) {
		t.Errorf("status of a node that does not answer: %v", err)
	}
}

// frames is a writer that cancels the watch after n frames.
type frames struct {
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
	buf    bytes.Buffer
}

func (f *frames) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if bytes.HasPrefix(p, []byte("\x1b[H\x1b[2J")) {
		f.n--
		if f.n == 0 {
			f.cancel()
		}
	}
	return f.buf.Write(p)
}

func TestStatusWatch(t *testing.T) {
	url := startDaemon(t, "w", func(cfg *config.Config) { cfg.Cluster.Name = "w" }, "/ready")
	ctx, cancel := context.WithCancel(context.Background())
	out := &frames{n: 3, cancel: cancel}
	root := newRootCommand(out, io.Discard, nil)
	root.SetArgs([]string{"status", "--server", url, "--watch", "--interval", "10ms"})
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("watch: %v", err)
	}
	got := out.buf.String()
	if n := strings.Count(got, "\x1b[H\x1b[2J"); n != 3 {
		t.Errorf("%d frames, want 3", n)
	}
	if n := strings.Count(got, "w, inferd test, up"); n != 3 {
		t.Errorf("%d frames show the node, want 3:\n%s", n, got)
	}
}
