//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// The deploy suites start clusters whose nodes have their own model repository and state
// directory each (as separate machines would) and move versions between them with
// `inferd deploy`: every byte a node serves was fetched from its peers.

// deployCluster is a test cluster whose node i keeps its repository and state under dirs[i].
type deployCluster struct {
	*testCluster
	dirs []string
}

// newDeployCluster writes the configurations of nodes with empty repositories; env[i], when
// given, is added to node i's environment.
func newDeployCluster(t *testing.T, nodes int, extra string, env ...[]string) *deployCluster {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "unused")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &deployCluster{testCluster: newTestCluster(t, clusterSpec{nodes: nodes, repo: empty, extra: extra})}
	for i, n := range c.nodes {
		dir := filepath.Join(c.dir, n.name)
		for _, sub := range []string{"models", "state"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		c.dirs = append(c.dirs, dir)
		n.env = append(n.env, "INFERD_MODELS_REPOSITORY="+filepath.Join(dir, "models"), "INFERD_SERVER_STATE_DIR="+filepath.Join(dir, "state"))
		if i < len(env) {
			n.env = append(n.env, env[i]...)
		}
	}
	return c
}

// versionDir writes a version to upload: AddConst(tag(version, gen)) as model.onnx, a
// model.toml that serves every version, and a data file of extra bytes (random: several
// chunks that peers exchange).
func versionDir(t *testing.T, version, gen, extra int) string {
	t.Helper()
	dir := t.TempDir()
	testutil.WriteFile(t, dir, "model.onnx", testmodels.AddConst(tag(version, gen)))
	testutil.WriteFile(t, dir, "model.toml", []byte("[version_policy]\nall = true\n"))
	if extra > 0 {
		testutil.WriteFile(t, dir, "assets/table.bin", randomBytesE2E(extra, byte(version*16+gen)))
	}
	return dir
}

// run runs the inferd CLI and returns its output and error.
func (c *deployCluster) run(args ...string) (string, error) {
	out, err := exec.Command(c.bin, args...).CombinedOutput()
	return string(out), err
}

// sameFiles checks that node i's repository holds the version's files byte for byte.
func (c *deployCluster) sameFiles(t *testing.T, i int, model, version, src string) {
	t.Helper()
	for _, f := range []string{"model.onnx", "assets/table.bin"} {
		want, err := os.ReadFile(filepath.Join(src, f))
		if os.IsNotExist(err) {
			continue
		}
		got, err := os.ReadFile(filepath.Join(c.dirs[i], "models", model, version, f))
		if err != nil {
			t.Fatalf("%s: %v", c.nodes[i].name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %s/%s/%s differs from the upload", c.nodes[i].name, model, version, f)
		}
	}
}

// counter reads one unlabelled counter from a node's /metrics.
func (n *clusterNode) counter(t *testing.T, name string) float64 {
	t.Helper()
	status, body, err := n.get(context.Background(), "/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", n.name, status, err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s /metrics has no %s", n.name, name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// deployment reads one deployment as a node sees it.
type deploymentInfo struct {
	Phase  string `json:"phase"`
	Reason string `json:"reason"`
	Digest string `json:"digest"`
	Nodes  []struct {
		Node   string `json:"node"`
		State  string `json:"state"`
		Done   int64  `json:"done"`
		Reason string `json:"reason"`
	} `json:"nodes"`
}

func (n *clusterNode) deployment(model, version string) (deploymentInfo, bool, error) {
	var v struct {
		Deployments []struct {
			Model, Version string
			deploymentInfo
		} `json:"deployments"`
	}
	if err := n.getJSON(context.Background(), "/v2/cluster/deployments?model="+model, &v); err != nil {
		return deploymentInfo{}, false, err
	}
	for _, d := range v.Deployments {
		if d.Model == model && d.Version == version {
			return d.deploymentInfo, true, nil
		}
	}
	return deploymentInfo{}, false, nil
}

func (d deploymentInfo) state(node string) string {
	for _, n := range d.Nodes {
		if n.Node == node {
			return n.State
		}
	}
	return ""
}

// postTar sends a hand-made upload (entries of name → content; a "->" in a name makes a
// symbolic link) to a node and returns the status and body.
func postTar(t *testing.T, n *clusterNode, model, version string, entries [][2]string) (int, string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e[0], Mode: 0o644, Size: int64(len(e[1])), Typeflag: tar.TypeReg}
		if name, target, ok := strings.Cut(e[0], "->"); ok {
			h = &tar.Header{Name: name, Linkname: target, Typeflag: tar.TypeSymlink}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(e[1]))
		}
	}
	_ = tw.Close()
	req, _ := http.NewRequest(http.MethodPost, n.url()+"/v2/cluster/deployments/"+model+"/"+version, &buf)
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	return resp.StatusCode, body.String()
}

