package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/admin"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/tensor"
)

var update = flag.Bool("update", false, "rewrite the golden files of the CLI tables")

// run executes the CLI with args and returns its output and error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand(&out, &errOut, nil)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String() + errOut.String(), err
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gossip.key")
	out, err := run(t, "keygen", "--out", path)
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	key, err := cluster.LoadKeyFile(path)
	if err != nil {
		t.Fatalf("cluster.LoadKeyFile refuses what keygen wrote: %v", err)
	}
	if len(key) != 32 {
		t.Errorf("key of %d bytes, want 32", len(key))
	}
	first, _ := os.ReadFile(path)

	// A second run must not touch the key the cluster already uses.
	if out, err := run(t, "keygen", "--out", path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("keygen over an existing file: err %v, out %q; want a refusal", err, out)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, first) {
		t.Error("keygen changed an existing key file")
	}

	// Two keys differ (they come from crypto/rand).
	other := filepath.Join(dir, "other.key")
	if _, err := run(t, "keygen", "-o", other); err != nil {
		t.Fatal(err)
	}
	if k2, _ := cluster.LoadKeyFile(other); bytes.Equal(k2, key) {
		t.Error("two runs wrote the same key")
	}
	if _, err := run(t, "keygen"); err == nil {
		t.Error("keygen without --out succeeded")
	}
}

func TestKeygenRemovesAnIncompleteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	err := writeKeyFile(path, iotest.ErrReader(errors.New("no entropy")))
	if err == nil {
		t.Fatal("no error from a failing random source")
	}
	if _, serr := os.Stat(path); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("a failed keygen left %s behind (%v)", path, serr)
	}
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// TestClusterTables renders fixed answers of the endpoints at a fixed time.
func TestClusterTables(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	read := func(name string, v any) {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatal(err)
		}
	}
	var m admin.Members
	read("members.json", &m)
	var b bytes.Buffer
	writeMembers(&b, m, now)
	golden(t, "members.golden", b.String())

	var r admin.Rollouts
	read("rollouts.json", &r)
	b.Reset()
	writeRollouts(&b, r, now)
	b.WriteString("\n")
	writeRollout(&b, r.Rollouts[0], now)
	golden(t, "rollouts.golden", b.String())

	b.Reset()
	writeRollouts(&b, admin.Rollouts{Node: "edge-1"}, now)
	if got := b.String(); got != "no rollouts on node edge-1\n" {
		t.Errorf("no rollouts: %q", got)
	}
}

func TestClusterCommandErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"missing or invalid bearer token"}`)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"error":"no such endpoint: GET /v2/cluster/members"}`)
	}))
	defer srv.Close()
	_, err := run(t, "members", "--url", srv.URL)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "missing or invalid bearer token") {
		t.Errorf("without a token: %v", err)
	}
	_, err = run(t, "members", "--url", srv.URL, "--token", "s3cret")
	if err == nil || !strings.Contains(err.Error(), "cluster.enabled") {
		t.Errorf("a node without a cluster: %v; want a hint at cluster.enabled", err)
	}
	if _, err := run(t, "rollout", "promote", "--url", srv.URL); err == nil {
		t.Error("rollout promote without a model succeeded")
	}
}

var doubleSig = engine.Signature{
	Inputs:  []tensor.Spec{{Name: "x", DataType: tensor.FP32, Shape: []int64{-1}}},
	Outputs: []tensor.Spec{{Name: "y", DataType: tensor.FP32, Shape: []int64{-1}}},
}

func identity(in []tensor.Tensor) ([]tensor.Tensor, error) {
	return []tensor.Tensor{tensor.FromFloat32s("y", in[0].Shape, in[0].Float32s())}, nil
}

// startNode runs an in-process daemon with the cluster on, over a fake engine serving versions
// 1 and 2 of model "double", and returns its URL.
func startNode(t *testing.T, name string, join []string, policy string) string {
	t.Helper()
	return startDaemon(t, name, func(cfg *config.Config) {
		cfg.Cluster.Enabled = true
		cfg.Cluster.Name = name
		cfg.Cluster.Bind = "127.0.0.1:0"
		cfg.Cluster.Join = join
		cfg.Cluster.PolicyFile = policy
		cfg.Cluster.LeaveTimeout = 10 * time.Millisecond
	}, "/v2/cluster/members")
}

