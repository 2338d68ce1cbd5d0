//go:build e2e_systemd

package systemd

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// limitMemory bounds the memory of unit's processes at headroom bytes above what they use now,
// as an operator's MemoryMax= would, and returns how to lift the bound again. Where the container
// has cgroup v2 that is MemoryMax= itself (systemctl set-property --runtime). Where it has v1
// (this sandbox: nspawn mounts the v1 controllers read-only inside), it is a memory cgroup the
// test makes on the host below the daemon's own, limited to headroom (a task moved in brings no
// charges with it), into which it moves the daemon and its workers (the spare worker that the
// next load takes among them): the workers the daemon starts from then on are born there. The
// error says why neither is possible.
func (c *container) limitMemory(unit string, headroom int64) (undo func(), err error) {
	c.t.Helper()
	if c.must("stat -fc %T /sys/fs/cgroup") == "cgroup2fs" {
		current, err := strconv.ParseInt(c.show(unit, "MemoryCurrent"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("no memory accounting for %s (MemoryCurrent: %v)", unit, err)
		}
		limit := current + headroom
		// MemoryMax= bounds RAM alone: on a machine with swap the kernel would page the
		// allocation out instead of killing it, so swap is bounded too (MemorySwapMax=0).
		lift := func() {
			c.must("systemctl set-property --runtime " + unit + " MemoryMax=infinity MemorySwapMax=infinity")
		}
		c.must(fmt.Sprintf("systemctl set-property --runtime %s MemoryMax=%d MemorySwapMax=0", unit, limit))
		// systemd takes the property even where the memory controller is not delegated to the
		// container: the kernel's file says whether it is in force.
		file := "/sys/fs/cgroup" + c.show(unit, "ControlGroup") + "/memory.max"
		if got, _ := c.sh("cat " + file); strings.TrimSpace(got) != strconv.FormatInt(limit, 10) {
			lift()
			return nil, fmt.Errorf("MemoryMax=%d is not in force (%s: %s)", limit, file, strings.TrimSpace(got))
		}
		swap := strings.TrimSuffix(file, "memory.max") + "memory.swap.max"
		if got, err := c.sh("cat " + swap); err == nil && strings.TrimSpace(got) != "0" {
			lift()
			return nil, fmt.Errorf("MemorySwapMax=0 is not in force (%s: %s)", swap, strings.TrimSpace(got))
		}
		return lift, nil
	}
	pid, err := c.hostPID(c.show(unit, "MainPID"))
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	var own string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			own = f[2]
		}
	}
	parent := filepath.Join("/sys/fs/cgroup/memory", own)
	if _, err := os.Stat(filepath.Join(parent, "cgroup.procs")); own == "" || err != nil {
		return nil, fmt.Errorf("no v1 memory cgroup of the daemon (pid %d on the host) under /sys/fs/cgroup/memory: %q", pid, own)
	}
	dir := filepath.Join(parent, fmt.Sprintf("inferd-e2e-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	// The daemon and the workers it has already started (the spare one above all, which the
	// next load takes): a process moved brings no charges with it, so the workers loaded
	// before are not pushed over the limit, but whatever they allocate from now on counts.
	move := func(to string) error {
		var errs []error
		for _, p := range append([]int{pid}, descendants(pid)...) {
			err := os.WriteFile(filepath.Join(to, "cgroup.procs"), []byte(strconv.Itoa(p)), 0)
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("moving pid %d: %w", p, err))
			}
		}
		return errors.Join(errs...)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(headroom, 10)), 0); err != nil {
		os.Remove(dir)
		return nil, err
	}
	// with swap accounting, memory and swap together get the same bound (no paging out)
	if memsw := filepath.Join(dir, "memory.memsw.limit_in_bytes"); fileExists(memsw) {
		if err := os.WriteFile(memsw, []byte(strconv.FormatInt(headroom, 10)), 0); err != nil {
			os.Remove(dir)
			return nil, err
		}
	}
	if err := move(dir); err != nil {
		os.Remove(dir)
		return nil, err
	}
	return func() {
		c.t.Helper()
		if err := move(parent); err != nil {
			c.t.Errorf("moving the daemon and its workers back to their memory cgroup: %v", err)
		}
		if err := os.Remove(dir); err != nil {
			c.t.Errorf("removing the test's memory cgroup: %v", err)
		}
	}, nil
}

// hostPID is the host's PID of the container's process nsPID.
func (c *container) hostPID(nsPID string) (int, error) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.leader))
	if err != nil {
		return 0, err
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if theirs, _ := os.Readlink(filepath.Join("/proc", e.Name(), "ns/pid")); theirs != ns {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				if f := strings.Fields(v); len(f) > 1 && f[len(f)-1] == nsPID {
					return pid, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no process with PID %s in the container", nsPID)
}

// descendants are the processes below pid (children of any of its threads), recursively.
func descendants(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(f); err == nil {
				out = append(append(out, child), descendants(child)...)
			}
		}
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