func fileDigest(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// TestDeploy deploys a version (model.onnx, model.toml and a 6 MiB data file: 7 chunks) to
// three nodes through the second: it waits for READY everywhere, every node holds the same
// bytes, and the two that fetched received what they hold from their peers; the same content
// again is a no-op, other content under the same version is refused (409), and so are bad
// names, links and paths that climb out of the version. Then --from (a node downloads from
// an HTTP server and checks --sha256) and --replicas.
func TestDeploy(t *testing.T) {
	c := newDeployCluster(t, 3, "")
	c.startAll()
	src := versionDir(t, 1, 0, 6<<20)
	out, err := c.run("deploy", "--server", c.nodes[1].url(), "m", "1", src)
	t.Logf("inferd deploy:\n%s", out)
	if err != nil {
		t.Fatalf("inferd deploy: %v", err)
	}
	c.waitConverged(20*time.Second, "m/1")
	for i := range c.nodes {
		c.sameFiles(t, i, "m", "1", src)
	}
	var fetched float64
	for _, i := range []int{0, 2} {
		fetched += c.nodes[i].counter(t, "inferd_deploy_fetched_bytes_total")
	}
	if size := float64(6<<20 + 200); fetched < 2*(6<<20) || fetched > 3*size {
		t.Errorf("n1 and n3 fetched %.0f bytes together, want about twice the version's %d", fetched, 6<<20)
	}
	if got := c.nodes[1].counter(t, "inferd_deploy_fetched_bytes_total"); got != 0 {
		t.Errorf("the origin fetched %.0f bytes, want 0", got)
	}

	out, err = c.run("deploy", "--server", c.nodes[0].url(), "m", "1", src)
	if err != nil || !strings.Contains(out, "nothing to do") {
		t.Errorf("same content again: %v\n%s", err, out)
	}
	out, err = c.run("deploy", "--server", c.nodes[2].url(), "m", "1", versionDir(t, 1, 1, 0))
	if err == nil || !strings.Contains(out, "409") || !strings.Contains(out, "immutable") {
		t.Errorf("other content under the same version: want a 409 naming immutability, got %v\n%s", err, out)
	}
	for _, tc := range []struct {
		model, version string
		entries        [][2]string
		want           string
	}{
		{"m", "01", [][2]string{{"model.onnx", "x"}}, "version"},
		{".m", "3", [][2]string{{"model.onnx", "x"}}, "model name"},
		{"m", "3", [][2]string{{"model.onnx", "x"}, {"../escape", "x"}}, "'..'"},
		{"m", "3", [][2]string{{"model.onnx", "x"}, {"/etc/passwd", "x"}}, "absolute"},
		{"m", "3", [][2]string{{"model.onnx->/etc/passwd", ""}}, "not a regular file"},
		{"m", "3", [][2]string{{"weights.bin", "x"}}, "no model.onnx"},
	} {
		status, body := postTar(t, c.nodes[0], tc.model, tc.version, tc.entries)
		if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("upload %s/%s %v: %d %s, want 400 naming %q", tc.model, tc.version, tc.entries, status, body, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(c.dirs[0], "models", "m", "3")); !os.IsNotExist(err) {
		t.Errorf("a refused upload left m/3 in the repository: %v", err)
	}
	// The chunk endpoint serves members only: this test process (127.0.0.1) is not one.
	status, body, err := c.nodes[0].get(context.Background(), "/v2/cluster/deploy/peer/"+fileDigest(t, filepath.Join(src, "model.onnx"))+"?size=1&chunk_size=1048576&i=0")
	if err != nil || status != http.StatusForbidden || !strings.Contains(string(body), "members only") {
		t.Errorf("a chunk asked by a non-member: %d %s %v, want 403", status, body, err)
	}
	out = c.cli("deploy", "status", "--server", c.nodes[2].url(), "m")
	for _, n := range c.nodes {
		if !regexp.MustCompile(`(?m)^` + n.name + `\s+ready$`).MatchString(out) {
			t.Errorf("deploy status does not show %s ready:\n%s", n.name, out)
		}
	}

	// --from: n3 downloads version 2's model.onnx from a plain HTTP server (as from an S3
	// presigned URL), checks its sha256, and the others fetch it from n3.
	model2 := testmodels.AddConst(tag(2, 0))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bucket/model.onnx" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(model2)
	}))
	defer srv.Close()
	sum := sha256.Sum256(model2)
	wrong := sha256.Sum256([]byte("other"))
	out, err = c.run("deploy", "--server", c.nodes[2].url(), "--from", srv.URL+"/bucket/model.onnx", "--sha256", hex.EncodeToString(wrong[:]), "m", "2")
	if err == nil || !strings.Contains(out, "422") || !strings.Contains(out, "sha256") {
		t.Errorf("--from with the wrong --sha256: want 422 naming the hash, got %v\n%s", err, out)
	}
	out, err = c.run("deploy", "--server", c.nodes[2].url(), "--from", srv.URL+"/bucket/missing.onnx", "--sha256", hex.EncodeToString(sum[:]), "m", "2")
	if err == nil || !strings.Contains(out, "502") {
		t.Errorf("--from a URL that answers 404: want 502, got %v\n%s", err, out)
	}
	out, err = c.run("deploy", "--server", c.nodes[2].url(), "--from", srv.URL+"/bucket/model.onnx", "--sha256", hex.EncodeToString(sum[:]), "m", "2")
	t.Logf("inferd deploy --from:\n%s", out)
	if err != nil {
		t.Fatalf("deploy --from: %v", err)
	}
	c.waitConverged(20*time.Second, "m/1", "m/2")
	for i, n := range c.nodes {
		got, err := os.ReadFile(filepath.Join(c.dirs[i], "models", "m", "2", "model.onnx"))
		if err != nil || !bytes.Equal(got, model2) {
			t.Errorf("%s: m/2/model.onnx is not the downloaded file: %v", n.name, err)
		}
	}

	// --replicas: two of the three nodes (those with the most memory available) get version 3.
	out, err = c.run("deploy", "--server", c.nodes[0].url(), "--replicas", "4", "m", "3", versionDir(t, 3, 0, 0))
	if err == nil || !strings.Contains(out, "400") || !strings.Contains(out, "only 3 of 3 nodes") {
		t.Errorf("--replicas 4 on three nodes: want 400, got %v\n%s", err, out)
	}
	v3 := versionDir(t, 3, 0, 0)
	out, err = c.run("deploy", "--server", c.nodes[0].url(), "--replicas", "2", "m", "3", v3)
	t.Logf("inferd deploy --replicas 2:\n%s", out)
	if err != nil {
		t.Fatalf("deploy --replicas 2: %v", err)
	}
	var have []string
	for i, n := range c.nodes {
		if _, err := os.Stat(filepath.Join(c.dirs[i], "models", "m", "3", "model.onnx")); err == nil {
			c.sameFiles(t, i, "m", "3", v3)
			have = append(have, n.name)
		}
	}
	if len(have) != 2 {
		t.Errorf("--replicas 2 installed version 3 on %v", have)
	}
}

