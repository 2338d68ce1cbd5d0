package config

import (
	"strings"
	"testing"
)

func TestTLSAndLimitsCrossChecks(t *testing.T) {
	cases := []struct{ doc, want string }{
		{"[server.tls]\ncert_file = \"/c.pem\"\n", "server.tls.key_file: invalid value: cert_file and key_file must be set together"},
		{"[server.tls]\nclient_auth = \"require\"\n", `server.tls.client_auth: invalid value: "require" needs client_ca_file`},
		{"[server.tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\nclient_auth = \"maybe\"\n", "client_auth"},
		{"[limits]\nmax_json_depth = 65\n", "limits.max_json_depth"},
		{"[limits]\nmax_rank = 0\n", "limits.max_rank"},
		{"[auth]\nmetrics_scope = \"root\"\n", "auth.metrics_scope"},
		{"[server]\nmax_body_bytes_in_flight = -1\n", "server.max_body_bytes_in_flight"},
	}
	for _, c := range cases {
		_, err := LoadBytes("c.toml", []byte(c.doc), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want it to contain %q", c.doc, err, c.want)
		}
	}
	ok := "[server.tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\nclient_ca_file = \"/ca\"\nclient_auth = \"require\"\n[auth]\ntokens_file = \"/etc/inferd/tokens\"\n"
	c, err := LoadBytes("/etc/inferd/inferd.toml", []byte(ok), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.TLS.ClientAuth != "require" || c.Auth.TokensFile != "/etc/inferd/tokens" || c.Limits.MaxInputs != 64 {
		t.Errorf("got %+v %+v %+v", c.Server.TLS, c.Auth, c.Limits)
	}
}
