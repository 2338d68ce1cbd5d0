package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) authority {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf for 127.0.0.1 usable by servers and clients; it returns cert and key PEM.
func (a authority) issue(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	dir   string
	files Files
	ca    authority
	r     *Reloader
	clock *clock
	srv   *httptest.Server
}

func start(t *testing.T, mode ClientAuth) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ca: newCA(t, "test CA")}
	f.files = Files{
		CertFile: filepath.Join(f.dir, "cert.pem"), KeyFile: filepath.Join(f.dir, "key.pem"),
		ClientCAFile: filepath.Join(f.dir, "ca.pem"), ClientAuth: mode,
	}
	c, k := f.ca.issue(t, 100)
	write(t, f.files.CertFile, c)
	write(t, f.files.KeyFile, k)
	write(t, f.files.ClientCAFile, f.ca.pem)
	var err error
	if f.r, err = New(f.files, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	f.clock = &clock{t: time.Now()}
	f.r.now = f.clock.now
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			w.Header().Set("Client-Serial", r.TLS.PeerCertificates[0].SerialNumber.String())
		}
	}))
	f.srv.TLS = f.r.ServerConfig()
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// get makes one request on a fresh connection and returns the server certificate's serial.
func get(t *testing.T, f *fixture, cfg *tls.Config) (string, error) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := client.Get(f.srv.URL)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
}

func TestRotationWithoutRestart(t *testing.T) {
	f := start(t, ClientAuthNone)
	cfg := f.r.ClientConfig()
	if serial, err := get(t, f, cfg); err != nil || serial != "100" {
		t.Fatalf("serial %q, err %v; want 100", serial, err)
	}
	c, k := f.ca.issue(t, 200)
	write(t, f.files.CertFile, c)
	write(t, f.files.KeyFile, k)
	f.clock.add(2 * time.Second)
	if serial, err := get(t, f, cfg); err != nil || serial != "200" {
		t.Fatalf("after rotation serial %q, err %v; want 200", serial, err)
	}

	// A key that does not match the certificate: the old pair stays in force.
	_, otherKey := f.ca.issue(t, 300)
	var outcome error
	f.r.Reloaded = func(err error) { outcome = err }
	write(t, f.files.KeyFile, otherKey)
	f.clock.add(2 * time.Second)
	if serial, err := get(t, f, cfg); err != nil || serial != "200" {
		t.Fatalf("after a bad key serial %q, err %v; want 200 still", serial, err)
	}
	if outcome == nil {
		t.Fatal("the failed reload was not reported")
	}
}

func TestClientRejectsUnknownCA(t *testing.T) {
	f := start(t, ClientAuthNone)
	other := newCA(t, "other CA")
	dir := t.TempDir()
	files := Files{ClientCAFile: filepath.Join(dir, "ca.pem")}
	write(t, files.ClientCAFile, other.pem)
	r, err := New(files, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, f, r.ClientConfig()); err == nil || !strings.Contains(err.Error(), "verifying peer certificate") {
		t.Fatalf("err = %v, want a verification failure", err)
	}
}

func TestMutualTLS(t *testing.T) {
	f := start(t, ClientAuthRequire)
	// A client without a certificate is refused.
	anon := &tls.Config{RootCAs: x509.NewCertPool()}
	anon.RootCAs.AddCert(f.ca.cert)
	if _, err := get(t, f, anon); err == nil {
		t.Fatal("a client without a certificate got through require")
	}
	// A peer with the node's own settings gets through and is identified.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: f.r.ClientConfig(), DisableKeepAlives: true}}
	resp, err := client.Get(f.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Client-Serial") != "100" {
		t.Fatalf("server saw client serial %q, want 100", resp.Header.Get("Client-Serial"))
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		f   Files
		err string
	}{
		{Files{CertFile: "c"}, "set together"},
		{Files{CertFile: "c", KeyFile: "k", ClientAuth: "require"}, "needs client_ca_file"},
		{Files{ClientCAFile: "ca", ClientAuth: "request"}, "needs cert_file"},
		{Files{CertFile: "c", KeyFile: "k", ClientAuth: "maybe"}, "want none, request or require"},
		{Files{CertFile: "c", KeyFile: "k"}, ""},
	}
	for _, c := range cases {
		err := c.f.Validate()
		if (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%+v: err %v, want %q", c.f, err, c.err)
		}
	}
	if _, err := New(Files{CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k"}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("New with missing files succeeded")
	}
}