// tokenClient adds a bearer token to every request of the test's own calls.
type tokenClient struct {
	token string
	next  http.RoundTripper
}

func (c tokenClient) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.next.RoundTrip(r)
}

// TestDeployWavesAndRefusals runs three nodes with bearer tokens on: n1 accepts versions of at
// most 4 KiB, n3 keeps a free-space reserve larger than its disk. Deploying needs an admin
// token; an upload over the size bound gets 413, one over the disk 507; a version that fails
// to load on the first wave stops the deploy with that node's reason before any other node
// fetches a byte; a good version reaches n1 but fails on n3 for lack of space (checked before
// fetching), and the command says so.
func TestDeployWavesAndRefusals(t *testing.T) {
	const infer, admin = "infer-token-0123456789abcdef", "admin-token-0123456789abcdef"
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("infer "+infer+"\nadmin "+admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newDeployCluster(t, 3, fmt.Sprintf("[auth]\ntokens_file = %q\n", tokens),
		[]string{"INFERD_CLUSTER_DEPLOY_MAX_BYTES=4096"}, nil, []string{"INFERD_CLUSTER_DEPLOY_RESERVE_BYTES=4611686018427387904"})
	for _, n := range c.nodes {
		n.client = &http.Client{Transport: tokenClient{infer, loopbackClient.Transport}}
	}
	c.startAll()
	good := versionDir(t, 1, 0, 0)

	out, err := c.run("deploy", "--server", c.nodes[1].url(), "--token", infer, "m", "1", good)
	if err == nil || !strings.Contains(out, "403") {
		t.Errorf("deploy with an infer token: want 403, got %v\n%s", err, out)
	}
	out, err = c.run("deploy", "--server", c.nodes[1].url(), "--token", "", "m", "1", good)
	if err == nil || !strings.Contains(out, "401") {
		t.Errorf("deploy without a token: want 401, got %v\n%s", err, out)
	}
	out, err = c.run("deploy", "--server", c.nodes[0].url(), "--token", admin, "m", "1", versionDir(t, 1, 0, 6<<20))
	if err == nil || !strings.Contains(out, "413") || !strings.Contains(out, "deploy_max_bytes") {
		t.Errorf("deploy over n1's size bound: want 413, got %v\n%s", err, out)
	}
	out, err = c.run("deploy", "--server", c.nodes[2].url(), "--token", admin, "m", "1", good)
	if err == nil || !strings.Contains(out, "507") || !strings.Contains(out, "disk space") {
		t.Errorf("deploy to n3 without space: want 507, got %v\n%s", err, out)
	}

	broken := t.TempDir()
	testutil.WriteFile(t, broken, "model.onnx", []byte("this is not an ONNX model"))
	out, err = c.run("deploy", "--server", c.nodes[1].url(), "--token", admin, "bad", "1", broken)
	t.Logf("broken version:\n%s", out)
	if err == nil || !strings.Contains(out, "stopped") || !strings.Contains(out, "n2: load failed") {
		t.Errorf("a version that fails to load on the first wave: want the deploy stopped with n2's reason, got %v\n%s", err, out)
	}
	for _, i := range []int{0, 2} {
		if _, err := os.Stat(filepath.Join(c.dirs[i], "models", "bad")); !os.IsNotExist(err) {
			t.Errorf("%s installed the broken version of a stopped deploy: %v", c.nodes[i].name, err)
		}
		if got := c.nodes[i].counter(t, "inferd_deploy_fetched_bytes_total"); got != 0 {
			t.Errorf("%s fetched %.0f bytes of a deploy stopped at the first wave", c.nodes[i].name, got)
		}
	}
	d, _, err := c.nodes[0].deployment("bad", "1")
	if err != nil || d.Phase != "failed" || d.state("n1") != "waiting" {
		t.Errorf("n1's view of the stopped deploy: %+v %v", d, err)
	}
	// Ready nowhere, the failed version needs no --force to go.
	if out, err := c.run("undeploy", "--server", c.nodes[0].url(), "--token", admin, "bad", "1"); err != nil {
		t.Errorf("undeploy of the failed version: %v\n%s", err, out)
	}
	testutil.Eventually(t, 20*time.Second, func() string {
		if _, err := os.Stat(filepath.Join(c.dirs[1], "models", "bad")); !os.IsNotExist(err) {
			return "n2 still has the failed version"
		}
		return ""
	})

	out, err = c.run("deploy", "--server", c.nodes[1].url(), "--token", admin, "m", "1", good)
	t.Logf("good version, n3 without space:\n%s", out)
	if err == nil || !strings.Contains(out, "n3: deploy: not enough disk space") {
		t.Errorf("want the deploy to fail on n3 for disk space, got %v\n%s", err, out)
	}
	c.sameFiles(t, 0, "m", "1", good)
	if _, err := os.Stat(filepath.Join(c.dirs[2], "models", "m")); !os.IsNotExist(err) {
		t.Errorf("n3 installed a version it has no space for: %v", err)
	}
}

// TestDeployCatchUpAndUndeploy deploys to a cluster with one node stopped and one not yet
// started: both get the version when they come (push-pull and the deployment's records).
// Then a second version, the undeploy of the first with n4 down (every node removes it and
// its blobs, n4 when it returns), the refusal to undeploy the only version left without --force, and the forced undeploy.
func TestDeployCatchUpAndUndeploy(t *testing.T) {
	c := newDeployCluster(t, 4, "")
	all := c.nodes
	for _, n := range all[:3] {
		c.start(n)
	}
	c.nodes = all[:3] // waitConverged looks at the started nodes
	c.waitConverged(30 * time.Second)
	c.nodes[2].d.Signal(t, syscall.SIGTERM)
	if code, err := c.nodes[2].d.Wait(context.Background()); err != nil || code != 0 {
		t.Fatalf("n3 stopped with %d, %v", code, err)
	}
	v1 := versionDir(t, 1, 0, 3<<20)
	out, err := c.run("deploy", "--server", c.nodes[0].url(), "m", "1", v1)
	t.Logf("deploy with n3 down and n4 not started:\n%s", out)
	if err != nil {
		t.Fatalf("inferd deploy: %v", err)
	}
	c.nodes = all
	c.start(c.nodes[2])
	c.start(c.nodes[3])
	c.waitConverged(60*time.Second, "m/1")
	for i := range c.nodes {
		c.sameFiles(t, i, "m", "1", v1)
	}

	v2 := versionDir(t, 2, 0, 3<<20)
	if out, err := c.run("deploy", "--server", c.nodes[3].url(), "--wave", "2", "m", "2", v2); err != nil {
		t.Fatalf("deploy of version 2: %v\n%s", err, out)
	}
	c.waitConverged(30*time.Second, "m/1", "m/2")
	// n4 is down during the undeploy: it removes the version when it returns.
	c.nodes[3].d.Signal(t, syscall.SIGTERM)
	if code, err := c.nodes[3].d.Wait(context.Background()); err != nil || code != 0 {
		t.Fatalf("n4 stopped with %d, %v", code, err)
	}
	c.nodes = all[:3]
	c.waitConverged(30 * time.Second)
	out, err = c.run("undeploy", "--server", c.nodes[1].url(), "m", "1")
	t.Logf("undeploy m 1 with n4 down:\n%s", out)
	if err != nil {
		t.Fatalf("undeploy of version 1: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.dirs[3], "models", "m", "1")); err != nil {
		t.Fatalf("n4 lost m/1 while it was down: %v", err)
	}
	c.nodes = all
	c.start(c.nodes[3])
	gone := []string{fileDigest(t, filepath.Join(v1, "model.onnx")), fileDigest(t, filepath.Join(v1, "assets", "table.bin"))}
	testutil.Eventually(t, 30*time.Second, func() string {
		for i, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(c.dirs[i], "models", "m", "1")); !os.IsNotExist(err) {
				return n.name + " still has m/1"
			}
			for _, h := range gone {
				if _, err := os.Stat(filepath.Join(c.dirs[i], "state", "deploy", "blobs", h)); !os.IsNotExist(err) {
					return n.name + " still holds blob " + h[:12]
				}
			}
		}
		return c.converged(c.nodes, "m/2")
	})
	for i := range c.nodes {
		c.sameFiles(t, i, "m", "2", v2)
	}

	out, err = c.run("undeploy", "--server", c.nodes[2].url(), "m", "2")
	if err == nil || !strings.Contains(out, "only version") {
		t.Errorf("undeploy of the only version without --force: want a refusal, got %v\n%s", err, out)
	}
	out, err = c.run("undeploy", "--server", c.nodes[2].url(), "m", "9")
	if err == nil || !strings.Contains(out, "no such deployment") {
		t.Errorf("undeploy of a version never deployed: got %v\n%s", err, out)
	}
	if out, err := c.run("undeploy", "--server", c.nodes[2].url(), "--force", "m", "2"); err != nil {
		t.Fatalf("forced undeploy: %v\n%s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, func() string {
		for i, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(c.dirs[i], "models", "m")); !os.IsNotExist(err) {
				return n.name + " still has model m"
			}
			if blobs, _ := os.ReadDir(filepath.Join(c.dirs[i], "state", "deploy", "blobs")); len(blobs) != 0 {
				return fmt.Sprintf("%s still holds %d blobs", n.name, len(blobs))
			}
		}
		return ""
	})
}

