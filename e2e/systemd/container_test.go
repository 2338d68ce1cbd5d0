//go:build e2e_systemd

package systemd

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testutil"
)

// requireRoot skips the suite, saying why, where it cannot run.
func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (systemd-nspawn, rpm --root, chroot): run `sudo make e2e-systemd`")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install systemd-container debootstrap lintian rpm; .ci/run does)", tool)
		}
	}
}

// input returns the path in environment variable name, which make e2e-systemd sets.
func input(t *testing.T, name string) string {
	t.Helper()
	p := os.Getenv(name)
	if p == "" {
		t.Skipf("%s is not set: run `make e2e-systemd`, which builds the packages and the root file system", name)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

// extractRootfs unpacks the cached root file system tarball into a fresh directory.
func extractRootfs(t *testing.T) string {
	t.Helper()
	tarball := input(t, "INFERD_ROOTFS")
	dir, err := os.MkdirTemp("", "inferd-e2e-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("tar", "-C", dir, "--numeric-owner", "-xpf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("extracting %s: %v\n%s", tarball, err, out)
	}
	return dir
}

// container is a Debian system booted with systemd-nspawn: its own PID 1 (systemd), mount,
// network (loopback only), IPC and UTS namespaces; its root file system is a volatile overlay,
// so the extracted tree stays as it was.
type container struct {
	t      *testing.T
	nspawn *exec.Cmd
	leader int // host PID of the container's systemd
	log    string
	exited chan struct{}
}

func boot(t *testing.T, root, share string) *container {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "nspawn.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("inferd-e2e-%d", os.Getpid())
	cmd := exec.Command("systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", "--volatile=overlay",
		"--private-network", "--machine="+name, "--directory="+root, "--bind-ro="+share+":/mnt/e2e")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	c := &container{t: t, nspawn: cmd, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(c.exited) }()
	t.Cleanup(c.shutdown)

	deadline := time.Now().Add(30 * time.Second)
	for c.leader == 0 {
		select {
		case <-c.exited:
			t.Fatalf("systemd-nspawn exited during boot:\n%s", c.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container init under systemd-nspawn (pid %d):\n%s", cmd.Process.Pid, c.tail())
		}
		c.leader = containerInit(cmd.Process.Pid)
	}
	c.poll("the container's systemd to finish booting", 120*time.Second, func() (bool, string) {
		out, _ := c.sh("systemctl is-system-running")
		state := strings.TrimSpace(out)
		return state == "running" || state == "degraded", state
	})
	if out, _ := c.sh("systemctl is-system-running"); strings.TrimSpace(out) == "degraded" {
		failed, _ := c.sh("systemctl --failed --no-legend")
		t.Logf("container booted degraded (units failed that inferd does not need):\n%s", failed)
	}
	return c
}

// containerInit finds the child of the nspawn process that is PID 1 in its own namespace.
func containerInit(nspawn int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var ppid int
		var nspid []string
		s := bufio.NewScanner(f)
		for s.Scan() {
			if v, ok := strings.CutPrefix(s.Text(), "PPid:"); ok {
				ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(s.Text(), "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
		}
		f.Close()
		if ppid == nspawn && len(nspid) == 2 && nspid[1] == "1" {
			return pid
		}
	}
	return 0
}

func (c *container) tail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// shutdown halts the container (SIGTERM to systemd-nspawn asks its systemd to power off).
func (c *container) shutdown() {
	if c.nspawn.Process == nil {
		return
	}
	_ = c.nspawn.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		c.t.Logf("container did not halt within 60s; killing it")
		_ = c.nspawn.Process.Kill()
		<-c.exited
	}
}

// sh runs a shell script inside the container (all its namespaces, its root) and returns its
// combined output.
func (c *container) sh(script string) (string, error) {
	cmd := exec.Command("nsenter", "--target", strconv.Itoa(c.leader), "--mount", "--uts", "--ipc", "--net", "--pid",
		"--cgroup", "--root", "--wd", "--", // --wd: the target's cwd, its /
		"/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-c", script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs a script that has to succeed.
func (c *container) must(script string) string {
	c.t.Helper()
	out, err := c.sh(script)
	if err != nil {
		c.t.Fatalf("in the container: %s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(out)
}

// poll calls cond until it reports true or within passes; cond's detail says what it saw.
func (c *container) poll(what string, within time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	testutil.Eventually(c.t, within, func() string {
		if ok, detail := cond(); !ok {
			select {
			case <-c.exited:
				c.t.Fatalf("the container exited while waiting for %s:\n%s", what, c.tail())
			default:
			}
			return fmt.Sprintf("%s; last: %s", what, detail)
		}
		return ""
	})
}

// show returns one property of a unit (systemctl show --value).
func (c *container) show(unit, prop string) string {
	c.t.Helper()
	return c.must("systemctl show --value -p " + prop + " " + unit)
}
