package grpcapi_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	pb "github.com/inferd/inferd/kserve/kservepb"
	"github.com/inferd/inferd/tlsconf"
)

// pemPair writes a certificate (signed by parent, or self-signed) and its key into dir.
func pemPair(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        isCA, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, certFile, keyFile
}

// TLS and mutual TLS come from the same tlsconf settings as the HTTP listener: a client that
// trusts the CA and shows its certificate is served; one without a certificate, or speaking
// plaintext, is not.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := pemPair(t, dir, "ca", true, nil, nil)
	_, _, certFile, keyFile := pemPair(t, dir, "server", false, ca, caKey)
	_, _, clientCert, clientKey := pemPair(t, dir, "client", false, ca, caKey)
	reloader, err := tlsconf.New(tlsconf.Files{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ClientAuth: tlsconf.ClientAuthRequire}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	models := t.TempDir()
	testutil.WriteFile(t, models, "mlp/1/model.onnx", testmodels.MLP())
	s := serve(t, models, func(o *grpcapi.Options) { o.Transport.TLS = reloader.ServerConfig() })

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	dialTLS := func(cfg *tls.Config) pb.GRPCInferenceServiceClient {
		cc, err := grpc.NewClient("passthrough:///"+s.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return pb.NewGRPCInferenceServiceClient(cc)
	}
	ok := dialTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}})
	if _, err := ok.ModelInfer(ctxT(t), mlpRequest("tls", 1, 2, 3, 4)); err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	noCert := dialTLS(&tls.Config{RootCAs: pool})
	if _, err := noCert.ServerLive(ctxT(t), &pb.ServerLiveRequest{}); codeOf(err) != codes.Unavailable {
		t.Errorf("without a client certificate: %v, want Unavailable", err)
	}
	if _, err := s.client(t).ServerLive(ctxT(t), &pb.ServerLiveRequest{}); codeOf(err) != codes.Unavailable {
		t.Errorf("plaintext against TLS: %v, want Unavailable", err)
	}
}