// wideDir writes the ~100 MB MLP (1024→4096→4096→1024, internal/testmodels.Wide, as make
// bench uses) as a version to upload; calibration and warmup are off so that its load takes
// about a second, and the measurements are of the transfers.
func wideDir(t *testing.T) (string, int64) {
	t.Helper()
	dir := t.TempDir()
	model := testmodels.Wide(1024, 4096, 1024)
	testutil.WriteFile(t, dir, "model.onnx", model)
	cfg := []byte("[tuning]\nauto = false\n[warmup]\nbatch_sizes = []\n")
	testutil.WriteFile(t, dir, "model.toml", cfg)
	return dir, int64(len(model) + len(cfg))
}

// waitState waits until node n sees node's state on the deployment, and returns the
// deployment as seen then.
func (c *deployCluster) waitState(t *testing.T, n *clusterNode, model, version, node string, timeout time.Duration, ok func(deploymentInfo) bool) deploymentInfo {
	t.Helper()
	var d deploymentInfo
	testutil.Eventually(t, timeout, func() string {
		var found bool
		var err error
		d, found, err = n.deployment(model, version)
		switch {
		case err != nil:
			return err.Error()
		case !found:
			return "no deployment yet"
		case d.Phase == "failed":
			t.Fatalf("deployment failed: %s", d.Reason)
		case !ok(d):
			return fmt.Sprintf("%s is %s", node, d.state(node))
		}
		return ""
	})
	return d
}

