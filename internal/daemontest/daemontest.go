// Package daemontest starts the real inferd binary for tests: it builds it once per test binary,
// runs `inferd serve` on a free loopback port with a NOTIFY_SOCKET the test reads, and tells the
// test the address it serves on. It listens on 127.0.0.1 unless the test's env names another
// address (another 127.0.0.x, or one inside a network namespace the test made).
package daemontest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testutil"
)

// BinaryEnv names an inferd binary built beforehand; Build returns it instead of compiling one.
// It lets a compiled test binary run where there is no Go toolchain (make gpu-bundle).
const BinaryEnv = "INFERD_TEST_BINARY"

// Build compiles ./cmd/inferd into dir and returns the binary's path, or returns the binary
// BinaryEnv names.
func Build(t testing.TB, dir string) string {
	t.Helper()
	if bin := os.Getenv(BinaryEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s: %v", BinaryEnv, err)
		}
		return bin
	}
	bin := filepath.Join(dir, "inferd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/inferd")
	cmd.Dir = testutil.ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Daemon is a running inferd process.
type Daemon struct {
	URL string
	// GRPC is the host:port of the gRPC listener when the daemon's configuration turns it on
	// (INFERD_GRPC_LISTEN=127.0.0.1:0 in env, say); empty otherwise.
	GRPC   string
	cmd    *exec.Cmd
	notify *net.UnixConn
	done   chan struct{}
	err    error

	mu     sync.Mutex
	states []string
	logs   strings.Builder
}

var (
	listeningRE     = regexp.MustCompile(`msg=listening addr=(\S+)`)
	grpcListeningRE = regexp.MustCompile(`msg="grpc listening" addr=(\S+)`)
)

// Start runs `bin serve --config config` with INFERD_SERVER_LISTEN=127.0.0.1:0 plus env, and
// returns once the daemon has said where it listens. The process is killed at test cleanup if it
// is still running.
func Start(t testing.TB, bin, config string, env ...string) *Daemon {
	t.Helper()
	return StartWrapped(t, nil, bin, config, env...)
}

// StartWrapped is Start with the command line prefixed by wrapper, such as
// {"ip", "netns", "exec", "ns1"}. The wrapper must exec the binary in place (keep its process),
// so that PID and Signal reach inferd itself.
func StartWrapped(t testing.TB, wrapper []string, bin, config string, env ...string) *Daemon {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{notify: conn, done: make(chan struct{})}
	go d.readNotify()

	argv := append(append(append([]string(nil), wrapper...), bin), "serve", "--config", config)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "INFERD_SERVER_LISTEN=127.0.0.1:0", "NOTIFY_SOCKET="+sock)
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.cmd = cmd
	addr := make(chan string, 1)
	go d.readLogs(stderr, addr)
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-d.done
		_ = conn.Close()
		if t.Failed() {
			t.Logf("inferd log:\n%s", d.Logs())
		}
	})
	select {
	case a := <-addr:
		d.URL = "http://" + a
	case <-d.done:
		t.Fatalf("inferd exited before listening: %v\n%s", d.err, d.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("inferd did not listen within 60s\n%s", d.Logs())
	}
	return d
}

func (d *Daemon) readLogs(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		d.mu.Lock()
		d.logs.WriteString(line + "\n")
		d.mu.Unlock()
		// The daemon logs its gRPC listener before its HTTP one, so GRPC is set before Start
		// returns.
		if m := grpcListeningRE.FindStringSubmatch(line); m != nil && !sent {
			d.GRPC = m[1]
		}
		if m := listeningRE.FindStringSubmatch(line); m != nil && !sent {
			addr <- m[1]
			sent = true
		}
	}
}

func (d *Daemon) readNotify() {
	buf := make([]byte, 4096)
	for {
		n, err := d.notify.Read(buf)
		if err != nil {
			return
		}
		d.mu.Lock()
		d.states = append(d.states, strings.Split(string(buf[:n]), "\n")...)
		d.mu.Unlock()
	}
}

// Logs returns everything the daemon wrote to stderr so far.
func (d *Daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

// Notified returns the sd_notify assignments received so far (READY=1, STATUS=..., ...).
func (d *Daemon) Notified() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.states...)
}

// WaitNotified polls until the daemon has sent state (e.g. "READY=1") or the timeout passes.
func (d *Daemon) WaitNotified(t testing.TB, state string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() string {
		if slices.Contains(d.Notified(), state) {
			return ""
		}
		select {
		case <-d.done:
			t.Fatalf("inferd exited while waiting for %s: %v", state, d.err)
		default:
		}
		return fmt.Sprintf("inferd did not send %s; sent %q", state, d.Notified())
	})
}

// WaitReady waits for READY=1 and a 200 from /ready.
func (d *Daemon) WaitReady(t testing.TB) {
	t.Helper()
	d.WaitNotified(t, "READY=1", 60*time.Second)
	resp, err := http.Get(d.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready answered %d after READY=1", resp.StatusCode)
	}
}

// PID is the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Signal sends sig to the daemon.
func (d *Daemon) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Wait waits for the process to exit and returns its exit code.
func (d *Daemon) Wait(ctx context.Context) (int, error) {
	select {
	case <-d.done:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	var exit *exec.ExitError
	if errors.As(d.err, &exit) {
		return exit.ExitCode(), nil
	}
	if d.err != nil {
		return -1, fmt.Errorf("inferd: %w", d.err)
	}
	return 0, nil
}
