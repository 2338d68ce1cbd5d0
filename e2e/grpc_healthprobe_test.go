//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// grpc-health-probe's exit codes (its main.go).
const (
	probeServing           = 0
	probeConnectionFailure = 2
	probeRPCFailure        = 3
	probeUnhealthy         = 4
)

// healthProbe is the grpc-health-probe binary of go.mod's tool directive, built by the go
// command (and cached by it).
func healthProbe(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "tool", "-n", "grpc-health-probe")
	cmd.Dir = testutil.ModuleRoot(t)
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go tool -n grpc-health-probe: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("go tool -n grpc-health-probe: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// probe runs the probe and returns its exit code and output. A later -connect-timeout in args
// overrides the 5s given here (the flag package keeps the last).
func probe(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-connect-timeout", "5s", "-rpc-timeout", "5s"}, args...)...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit) && ctx.Err() == nil:
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("grpc-health-probe %s: %v\n%s", strings.Join(args, " "), err, out)
	return -1, ""
}

type probeCase struct {
	args []string
	want int
	out  string // in the probe's output
}

func runProbes(t *testing.T, bin string, cases []probeCase) {
	t.Helper()
	for _, c := range cases {
		code, out := probe(t, bin, c.args...)
		if code != c.want || !strings.Contains(out, c.out) {
			t.Errorf("grpc-health-probe %s: exit %d %q, want exit %d with %q", strings.Join(c.args, " "), code, strings.TrimSpace(out), c.want, c.out)
		} else {
			t.Logf("grpc-health-probe %s: exit %d %s", strings.Join(c.args, " "), code, strings.TrimSpace(out))
		}
	}
}

// TestGRPCHealthProbe checks the daemon as a load balancer does, with grpc-health-probe (pinned
// in go.mod's tools): the server and a loaded model are SERVING (exit 0), a model that failed
// to load is NOT_SERVING (exit 4), an unknown name is NOT_FOUND (exit 3), a port nobody
// listens on is a connection failure (2); then over mutual TLS from [server.tls], where a
// probe without a client certificate, or without TLS, gets no answer.
func TestGRPCHealthProbe(t *testing.T) {
	bin := healthProbe(t)
	inferd := daemontest.Build(t, t.TempDir())
	repo := filepath.Join(t.TempDir(), "models")
	writeModel(t, repo, "m", 1, testmodels.AddConst(tag(1, 0)))
	testutil.WriteFile(t, repo, "broken/1/model.onnx", []byte("not an ONNX model"))
	cfgPath := filepath.Join(t.TempDir(), "inferd.toml")
	testutil.WriteFile(t, filepath.Dir(cfgPath), filepath.Base(cfgPath), []byte(fmt.Sprintf("[models]\nrepository = %q\n", repo)))

	t.Run("plaintext", func(t *testing.T) {
		d := daemontest.Start(t, inferd, cfgPath, "INFERD_GRPC_LISTEN=127.0.0.1:0")
		d.WaitReady(t)
		free, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := free.Addr().String()
		free.Close()
		runProbes(t, bin, []probeCase{
			{[]string{"-addr", d.GRPC}, probeServing, "status: SERVING"},
			{[]string{"-addr", d.GRPC, "-service", "inference.GRPCInferenceService"}, probeServing, "status: SERVING"},
			{[]string{"-addr", d.GRPC, "-service", "m"}, probeServing, "status: SERVING"},
			{[]string{"-addr", d.GRPC, "-service", "broken"}, probeUnhealthy, "NOT_SERVING"},
			{[]string{"-addr", d.GRPC, "-service", "no_such_model"}, probeRPCFailure, "NotFound"},
			{[]string{"-addr", closed, "-connect-timeout", "1s"}, probeConnectionFailure, "failed to connect"},
		})
	})

	t.Run("mutual TLS", func(t *testing.T) {
		dir := t.TempDir()
		cert, key := nodeCert(t, dir, "127.0.0.1")
		tlsCfg := filepath.Join(dir, "inferd.toml")
		testutil.WriteFile(t, dir, "inferd.toml", []byte(fmt.Sprintf(
			"[models]\nrepository = %q\n[server.tls]\ncert_file = %q\nkey_file = %q\nclient_ca_file = %q\nclient_auth = \"require\"\n",
			repo, cert, key, cert)))
		d := daemontest.Start(t, inferd, tlsCfg, "INFERD_GRPC_LISTEN=127.0.0.1:0")
		d.WaitNotified(t, "READY=1", 60*time.Second) // WaitReady's GET is plain HTTP
		withCert := []string{"-addr", d.GRPC, "-tls", "-tls-ca-cert", cert, "-tls-client-cert", cert, "-tls-client-key", key}
		runProbes(t, bin, []probeCase{
			{withCert, probeServing, "status: SERVING"},
			{slices.Concat(withCert, []string{"-service", "m"}), probeServing, "status: SERVING"},
			{slices.Concat(withCert, []string{"-service", "broken"}), probeUnhealthy, "NOT_SERVING"},
		})
		for _, args := range [][]string{
			{"-addr", d.GRPC, "-tls", "-tls-ca-cert", cert, "-connect-timeout", "1s"}, // no client certificate
			{"-addr", d.GRPC, "-connect-timeout", "1s"},                               // no TLS
		} {
			if code, out := probe(t, bin, args...); code == probeServing {
				t.Errorf("grpc-health-probe %s: SERVING from a listener that requires a client certificate: %s", strings.Join(args, " "), out)
			} else {
				t.Logf("grpc-health-probe %s: exit %d %s", strings.Join(args, " "), code, strings.TrimSpace(out))
			}
		}
	})
}
