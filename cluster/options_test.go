package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKeyFile(t *testing.T) {
	key32 := bytes.Repeat([]byte{7}, 32)
	cases := []struct {
		name    string
		content string
		mode    os.FileMode
		want    []byte
		err     error
	}{
		{"aes-256 with newline", base64.StdEncoding.EncodeToString(key32) + "\n", 0o600, key32, nil},
		{"aes-128 owner read-only", base64.StdEncoding.EncodeToString(key32[:16]), 0o400, key32[:16], nil},
		{"aes-192 unpadded", base64.RawStdEncoding.EncodeToString(key32[:24]), 0o600, key32[:24], nil},
		{"20 bytes", base64.StdEncoding.EncodeToString(key32[:20]), 0o600, nil, ErrBadKey},
		{"not base64", "this is not a key!", 0o600, nil, ErrBadKey},
		{"empty", "", 0o600, nil, ErrBadKey},
		{"group readable", base64.StdEncoding.EncodeToString(key32), 0o640, nil, ErrKeyFileMode},
		{"world readable", base64.StdEncoding.EncodeToString(key32), 0o644, nil, ErrKeyFileMode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "gossip.key")
			if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
			got, err := LoadKeyFile(p)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("LoadKeyFile = %v, want %v", err, c.err)
				}
				if errors.Is(c.err, ErrKeyFileMode) && !strings.Contains(err.Error(), "chmod 600") {
					t.Errorf("mode error does not say how to fix it: %v", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("LoadKeyFile = %x, %v; want %x", got, err, c.want)
			}
		})
	}
	if _, err := LoadKeyFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	base := Options{Name: "node-1", Bind: "127.0.0.1:0"}
	cases := []struct {
		name   string
		mutate func(*Options)
		err    error
	}{
		{"valid", func(*Options) {}, nil},
		{"default bind", func(o *Options) { o.Bind = "" }, nil},
		{"no name", func(o *Options) { o.Name = "" }, ErrInvalid},
		{"name with a space", func(o *Options) { o.Name = "gpu box" }, ErrInvalid},
		{"name too long", func(o *Options) { o.Name = strings.Repeat("n", maxNameLen+1) }, ErrInvalid},
		{"bind host is a name", func(o *Options) { o.Bind = "localhost:7946" }, ErrInvalid},
		{"bind without port", func(o *Options) { o.Bind = "127.0.0.1" }, ErrInvalid},
		{"advertise without port", func(o *Options) { o.Advertise = "10.0.0.1:0" }, ErrInvalid},
		{"bad CIDR", func(o *Options) { o.AllowedCIDRs = []string{"10.0.0.0/33"} }, ErrInvalid},
		{"key of 20 bytes", func(o *Options) { o.SecretKey = make([]byte, 20) }, ErrBadKey},
		{"label too long", func(o *Options) { o.Label = strings.Repeat("l", 256) }, ErrInvalid},
		{"probe timeout not below interval", func(o *Options) { o.ProbeInterval, o.ProbeTimeout = 100e6, 100e6 }, ErrInvalid},
		{"empty seed", func(o *Options) { o.Join = []string{" "} }, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.mutate(&o)
			_, err := o.validate()
			if c.err == nil && err != nil || c.err != nil && !errors.Is(err, c.err) {
				t.Fatalf("validate = %v, want %v", err, c.err)
			}
		})
	}
}
