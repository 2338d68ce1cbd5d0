//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// nodeCert writes a self-signed certificate (its own CA) valid for the given IPs, for both
// server and client use, and returns the certificate and key paths.
func nodeCert(t *testing.T, dir string, ips ...string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: "inferd cluster"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, keyPath := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, keyPath
}

// TestClusterMutualTLS runs two nodes that require client certificates: every request entering
// n1 is split to n2, so it crosses between the nodes over mutual TLS with the nodes' own
// certificate, and a client without a certificate is refused.
func TestClusterMutualTLS(t *testing.T) {
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
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	policy := writePolicy(t, `
[[split]]
model = "m"
targets = [ { node = "n1", weight = 0 }, { node = "n2", weight = 100 } ]
`)
	c := newTestCluster(t, clusterSpec{
		nodes: 2, repo: clusterRepo(t), policy: policy,
		client: func(int) *http.Client { return client },
		extra:  fmt.Sprintf("[server.tls]\ncert_file = %q\nkey_file = %q\nclient_ca_file = %q\nclient_auth = \"require\"\n", cert, key, cert),
	})
	for _, n := range c.nodes {
		n.https = true
	}
	c.startAll("m")

	n1 := c.nodes[0]
	for range 50 {
		r := inferAt(context.Background(), n1, "m", nil)
		if !r.ok() || r.servedBy != "n2" {
			t.Fatalf("request entering n1: %v; want 200 served by n2 (forwarded over mutual TLS)", r)
		}
	}
	st, err := n1.members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var forwarded uint64
	for _, p := range st.Routing.Peers {
		if p.Node == "n2" {
			forwarded = p.Forwarded
		}
	}
	if forwarded < 50 {
		t.Errorf("n1 forwarded %d requests to n2, want at least 50", forwarded)
	}

	anonymous := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := anonymous.Get(n1.url() + "/v2/health/ready"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate got an answer from a node that requires one")
	}
}
