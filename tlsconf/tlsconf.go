// Package tlsconf builds the TLS settings of inferd's listener and of its peer-to-peer client
// from certificate files, and picks up rotated files without a restart: every handshake checks,
// at most once a second, whether the files changed, and a pair that fails to load leaves the
// previous one in force. It owns no listener and no watcher goroutine.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// ClientAuth names how the server treats client certificates.
type ClientAuth string

// Client certificate modes.
const (
	ClientAuthNone    ClientAuth = "none"    // no client certificates asked for
	ClientAuthRequest ClientAuth = "request" // verified against the CA when sent
	ClientAuthRequire ClientAuth = "require" // mutual TLS: refused without a valid one
)

// Files are the paths of the certificate material.
type Files struct {
	CertFile string
	KeyFile  string
	// ClientCAFile verifies client certificates (server) and peer certificates (client).
	ClientCAFile string
	ClientAuth   ClientAuth
}

// Enabled reports whether TLS is configured at all.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" }

// Validate checks the combination of settings, not the files.
func (f Files) Validate() error {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("cert_file and key_file must be set together")
	}
	switch f.ClientAuth {
	case "", ClientAuthNone:
	case ClientAuthRequest, ClientAuthRequire:
		if f.ClientCAFile == "" {
			return fmt.Errorf("client_auth = %q needs client_ca_file", f.ClientAuth)
		}
		if !f.Enabled() {
			return errors.New("client_auth needs cert_file and key_file")
		}
	default:
		return fmt.Errorf("client_auth = %q: want none, request or require", f.ClientAuth)
	}
	return nil
}

// Reloader holds the current certificate and CA pool and reloads them when the files change.
type Reloader struct {
	files Files
	log   *slog.Logger
	now   func() time.Time
	every time.Duration
	// Reloaded, when set, is told the outcome of each reload attempt (for a metric).
	Reloaded func(err error)

	mu      sync.Mutex
	cert    *tls.Certificate
	pool    *x509.CertPool
	stamps  [3]stamp
	checked time.Time
}

type stamp struct {
	size  int64
	mtime time.Time
}

// New loads the files once; it fails when they cannot be loaded or do not match.
func New(files Files, log *slog.Logger) (*Reloader, error) {
	if err := files.Validate(); err != nil {
		return nil, err
	}
	r := &Reloader{files: files, log: log, now: time.Now, every: time.Second}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) paths() [3]string {
	return [3]string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile}
}

func (r *Reloader) stampsNow() [3]stamp {
	var out [3]stamp
	for i, p := range r.paths() {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			out[i] = stamp{size: fi.Size(), mtime: fi.ModTime()}
		}
	}
	return out
}

func (r *Reloader) loadLocked() error {
	stamps := r.stampsNow()
	var cert *tls.Certificate
	if r.files.Enabled() {
		c, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
		if err != nil {
			return fmt.Errorf("loading certificate %s and key %s: %w", r.files.CertFile, r.files.KeyFile, err)
		}
		cert = &c
	}
	var pool *x509.CertPool
	if r.files.ClientCAFile != "" {
		pem, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return fmt.Errorf("reading CA file: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA file %s holds no PEM certificate", r.files.ClientCAFile)
		}
	}
	r.cert, r.pool, r.stamps, r.checked = cert, pool, stamps, r.now()
	return nil
}

// refresh reloads when a file changed since the last load, at most once per r.every.
func (r *Reloader) refresh() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) >= r.every {
		r.checked = now
		if r.stampsNow() != r.stamps {
			err := r.loadLocked()
			if err != nil {
				r.log.Error("TLS files not reloaded; the previous certificate stays in force", "err", err)
				r.stamps = r.stampsNow() // do not retry the same broken files on every handshake
			} else {
				r.log.Info("TLS files reloaded", "cert", r.files.CertFile)
			}
			if r.Reloaded != nil {
				r.Reloaded(err)
			}
		}
	}
	return r.cert, r.pool
}

// Certificate is the certificate in force (after a reload check).
func (r *Reloader) Certificate() *tls.Certificate {
	c, _ := r.refresh()
	return c
}

// ServerConfig is the listener's configuration: TLS 1.2 or newer, the current certificate on
// every handshake, and client certificates as configured.
func (r *Reloader) ServerConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool := r.refresh()
		c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}}
		switch r.files.ClientAuth {
		case ClientAuthRequest:
			c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, pool
		case ClientAuthRequire:
			c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
		}
		return c, nil
	}
	return base
}

// ClientConfig is the configuration for connections to peers: they are verified against the
// CA file in force at each handshake (the system roots when none is set), and this node
// presents its own certificate, so a cluster that requires client certificates accepts its
// own members. Peers are usually addressed by IP, so their certificates need IP SANs.
func (r *Reloader) ClientConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if r.files.ClientCAFile != "" {
		// The standard verification would pin the pool of this moment; this one reads the
		// pool of each handshake, so a rotated CA file needs no restart either.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			_, pool := r.refresh()
			return verifyPeer(cs, pool)
		}
	}
	if r.files.Enabled() {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.Certificate(), nil
		}
	}
	return c
}

func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       cs.ServerName,
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verifying peer certificate: %w", err)
	}
	return nil
}