func (d deploymentInfo) done(node string) int64 {
	for _, n := range d.Nodes {
		if n.Node == node {
			return n.Done
		}
	}
	return 0
}

func mib(n float64) string { return fmt.Sprintf("%.1f MiB", n/(1<<20)) }

// TestDeployResumeAfterKill SIGKILLs a node halfway through fetching the 100 MB MLP (both
// nodes limited to 25 MB/s each way, so the fetch takes seconds): after its restart it keeps
// the chunks it had verified, fetches only the rest, and becomes READY with the uploaded
// bytes. The bytes fetched twice are what the origin sent in all minus the version's size.
func TestDeployResumeAfterKill(t *testing.T) {
	c := newDeployCluster(t, 2, "deploy_bandwidth = 25000000\n")
	c.startAll()
	src, size := wideDir(t)
	if out, err := c.run("deploy", "--server", c.nodes[0].url(), "--no-wait", "mlp", "1", src); err != nil {
		t.Fatalf("inferd deploy: %v\n%s", err, out)
	}
	d := c.waitState(t, c.nodes[0], "mlp", "1", "n2", 120*time.Second, func(d deploymentInfo) bool {
		return d.state("n2") == "fetching" && d.done("n2") >= size/2
	})
	c.nodes[1].d.Signal(t, syscall.SIGKILL)
	_, _ = c.nodes[1].d.Wait(context.Background())
	killedAt := d.done("n2")
	c.start(c.nodes[1])
	c.waitState(t, c.nodes[0], "mlp", "1", "n2", 120*time.Second, func(d deploymentInfo) bool { return d.state("n2") == "ready" })
	c.sameFiles(t, 1, "mlp", "1", src)
	sent := c.nodes[0].counter(t, "inferd_deploy_served_bytes_total")
	after := c.nodes[1].counter(t, "inferd_deploy_fetched_bytes_total")
	again := sent - float64(size)
	t.Logf("deploy resume: version %s; n2 SIGKILLed at %s held (%.0f%%); after the restart it fetched %s; the origin sent %s in all: %s (%.1f%% of the version) fetched twice",
		mib(float64(size)), mib(float64(killedAt)), 100*float64(killedAt)/float64(size), mib(after), mib(sent), mib(again), 100*again/float64(size))
	if again > 0.1*float64(size) {
		t.Errorf("%s fetched twice, over 10%% of the version's %s", mib(again), mib(float64(size)))
	}
	if after > float64(size-killedAt)+0.1*float64(size) {
		t.Errorf("after the restart n2 fetched %s, the version is %s and it had %s", mib(after), mib(float64(size)), mib(float64(killedAt)))
	}
}