// TestClusterCommandsAgainstDaemons drives members and every rollout action against two real
// daemons (over a fake engine) that form a cluster: the CLI reads what the daemon writes.
func TestClusterCommandsAgainstDaemons(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "routing.toml")
	testutil.WriteFile(t, filepath.Dir(policy), "routing.toml", []byte(`
[[rollout]]
model = "double"
stable = "1"
canary = "2"
steps = [ { set_weight = 10 }, { pause = {} } ]
`))
	a := startNode(t, "a", nil, policy)
	f := clusterFlags{url: a}
	m, err := f.client().Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Members) != 1 || m.Members[0].Name != "a" {
		t.Fatalf("members of a lone node: %+v", m.Members)
	}
	var seed string
	var raw struct {
		Members []struct {
			GossipAddr string `json:"gossip_addr"`
		} `json:"members"`
	}
	resp, err := http.Get(a + "/v2/cluster/members")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if err != nil || len(raw.Members) != 1 {
		t.Fatalf("members: %v %+v", err, raw)
	}
	seed = raw.Members[0].GossipAddr
	b := startNode(t, "b", []string{seed}, policy)

	testutil.WaitFor(t, 20*time.Second, "b sees both nodes ready", func() bool {
		out, err := run(t, "members", "--url", b)
		return err == nil && strings.Count(out, "alive") == 2 && strings.Count(out, "double:1,2") == 2
	})
	out, err := run(t, "members", "--url", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a ", "b (this node)", "ready", "yes", "routing on b:"} {
		if !strings.Contains(out, want) {
			t.Errorf("members output lacks %q:\n%s", want, out)
		}
	}

	// The leader (a, the lowest name) starts the rollout; b shows it once gossip brought it.
	testutil.WaitFor(t, 20*time.Second, "b shows the rollout paused at 10%", func() bool {
		out, err := run(t, "rollout", "status", "--url", b)
		return err == nil && strings.Contains(out, "paused") && strings.Contains(out, "10%")
	})
	steps := []struct {
		args []string
		want []string
	}{
		{[]string{"rollout", "status", "double", "--url", b}, []string{"phase:", "paused", "stable 1, canary 2", "10%", "paused until promoted"}},
		{[]string{"rollout", "promote", "double", "--url", b}, []string{"completed", "100%"}},
		{[]string{"rollout", "abort", "double", "--url", a, "--reason", "p99 too high"}, []string{"aborted", "0%", "p99 too high"}},
		{[]string{"rollout", "start", "double", "--url", b}, []string{"paused", "10%"}},
		{[]string{"rollout", "promote-full", "double", "--url", a}, []string{"promoted", "100%"}},
	}
	for _, s := range steps {
		out, err := run(t, s.args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", s.args, err, out)
		}
		for _, w := range s.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", s.args, w, out)
			}
		}
		// Every node converges on what any node was told.
		phase := strings.Fields(strings.SplitN(out, "phase:", 2)[1])[0]
		for _, node := range []string{a, b} {
			testutil.WaitFor(t, 20*time.Second, node+" shows "+phase, func() bool {
				out, err := run(t, "rollout", "status", "double", "--url", node)
				return err == nil && strings.Contains(out, phase)
			})
		}
	}
	if _, err := run(t, "rollout", "promote", "double", "--url", a); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("promote of a promoted rollout: %v; want 409", err)
	}
	if _, err := run(t, "rollout", "abort", "nosuch", "--url", a); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("abort of a model without rollout: %v; want 404", err)
	}
	if _, err := run(t, "rollout", "status", "nosuch", "--url", a); err == nil || !strings.Contains(err.Error(), `no rollout of model "nosuch"`) {
		t.Errorf("status of a model without rollout: %v", err)
	}
}
