package daemon_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/status"
)

func readStatus(t *testing.T, url string) status.Status {
	t.Helper()
	var st status.Status
	body := get(t, url+status.Path)
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return st
}

func hasEvent(st status.Status, kind, level, model, version, text string) bool {
	for _, e := range st.Events {
		if e.Kind == kind && e.Level == level && e.Model == model && e.Version == version && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

// A version that fails to load and a configuration reload that fails both show in the
// status: as events with their reasons, in the version's row, and as the node's "degraded"
// state while it stays ready.
func TestStatusShowsFailures(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "models")
	// Version 2 is not registered with the fake engine: its load fails.
	testutil.WriteFile(t, repo, "double/2/model.onnx", []byte("fake"))
	testutil.WriteFile(t, repo, "double/model.toml", []byte("[version_policy]\nall = true\n"))
	cfgPath := filepath.Join(dir, "inferd.toml")
	base := "[models]\nrepository = \"models\"\nquiet_period = \"1h\"\n"
	if err := os.WriteFile(cfgPath, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, d := launch(t, repo, cfg, daemon.Options{ConfigPath: cfgPath})
	st := readStatus(t, h.url)
	if !st.Node.Ready || st.Node.State != status.StateDegraded || !strings.Contains(st.Node.Reason, "double version 2 unavailable") {
		t.Errorf("node with a failed version: %+v", st.Node)
	}
	if len(st.Models) != 2 {
		t.Fatalf("models %+v", st.Models)
	}
	v1, v2 := st.Models[0], st.Models[1]
	if v1.State != "ready" || v1.LastLoad == nil || v1.LastLoad.Result != "loaded" {
		t.Errorf("version 1: %+v", v1)
	}
	if v2.State != "unavailable" || v2.Reason == "" || v2.LastLoad == nil || v2.LastLoad.Result != "failed" || v2.LastLoad.Error == "" {
		t.Errorf("version 2: %+v", v2)
	}
	if !hasEvent(st, "load_failed", "error", "double", "2", "failed to load: ") || !hasEvent(st, "load", "info", "double", "1", "loaded") {
		t.Errorf("load events: %+v", st.Events)
	}

	if err := os.WriteFile(cfgPath, []byte(base+"[server]\nmax_request_bytes = \"lots\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err == nil {
		t.Fatal("a broken configuration reloaded")
	}
	st = readStatus(t, h.url)
	if !hasEvent(st, "config_failed", "error", "", "", "the previous one stays in force") {
		t.Errorf("no config_failed event: %+v", st.Events)
	}
	if !strings.Contains(st.Node.Reason, "configuration reload failed") {
		t.Errorf("reason after a failed reload: %q", st.Node.Reason)
	}
	if err := os.WriteFile(cfgPath, []byte(base+"[log]\nlevel = \"debug\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = readStatus(t, h.url)
	if !hasEvent(st, "config_reload", "info", "", "", "configuration reloaded from "+cfgPath) || strings.Contains(st.Node.Reason, "configuration") {
		t.Errorf("after a good reload: %+v, %+v", st.Node, st.Events)
	}
}

// A rollout's steps are events, and the status shows the rollout and each version's weight.
func TestStatusRollout(t *testing.T) {
	h, _, _ := soloCluster(t, rolloutPolicy)
	waitCanaryWeight(t, h.url, 10)
	var st status.Status
	testutil.Eventually(t, 10*time.Second, func() string {
		st = readStatus(t, h.url)
		if hasEvent(st, "rollout", "info", "double", "", "paused at step 1: canary 2 has 10%") {
			return ""
		}
		return "no rollout event yet"
	})
	if len(st.Rollouts) != 1 || st.Rollouts[0].Phase != "paused" || st.Rollouts[0].CanaryPercent != 10 {
		t.Errorf("rollouts %+v", st.Rollouts)
	}
	if w := st.Models[0].WeightPercent; w == nil || *w != 90 {
		t.Errorf("weight of the stable version: %v", w)
	}
	if r := st.Models[0].Rollout; r == nil || *r != (status.VersionRollout{Role: "stable", Phase: "paused", Step: 1}) {
		t.Errorf("rollout part of version 1: %+v", r)
	}
	if st.Node.Name != "solo" || !st.Node.Clustered {
		t.Errorf("node %+v", st.Node)
	}
	// Abort: the abort is an event of its own kind.
	resp, err := http.Post(h.url+"/v2/cluster/rollouts/double/abort", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("abort: %s", resp.Status)
	}
	testutil.Eventually(t, 10*time.Second, func() string {
		if hasEvent(readStatus(t, h.url), "rollout_abort", "warning", "double", "", "aborted") {
			return ""
		}
		return "no rollout_abort event"
	})
}

// The node collector reports readiness, members, rollout phases and, with TLS, when the
// listener's certificate expires.
func TestNodeMetrics(t *testing.T) {
	h, _, _ := soloCluster(t, rolloutPolicy)
	waitCanaryWeight(t, h.url, 10)
	m := get(t, h.url+"/metrics")
	for _, want := range []string{
		"inferd_ready 1",
		`inferd_cluster_members{liveness="alive"} 1`,
		`inferd_cluster_members{liveness="dead"} 0`,
		`inferd_rollout_phase{model="double",phase="paused"} 1`,
		`inferd_rollout_phase{model="double",phase="aborted"} 0`,
		`inferd_rollout_canary_weight_percent{model="double"} 10`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(m, "inferd_"))
		}
	}
	if strings.Contains(m, "inferd_tls_certificate_expiry_timestamp_seconds") {
		t.Error("a certificate expiry without TLS")
	}

	dir := t.TempDir()
	notAfter := time.Now().Add(72 * time.Hour).Truncate(time.Second)
	certFile, keyFile := writeSelfSigned(t, dir, notAfter)
	cfg := config.Default()
	cfg.Server.TLS.CertFile, cfg.Server.TLS.KeyFile = certFile, keyFile
	th, _ := launch(t, filepath.Join(dir, "models"), &cfg, daemon.Options{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := strings.Replace(th.url, "http://", "https://", 1)
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("inferd_tls_certificate_expiry_timestamp_seconds %s", strconv.FormatFloat(float64(notAfter.Unix()), 'g', -1, 64))
	if !strings.Contains(string(body), want) {
		t.Errorf("metrics over TLS lack %q:\n%s", want, grepLines(string(body), "inferd_tls"))
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 expiring at notAfter and its
// key, and returns their paths.
func writeSelfSigned(t *testing.T, dir string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "inferd test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