// TestDeployCorruptChunk tampers with every MiB of a blob on the origin after the deploy, then
// starts a node that joins late: it fetches from the origin and from a good peer, detects
// each corrupt chunk, counts it, fetches it again from the other, and installs exactly the
// uploaded bytes.
func TestDeployCorruptChunk(t *testing.T) {
	c := newDeployCluster(t, 3, "")
	all := c.nodes
	c.nodes = all[:2]
	c.startAll()
	src := versionDir(t, 1, 0, 16<<20)
	if out, err := c.run("deploy", "--server", c.nodes[0].url(), "m", "1", src); err != nil {
		t.Fatalf("inferd deploy: %v\n%s", err, out)
	}
	blob := filepath.Join(c.dirs[0], "state", "deploy", "blobs", fileDigest(t, filepath.Join(src, "assets", "table.bin")))
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 1 << 20 {
		data[off+12345] ^= 0xff
	}
	if err := os.WriteFile(blob, data, 0o640); err != nil {
		t.Fatal(err)
	}
	c.nodes = all
	c.start(c.nodes[2])
	c.waitConverged(60*time.Second, "m/1")
	c.sameFiles(t, 2, "m", "1", src)
	corrupt := c.nodes[2].counter(t, "inferd_deploy_corrupt_chunks_total")
	fromGood := c.nodes[1].counter(t, "inferd_deploy_served_bytes_total")
	t.Logf("deploy corrupt chunks: n3 detected %.0f corrupt chunks from n1 (16 tampered) and fetched %s from n2; what it installed matches the upload",
		corrupt, mib(fromGood))
	if corrupt < 1 {
		t.Errorf("no corrupt chunk counted")
	}
}

// timedDeploy runs `inferd deploy` and polls the origin's view every 50ms meanwhile: when
// each node first held the version installed (fetched, verified, in its repository) and
// when it was first READY, from the command's start; total is the command's own time.
func (c *deployCluster) timedDeploy(t *testing.T, origin *clusterNode, args ...string) (installed, ready map[string]time.Duration, total time.Duration) {
	t.Helper()
	model, version := args[len(args)-3], args[len(args)-2]
	installed, ready = map[string]time.Duration{}, map[string]time.Duration{}
	cmd := exec.Command(c.bin, append([]string{"deploy", "--server", origin.url()}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for over := false; ; {
		select {
		case err := <-exited:
			total = time.Since(start)
			if err != nil {
				t.Fatalf("inferd deploy %v: %v\n%s", args, err, out.String())
			}
			over = true // one last look: the command may have seen the end between two polls
		case <-tick.C:
		}
		d, found, err := origin.deployment(model, version)
		if err != nil || !found {
			continue
		}
		for _, n := range d.Nodes {
			at := time.Since(start)
			if _, ok := installed[n.Node]; !ok && (n.State == "installed" || n.State == "ready") {
				installed[n.Node] = at
			}
			if _, ok := ready[n.Node]; !ok && n.State == "ready" {
				ready[n.Node] = at
			}
		}
		if over {
			return installed, ready, total
		}
	}
}

func latest(m map[string]time.Duration) time.Duration {
	var l time.Duration
	for _, d := range m {
		l = max(l, d)
	}
	return l
}

// fiveNodeReps is how many times TestDeployFiveNodes measures one node alone and then five:
// the machine is shared, so each figure is the median of the repetitions, each printed.
const fiveNodeReps = 3

// TestDeployFiveNodes measures the ~100 MB MLP's deploy from one node to five, every node
// limited to 25 MB/s each way (deploy_bandwidth), against one node fetching it alone from
// the same origin (each version undeployed before the next, so every fetch starts afresh),
// fiveNodeReps times, alternating: the origin must send at most twice the version's size every
// time, and in the median every node must hold it installed, and be READY, within twice the
// time the one node took to fetch it alone. The version's model.toml pins its configuration
// (wideDir): what is measured is the transfer, the install and the load; on this test's shared
// cores the five loads run at once, which five machines would do in parallel.
func TestDeployFiveNodes(t *testing.T) {
	c := newDeployCluster(t, 5, "deploy_bandwidth = 25000000\n")
	c.startAll()
	src, size := wideDir(t)
	origin := c.nodes[0]
	undeploy := func(version string) {
		t.Helper()
		if out, err := c.run("undeploy", "--server", origin.url(), "--force", "mlp", version); err != nil {
			t.Fatalf("undeploy: %v\n%s", err, out)
		}
		testutil.Eventually(t, 30*time.Second, func() string {
			for i, n := range c.nodes {
				if blobs, _ := os.ReadDir(filepath.Join(c.dirs[i], "state", "deploy", "blobs")); len(blobs) != 0 {
					return fmt.Sprintf("%s still holds %d blobs", n.name, len(blobs))
				}
			}
			return ""
		})
	}
	served := func() float64 { return origin.counter(t, "inferd_deploy_served_bytes_total") }
	var fetchRatios, readyRatios []float64
	for rep := range fiveNodeReps {
		soloVersion, fiveVersion := strconv.Itoa(2*rep+1), strconv.Itoa(2*rep+2)
		soloInstalled, soloReady, solo := c.timedDeploy(t, origin, "--nodes", "n2", "mlp", soloVersion, src)
		undeploy(soloVersion)

		before := served()
		peersBefore := 0.0
		for _, n := range c.nodes[1:] {
			peersBefore += n.counter(t, "inferd_deploy_served_bytes_total")
		}
		installed, ready, five := c.timedDeploy(t, origin, "mlp", fiveVersion, src)
		sent := served() - before
		peers := -peersBefore
		for _, n := range c.nodes[1:] {
			peers += n.counter(t, "inferd_deploy_served_bytes_total")
		}
		for i := range c.nodes {
			c.sameFiles(t, i, "mlp", fiveVersion, src)
		}
		if len(installed) != 5 || len(ready) != 5 || soloInstalled["n2"] == 0 || soloReady["n2"] == 0 {
			t.Fatalf("not every node was seen installed and ready: %v %v (one node: %v %v)", installed, ready, soloInstalled, soloReady)
		}
		soloFetch, fiveFetch, fiveReady := soloInstalled["n2"], latest(installed), latest(ready)
		fetchRatios = append(fetchRatios, fiveFetch.Seconds()/soloFetch.Seconds())
		readyRatios = append(readyRatios, fiveReady.Seconds()/soloFetch.Seconds())
		t.Logf("repetition %d, five nodes at 25 MB/s per node, version %s: the origin sent %s (%.2f× the version), the peers %s to each other; "+
			"every node installed (fetched and verified) after %s vs one node alone %s: %.2f×; every node READY after %s: %.2f× one node's fetch "+
			"(one node READY after %s); commands %s and %s",
			rep+1, mib(float64(size)), mib(sent), sent/float64(size), mib(peers),
			fiveFetch.Round(10*time.Millisecond), soloFetch.Round(10*time.Millisecond), fetchRatios[rep],
			fiveReady.Round(10*time.Millisecond), readyRatios[rep], soloReady["n2"].Round(10*time.Millisecond),
			five.Round(10*time.Millisecond), solo.Round(10*time.Millisecond))
		if sent > 2*float64(size) {
			t.Errorf("repetition %d: the origin sent %s, over twice the version's %s", rep+1, mib(sent), mib(float64(size)))
		}
		undeploy(fiveVersion)
	}
	fetch, readyAt := medianOf(fetchRatios), medianOf(readyRatios)
	t.Logf("five nodes vs one node's fetch alone, median of %d: every node installed %.2f× %v, every node READY %.2f× %v (targets ≤ 2×)",
		fiveNodeReps, fetch, fetchRatios, readyAt, readyRatios)
	if fetch > 2 {
		t.Errorf("the five nodes held the version after %.2f× (median) the time one node took to fetch it alone, over 2×", fetch)
	}
	if readyAt > 2 {
		t.Errorf("the five nodes were READY after %.2f× (median) the time one node took to fetch the version alone, over 2×", readyAt)
	}
}

// medianOf is the median of xs (the mean of the middle two for an even count).
func medianOf(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestDeployRolloutUnderLoad keeps four clients on model m while version 1 serves, version 2
// is deployed with --rollout (a canary at 50%, paused), promoted, and version 1 undeployed:
// not one request fails, and at the end every request is served by version 2 from files the
// nodes fetched from each other.
func TestDeployRolloutUnderLoad(t *testing.T) {
	policy := writePolicy(t, `
[[rollout]]
model = "m"
stable = "1"
canary = "2"
steps = [ { set_weight = 50 }, { pause = {} } ]
`)
	env := []string{"INFERD_CLUSTER_POLICY_FILE=" + policy}
	c := newDeployCluster(t, 3, "", env, env, env)
	c.startAll()
	if out, err := c.run("deploy", "--server", c.nodes[0].url(), "m", "1", versionDir(t, 1, 0, 2<<20)); err != nil {
		t.Fatalf("deploy of version 1: %v\n%s", err, out)
	}
	c.waitConverged(30*time.Second, "m/1")
	load := startLoad(4, "m", c.nodes...)
	defer load.stopLoad()
	load.waitResults(t, 300, "requests on version 1", func(r inferResult) bool { return r.version == "1" })

	out, err := c.run("deploy", "--server", c.nodes[1].url(), "--rollout", "m", "2", versionDir(t, 2, 0, 2<<20))
	t.Logf("inferd deploy --rollout:\n%s", out)
	if err != nil || !strings.Contains(out, "rollout of m started") {
		t.Fatalf("deploy --rollout of version 2: %v", err)
	}
	c.waitRollout("m", "paused", 50, 30*time.Second)
	load.waitResults(t, 300, "requests on the canary", func(r inferResult) bool { return r.version == "2" })
	out, err = c.run("undeploy", "--server", c.nodes[2].url(), "m", "1")
	if err == nil || !strings.Contains(out, "rollout") {
		t.Errorf("undeploy of the stable version during the rollout: want a refusal naming the rollout, got %v\n%s", err, out)
	}
	c.cli("rollout", "promote", "m", "--url", c.nodes[2].url())
	c.waitRollout("m", "completed", 100, 30*time.Second)
	if out, err := c.run("undeploy", "--server", c.nodes[2].url(), "m", "1"); err != nil {
		t.Fatalf("undeploy of version 1 after the promotion: %v\n%s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, func() string {
		for i, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(c.dirs[i], "models", "m", "1")); !os.IsNotExist(err) {
				return n.name + " still has m/1"
			}
		}
		return c.converged(c.nodes, "m/2")
	})
	load.waitResults(t, 300, "requests after the undeploy", func(r inferResult) bool { return r.version == "2" })
	rs := load.stopLoad()
	k, list := failedResults(rs)
	share, _ := shareOf(rs, func(r inferResult) string { return r.version })
	t.Logf("deploy + canary + promote + undeploy under load: %d of %d requests failed; version 1 served %.1f%%, version 2 %.1f%%",
		k, len(rs), share["1"], share["2"])
	if k > 0 {
		t.Fatalf("%d requests failed:%s", k, list)
	}
}

// TestDeployMutualTLS deploys over a cluster whose listeners require client certificates: the
// peer fetches its chunks over mutual TLS with the node's own certificate (a plain-HTTP or
// anonymous fetch would be refused) and installs the uploaded bytes.
func TestDeployMutualTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := nodeCert(t, dir, "127.0.0.2", "127.0.0.3")
	pemBytes, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	c := newDeployCluster(t, 2, fmt.Sprintf("[server.tls]\ncert_file = %q\nkey_file = %q\nclient_ca_file = %q\nclient_auth = \"require\"\n", cert, key, cert))
	for _, n := range c.nodes {
		n.client, n.https = client, true
	}
	c.startAll()
	model := testmodels.AddConst(tag(1, 0))
	data := string(randomBytesE2E(3<<20, 7))
	status, body := postTar(t, c.nodes[0], "m", "1", [][2]string{{"model.onnx", string(model)}, {"assets/table.bin", data}})
	if status != http.StatusAccepted {
		t.Fatalf("upload over mutual TLS: %d %s", status, body)
	}
	c.waitState(t, c.nodes[0], "m", "1", "n2", 30*time.Second, func(d deploymentInfo) bool { return d.Phase == "complete" })
	got, err := os.ReadFile(filepath.Join(c.dirs[1], "models", "m", "1", "assets", "table.bin"))
	if err != nil || string(got) != data {
		t.Fatalf("n2's copy is not the upload: %v", err)
	}
	if fetched := c.nodes[1].counter(t, "inferd_deploy_fetched_bytes_total"); fetched < float64(len(data)) {
		t.Errorf("n2 fetched %.0f bytes, want at least %d", fetched, len(data))
	}
}

func randomBytesE2E(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// TestDeployOriginKilled SIGKILLs the origin while the second wave fetches from it (2 MB/s per
// node): the two fetchers keep what they verified and exchange it, wait for the chunks only
// the origin held, and finish once it restarts and serves them from its store; the deploy
// completes with every node holding the uploaded bytes.
func TestDeployOriginKilled(t *testing.T) {
	c := newDeployCluster(t, 3, "deploy_bandwidth = 2000000\n")
	c.startAll()
	src := versionDir(t, 1, 0, 6<<20)
	if out, err := c.run("deploy", "--server", c.nodes[2].url(), "--no-wait", "m", "1", src); err != nil {
		t.Fatalf("inferd deploy: %v\n%s", err, out)
	}
	c.waitState(t, c.nodes[0], "m", "1", "n1", 60*time.Second, func(d deploymentInfo) bool {
		return d.done("n1") > 1<<20 && d.state("n1") == "fetching"
	})
	c.nodes[2].d.Signal(t, syscall.SIGKILL)
	_, _ = c.nodes[2].d.Wait(context.Background())
	d, _, err := c.nodes[0].deployment("m", "1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("origin n3 killed with n1 %s at %s and n2 %s at %s of %s", d.state("n1"), mib(float64(d.done("n1"))), d.state("n2"), mib(float64(d.done("n2"))), mib(6<<20))
	c.start(c.nodes[2])
	c.waitState(t, c.nodes[0], "m", "1", "n1", 60*time.Second, func(d deploymentInfo) bool { return d.Phase == "complete" })
	c.waitConverged(30*time.Second, "m/1")
	for i := range c.nodes {
		c.sameFiles(t, i, "m", "1", src)
	}
}
