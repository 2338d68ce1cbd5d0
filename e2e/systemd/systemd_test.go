//go:build e2e_systemd

package systemd

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

const infer = "curl -s -o /tmp/out.json -w '%{http_code}' -H 'Content-Type: application/json' " +
	"--data-binary @/mnt/e2e/request.json http://127.0.0.1:8080/v2/models/mlp/infer"

// prepareShare fills the directory the container sees read-only at /mnt/e2e: the package, an
// upgrade of it (the same payload under a higher version), the demo MLP and requests for it.
func prepareShare(t *testing.T, deb string) (share, upgradeVersion string) {
	t.Helper()
	root := testutil.ModuleRoot(t)
	share = t.TempDir()
	if err := os.Chmod(share, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, deb, filepath.Join(share, "inferd.deb"))
	if out, err := exec.Command("cp", "-r", filepath.Join(root, "configs/models/mlp"), filepath.Join(share, "mlp")).CombinedOutput(); err != nil {
		t.Fatalf("copying the demo model: %v\n%s", err, out)
	}
	copyFile(t, filepath.Join(root, "configs/demo-request.json"), filepath.Join(share, "request.json"))
	model := func(name string, onnx []byte, toml string) {
		if err := os.MkdirAll(filepath.Join(share, name, "1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(share, name, "1", "model.onnx"), onnx, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(share, name, "model.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// a model whose warmup kills its worker with SIGFPE inside ONNX Runtime
	model("fpe", testmodels.DivideByZero(), "max_batch_size = 8\n")
	// models whose warmup allocates without bound (checkWorkerOOM): 8 GiB under the worker's own
	// limit of 256 MiB, and 1 GiB under a worker limit of 2 GiB but a smaller cgroup
	model("balloon", testmodels.Balloon(), fmt.Sprintf("max_batch_size = 8\n[limits]\nmax_memory_bytes = %d\n", balloonWorkerLimit))
	model("oomkill", testmodels.BalloonOf(oomkillBalloon), fmt.Sprintf("max_batch_size = 8\n[limits]\nmax_memory_bytes = %d\n", 2*oomkillBalloon))
	if err := os.WriteFile(filepath.Join(share, "slow-client.sh"), []byte(slowClient), 0o755); err != nil {
		t.Fatal(err)
	}

	version, err := exec.Command("dpkg-deb", "-f", deb, "Version").Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f: %v", err)
	}
	upstream := strings.TrimSuffix(strings.TrimSpace(string(version)), "-1")
	upgradeVersion = upstream + ".1"
	nfpm := exec.Command("go", "tool", "nfpm", "package", "--config", "nfpm.yaml", "--packager", "deb",
		"--target", filepath.Join(share, "inferd-upgrade.deb"))
	nfpm.Dir = root
	nfpm.Env = append(os.Environ(), "PKG_VERSION="+upgradeVersion, "PKG_MAINTAINER=inferd e2e <e2e@inferd.example>",
		"PKG_LICENSE=LicenseRef-inferd-unspecified")
	if out, err := nfpm.CombinedOutput(); err != nil {
		t.Fatalf("building the upgrade package (make package stages build/package first): %v\n%s", err, out)
	}
	return share, upgradeVersion + "-1"
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDebUnderSystemd is the operator's life cycle of the .deb in a booted Debian, step by
// step; each step depends on the ones before.
func TestDebUnderSystemd(t *testing.T) {
	requireRoot(t, "systemd-nspawn", "nsenter", "tar", "dpkg-deb", "go")
	deb := input(t, "INFERD_DEB")
	share, upgradeVersion := prepareShare(t, deb)
	c := boot(t, extractRootfs(t), share)
	mainPID := func() string { return c.show("inferd", "MainPID") }

	// install: user, directories, enabled but not started
	c.must("dpkg -i /mnt/e2e/inferd.deb")
	c.must("getent passwd inferd | grep -q ':/var/lib/inferd:/usr/sbin/nologin$'")
	if got := c.must("stat -c '%U:%G %a' /var/lib/inferd/models"); got != "inferd:inferd 750" {
		t.Errorf("/var/lib/inferd/models is %s, want inferd:inferd 750", got)
	}
	if got := c.must("systemctl is-enabled inferd"); got != "enabled" {
		t.Errorf("after install: %s, want enabled", got)
	}
	if out, _ := c.sh("systemctl is-active inferd"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("the package started the daemon on install: %s", out)
	}
	c.must("grep -q '^#listen = ' /etc/inferd/inferd.toml && test -f /etc/default/inferd && test ! -e /etc/sysconfig/inferd")

	// start: active once READY=1, with the model from /var/lib/inferd/models
	c.must("cp -r /mnt/e2e/mlp /var/lib/inferd/models/ && chown -R inferd:inferd /var/lib/inferd/models/mlp")
	begin := time.Now()
	c.must("systemctl start inferd")
	wall := time.Since(begin)
	if got := c.must("systemctl is-active inferd"); got != "active" {
		t.Fatalf("after start: %s", got)
	}
	started, _ := strconv.ParseInt(c.show("inferd", "ExecMainStartTimestampMonotonic"), 10, 64)
	ready, _ := strconv.ParseInt(c.show("inferd", "ActiveEnterTimestampMonotonic"), 10, 64)
	t.Logf("start -> READY=1: %.1f ms (exec to active, systemd's clock); `systemctl start` returned after %s",
		float64(ready-started)/1e3, wall.Round(time.Millisecond))
	t.Logf("status: %s", c.show("inferd", "StatusText"))
	if got := c.show("inferd", "User") + " " + c.show("inferd", "WatchdogUSec"); got != "inferd 30s" {
		t.Errorf("User and WatchdogUSec: %s", got)
	}

	// idle memory of the serving daemon, one model loaded
	rss := c.must("grep VmRSS /proc/" + mainPID() + "/status")
	t.Logf("idle %s (one model loaded, before any request)", strings.Join(strings.Fields(rss), " "))

	// inference
	if code := c.must(infer); code != "200" {
		t.Fatalf("inference: HTTP %s: %s", code, c.must("cat /tmp/out.json"))
	}
	var resp struct {
		Outputs []struct {
			Name  string
			Shape []int
			Data  []float64
		}
	}
	if err := json.Unmarshal([]byte(c.must("cat /tmp/out.json")), &resp); err != nil || len(resp.Outputs) == 0 || len(resp.Outputs[0].Data) == 0 {
		t.Fatalf("inference response: %v %+v", err, resp)
	}
	t.Logf("inference: %s %v", resp.Outputs[0].Name, resp.Outputs[0].Shape)
	rss = c.must("grep VmRSS /proc/" + mainPID() + "/status")
	t.Logf("idle %s (after one inference)", strings.Join(strings.Fields(rss), " "))

	// a model that crashes its worker is a model failure: the unit stays active, no restart
	checkWorkerCrash(t, c)

	// a worker out of memory, at its own limit and by the kernel's OOM killer: the same
	checkWorkerOOM(t, c)

	// the journal has structured entries
	checkJournal(t, c)

	// the unit's sandbox, as the running systemd assesses it
	sec, _ := c.sh("systemd-analyze security --no-pager inferd.service")
	if m := regexp.MustCompile(`Overall exposure level for inferd.service: ([0-9.]+) (\w+)`).FindStringSubmatch(sec); m == nil {
		t.Errorf("systemd-analyze security:\n%s", sec)
	} else if v, _ := strconv.ParseFloat(m[1], 64); v > 2.5 {
		t.Errorf("exposure %s %s, want at most 2.5:\n%s", m[1], m[2], sec)
	} else {
		t.Logf("systemd-analyze security inferd.service (in the container): %s %s", m[1], m[2])
	}

	// reload after a config edit: takes effect, same process, still active
	pid := mainPID()
	c.must("sed -i 's/^#max_request_bytes = .*/max_request_bytes = 100/' /etc/inferd/inferd.toml && systemctl reload inferd")
	c.poll("the reloaded body limit (413)", 30*time.Second, func() (bool, string) {
		code, _ := c.sh(infer)
		return strings.TrimSpace(code) == "413", code
	})
	if got := mainPID(); got != pid {
		t.Errorf("reload restarted the daemon: MainPID %s -> %s", pid, got)
	}
	if got := c.must("systemctl is-active inferd"); got != "active" {
		t.Errorf("after reload: %s", got)
	}
	c.must("journalctl -u inferd --no-pager -o cat | grep -q 'configuration reloaded'")

	// upgrade: the edited config stays, the running daemon restarts onto the new package
	c.must("dpkg -i /mnt/e2e/inferd-upgrade.deb")
	if got := c.must("dpkg-query -W -f '${Version}' inferd"); got != upgradeVersion {
		t.Errorf("after upgrade: version %s, want %s", got, upgradeVersion)
	}
	c.must("grep -q '^max_request_bytes = 100$' /etc/inferd/inferd.toml")
	if got := mainPID(); got == pid || got == "0" {
		t.Errorf("upgrade did not restart the running daemon: MainPID %s -> %s", pid, got)
	}
	if got := c.must("systemctl is-active inferd") + " " + c.must("systemctl is-enabled inferd"); got != "active enabled" {
		t.Errorf("after upgrade: %s", got)
	}
	if code, _ := c.sh(infer); strings.TrimSpace(code) != "413" {
		t.Errorf("after upgrade the edited limit should still apply: HTTP %s", code)
	}
	c.must("sed -i 's/^max_request_bytes = 100$/#max_request_bytes = 67108864/' /etc/inferd/inferd.toml && systemctl reload inferd")
	c.poll("the default body limit again (200)", 30*time.Second, func() (bool, string) {
		code, _ := c.sh(infer)
		return strings.TrimSpace(code) == "200", code
	})

	// kill -9: systemd restarts it
	restartedBy(t, c, "kill -9", "kill -9 "+mainPID(), 30*time.Second)

	// the watchdog: with the debug hook on, SIGUSR2 stops the heartbeat and systemd restarts it
	c.must(`mkdir -p /etc/systemd/system/inferd.service.d && printf '[Service]\nEnvironment=INFERD_DEBUG_HOOKS=1\nWatchdogSec=4s\n' >/etc/systemd/system/inferd.service.d/e2e.conf && systemctl daemon-reload && systemctl restart inferd`)
	first := c.show("inferd", "WatchdogTimestampMonotonic")
	c.poll("a watchdog ping", 15*time.Second, func() (bool, string) {
		ts := c.show("inferd", "WatchdogTimestampMonotonic")
		return ts != first && ts != "0", ts
	})
	restartedBy(t, c, "the watchdog", "kill -USR2 "+mainPID(), 60*time.Second)
	c.must("journalctl -u inferd --no-pager -o cat | grep -q 'Watchdog timeout'")
	c.must("rm -r /etc/systemd/system/inferd.service.d && systemctl daemon-reload && systemctl restart inferd")

	// stop drains: a request still uploading when the stop begins completes
	checkDrain(t, c)

	// socket activation: systemd holds the port; the first connection starts the daemon
	c.must("systemctl start inferd.socket")
	if got, _ := c.sh("systemctl is-active inferd"); strings.TrimSpace(got) != "inactive" {
		t.Fatalf("inferd is %s before the first connection to its socket", got)
	}
	c.poll("an inference through the activated socket", 60*time.Second, func() (bool, string) {
		code, _ := c.sh(infer)
		return strings.TrimSpace(code) == "200", code
	})
	c.must("journalctl -u inferd --no-pager -o cat | grep -q 'socket activation: serving on the socket systemd passed'")
	c.must("systemctl stop inferd.socket inferd")

	// purge: state and configuration go, the user stays
	c.must("dpkg --purge inferd")
	for _, p := range []string{"/var/lib/inferd", "/etc/inferd", "/etc/default/inferd", "/usr/lib/systemd/system/inferd.service",
		"/etc/systemd/system/multi-user.target.wants/inferd.service", "/usr/bin/inferd", "/usr/lib/inferd"} {
		if out, err := c.sh("test ! -e " + p); err != nil {
			t.Errorf("%s still there after purge %s", p, out)
		}
	}
	c.must("getent passwd inferd")
	if out, err := c.sh("systemctl is-enabled inferd"); err == nil {
		t.Errorf("after purge, systemd still knows the unit: %s", out)
	}
}

// restartedBy does something to the daemon and waits until systemd has restarted it (a new
// MainPID, active, NRestarts one more).
func restartedBy(t *testing.T, c *container, what, script string, within time.Duration) {
	t.Helper()
	pid := c.show("inferd", "MainPID")
	restarts, _ := strconv.Atoi(c.show("inferd", "NRestarts"))
	begin := time.Now()
	c.must(script)
	c.poll("systemd to restart inferd after "+what, within, func() (bool, string) {
		now, state := c.show("inferd", "MainPID"), c.show("inferd", "ActiveState")
		return now != pid && now != "0" && state == "active", "MainPID " + now + ", " + state
	})
	if n, _ := strconv.Atoi(c.show("inferd", "NRestarts")); n != restarts+1 {
		t.Errorf("NRestarts %d -> %d after %s", restarts, n, what)
	}
	t.Logf("%s: restarted and ready again after %s", what, time.Since(begin).Round(time.Millisecond))
}

// checkWorkerCrash drops a model whose warmup raises SIGFPE inside ONNX Runtime into the
// repository: its worker dies, the journal says so, the version is UNAVAILABLE with the reason,
// and the daemon keeps its pid, its restart count and its other model.
func checkWorkerCrash(t *testing.T, c *container) {
	t.Helper()
	mainPID := func() string { return c.show("inferd", "MainPID") }
	pid, restarts := mainPID(), c.show("inferd", "NRestarts")
	c.must("cp -r /mnt/e2e/fpe /var/lib/inferd/models/ && chown -R inferd:inferd /var/lib/inferd/models/fpe")
	c.poll("the worker's crash in the journal", 60*time.Second, func() (bool, string) {
		_, err := c.sh("journalctl -u inferd --no-pager -o cat | grep 'model worker exited' | grep -q SIGFPE")
		return err == nil, "no 'model worker exited ... SIGFPE' line"
	})
	c.poll("fpe to be UNAVAILABLE with the reason", 30*time.Second, func() (bool, string) {
		out, _ := c.sh("curl -s -XPOST http://127.0.0.1:8080/v2/repository/index")
		return strings.Contains(out, `"name":"fpe"`) && strings.Contains(out, "UNAVAILABLE") && strings.Contains(out, "SIGFPE"), out
	})
	if got := mainPID() + " " + c.show("inferd", "NRestarts") + " " + c.must("systemctl is-active inferd"); got != pid+" "+restarts+" active" {
		t.Errorf("after a worker crash: MainPID NRestarts state = %s, want %s %s active", got, pid, restarts)
	}
	if code := c.must(infer); code != "200" {
		t.Errorf("the other model after a worker crash: HTTP %s", code)
	}
	c.must("rm -r /var/lib/inferd/models/fpe")
	t.Logf("a worker killed by SIGFPE: the version is UNAVAILABLE, the unit stayed active with MainPID %s and NRestarts %s", pid, restarts)
}

const (
	// balloonWorkerLimit is the "balloon" model's max_memory_bytes, far under its 8 GiB.
	balloonWorkerLimit = 256 << 20
	// oomkillBalloon is what the "oomkill" model allocates at warmup: under its worker's limit
	// (twice as much), over oomkillHeadroom.
	oomkillBalloon = 1 << 30
	// oomkillHeadroom is the memory cgroup's limit above what the unit uses when it is set.
	oomkillHeadroom = 256 << 20
)

// indexEntry is one version in POST /v2/repository/index.
type indexEntry struct {
	Name, Version, State, Reason string
	WorkerPID                    int    `json:"worker_pid"`
	WorkerLastExit               string `json:"worker_last_exit"`
}

func repositoryIndex(c *container) []indexEntry {
	c.t.Helper()
	out := c.must("curl -s -XPOST http://127.0.0.1:8080/v2/repository/index")
	var index []indexEntry
	if err := json.Unmarshal([]byte(out), &index); err != nil {
		c.t.Fatalf("repository index %q: %v", out, err)
	}
	return index
}

// unavailable waits until model's version 1 is UNAVAILABLE with a reason holding want, and
// returns the entry.
func unavailable(c *container, model, want string, within time.Duration) indexEntry {
	c.t.Helper()
	var found indexEntry
	c.poll(model+" to be UNAVAILABLE with "+strconv.Quote(want), within, func() (bool, string) {
		for _, e := range repositoryIndex(c) {
			if e.Name == model && e.Version == "1" {
				found = e
				return e.State == "UNAVAILABLE" && strings.Contains(e.Reason, want), fmt.Sprintf("%+v", e)
			}
		}
		return false, model + " not in the index"
	})
	return found
}

// checkWorkerOOM drops models whose warmup allocates without bound, one at a time, and each
// time the version is UNAVAILABLE with an out-of-memory reason, the journal says so, and the
// daemon keeps its pid, its restart count and its other model:
//   - "balloon" asks for 8 GiB under its max_memory_bytes of 256 MiB: the allocation fails inside
//     ONNX Runtime (the worker's RLIMIT_DATA), which returns it as the warmup's error; the worker
//     does not die, and no exit is logged for it;
//   - "oomkill" asks for 1 GiB under a worker limit of 2 GiB, but the unit's memory is bounded
//     256 MiB above what it uses (as an operator's MemoryMax= would; container.limitMemory): the
//     kernel's OOM killer takes the worker, the largest process there and the one that made
//     itself the first choice (oom_score_adj 500, the daemon keeping the unit's), by SIGKILL,
//     which the daemon logs as a worker exit of class oom; with cgroup v2, systemd sees the OOM
//     kill too, and OOMPolicy=continue keeps the unit running (the default, stop, would stop it).
func checkWorkerOOM(t *testing.T, c *container) {
	t.Helper()
	mainPID := func() string { return c.show("inferd", "MainPID") }
	pid, restarts := mainPID(), c.show("inferd", "NRestarts")
	unchanged := func(after string) {
		t.Helper()
		if got := mainPID() + " " + c.show("inferd", "NRestarts") + " " + c.must("systemctl is-active inferd"); got != pid+" "+restarts+" active" {
			t.Errorf("after %s: MainPID NRestarts state = %s, want %s %s active", after, got, pid, restarts)
		}
		if code := c.must(infer); code != "200" {
			t.Errorf("the other model after %s: HTTP %s", after, code)
		}
	}
	journal := func(what, script string) {
		t.Helper()
		c.poll(what+" in the journal", 60*time.Second, func() (bool, string) {
			_, err := c.sh("journalctl -u inferd --no-pager -o cat | " + script)
			return err == nil, "no line matching: " + script
		})
	}

	// the workers are the kernel's first choice, the daemon is not
	for _, e := range repositoryIndex(c) {
		if e.Name == "mlp" {
			daemonScore, _ := strconv.Atoi(c.must("cat /proc/" + pid + "/oom_score_adj"))
			workerScore, _ := strconv.Atoi(c.must(fmt.Sprintf("cat /proc/%d/oom_score_adj", e.WorkerPID)))
			if workerScore != 500 || daemonScore >= workerScore {
				t.Errorf("oom_score_adj: the mlp worker's %d (want 500), the daemon's %d (want the unit's, lower)", workerScore, daemonScore)
			}
			t.Logf("oom_score_adj: the daemon %d, the mlp worker (pid %d) %d", daemonScore, e.WorkerPID, workerScore)
		}
	}

	// at the worker's own limit
	c.must("cp -r /mnt/e2e/balloon /var/lib/inferd/models/ && chown -R inferd:inferd /var/lib/inferd/models/balloon")
	e := unavailable(c, "balloon", "Failed to allocate memory for requested buffer of size 8589934592", 60*time.Second)
	journal("the failed allocation", "grep 'model version unavailable' | grep 'model=balloon' | grep -q 'Failed to allocate memory'")
	if out, err := c.sh("journalctl -u inferd --no-pager -o cat | grep 'model worker exited' | grep 'host=balloon/1'"); err == nil {
		t.Errorf("the balloon's worker died at its own limit, which ONNX Runtime should have reported as an error:\n%s", out)
	}
	unchanged("an allocation over the worker's limit")
	c.must("rm -r /var/lib/inferd/models/balloon")
	t.Logf("8 GiB at warmup under a 256 MiB worker limit: UNAVAILABLE (%s), the unit stayed active with MainPID %s and NRestarts %s", e.Reason, pid, restarts)

	// by the kernel's OOM killer
	undo, err := c.limitMemory("inferd", oomkillHeadroom)
	if err != nil {
		t.Logf("the kernel's OOM killer: not checked: %v", err)
		return
	}
	begin := time.Now()
	c.must("cp -r /mnt/e2e/oomkill /var/lib/inferd/models/ && chown -R inferd:inferd /var/lib/inferd/models/oomkill")
	exited := "grep 'model worker exited' | grep 'host=oomkill/1' | grep 'class=oom' | grep 'killed by SIGKILL (not by inferd'"
	// the version's state says what happened where the kill does not come (paged out, say)
	c.poll("the worker's OOM kill in the journal", 60*time.Second, func() (bool, string) {
		if _, err := c.sh("journalctl -u inferd --no-pager -o cat | " + exited + " -q"); err == nil {
			return true, ""
		}
		state := "oomkill not in the index"
		for _, e := range repositoryIndex(c) {
			if e.Name == "oomkill" {
				state = fmt.Sprintf("%+v", e)
			}
		}
		return false, "no line matching: " + exited + "; the version: " + state
	})
	took := time.Since(begin)
	line := c.must("journalctl -u inferd --no-pager -o cat | " + exited + " | tail -n1")
	e = unavailable(c, "oomkill", "the kernel's OOM killer", 30*time.Second)
	undo()
	unchanged("the kernel's OOM killer took a worker")
	c.must("rm -r /var/lib/inferd/models/oomkill")
	t.Logf("1 GiB at warmup under a memory cgroup: in the journal %s after the copy: %q; UNAVAILABLE (%s); the unit stayed active with MainPID %s and NRestarts %s",
		took.Round(time.Millisecond), line, e.Reason, pid, restarts)
}

// checkJournal reads inferd's entries as JSON and looks for the structured fields of its own
// lines (not just text).
func checkJournal(t *testing.T, c *container) {
	t.Helper()
	out := c.must("journalctl -u inferd --no-pager -o json")
	var sawReady, sawModel bool
	for _, line := range strings.Split(out, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e["SYSLOG_IDENTIFIER"] != "inferd" {
			continue
		}
		msg, _ := e["MESSAGE"].(string)
		fn, _ := e["CODE_FUNC"].(string)
		if strings.HasPrefix(msg, "ready ") && e["MODEL_VERSIONS_READY"] == "1" && e["PRIORITY"] == "6" &&
			strings.Contains(fn, "daemon") {
			sawReady = true
		}
		if e["COMPONENT"] == "models" && e["MODEL"] == "mlp" {
			sawModel = true
		}
	}
	if !sawReady || !sawModel {
		t.Errorf("journal: ready entry with MODEL_VERSIONS_READY=1 %v, entry with COMPONENT=models MODEL=mlp %v:\n%s",
			sawReady, sawModel, c.must("journalctl -u inferd --no-pager -o verbose | tail -n 60"))
	}
}

// slowClient sends an inference request in two parts: the headers and the start of the body,
// then (once /tmp/slow.go exists) the rest; it writes the status line it gets to /tmp/slow.code.
const slowClient = `#!/bin/bash
set -e
body=$(cat /mnt/e2e/request.json)
exec 3<>/dev/tcp/127.0.0.1/8080
printf 'POST /v2/models/mlp/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#body}" "${body:0:10}" >&3
touch /tmp/slow.started
while [ ! -e /tmp/slow.go ]; do sleep 0.05; done
printf '%s' "${body:10}" >&3
head -n1 <&3 | tr -d '\r' >/tmp/slow.code
`

// checkDrain has a request half sent when the stop begins: the daemon must stop accepting,
// wait for that request, answer it, and exit cleanly.
func checkDrain(t *testing.T, c *container) {
	t.Helper()
	c.must(`rm -f /tmp/slow.*; (/mnt/e2e/slow-client.sh >/tmp/slow.log 2>&1 &)`)
	c.poll("the slow client to have sent half its request", 15*time.Second, func() (bool, string) {
		_, err := c.sh("test -e /tmp/slow.started")
		log, _ := c.sh("cat /tmp/slow.log")
		return err == nil, log
	})
	begin := time.Now()
	c.must("systemctl stop --no-block inferd")
	c.poll("inferd to be draining (deactivating)", 15*time.Second, func() (bool, string) {
		state := c.show("inferd", "ActiveState")
		return state == "deactivating", state
	})
	// systemd is "deactivating" as soon as it has sent SIGTERM, a moment before the daemon has
	// handled it: new requests must be refused from then on, within a bound, while the half-sent
	// request still holds the drain open.
	refusing := time.Now()
	c.poll("a new request to be refused while draining", 10*time.Second, func() (bool, string) {
		code, _ := c.sh(infer)
		return strings.TrimSpace(code) != "200", "HTTP " + code
	})
	t.Logf("new requests refused %s after the stop state was seen", time.Since(refusing).Round(time.Millisecond))
	c.must("touch /tmp/slow.go")
	c.poll("the half-sent request's answer", 30*time.Second, func() (bool, string) {
		_, err := c.sh("test -s /tmp/slow.code")
		log, _ := c.sh("cat /tmp/slow.log")
		return err == nil, "client: " + log
	})
	if code := c.must("cat /tmp/slow.code"); code != "HTTP/1.1 200 OK" {
		t.Errorf("request in flight during stop: %q", code)
	}
	c.poll("inferd to stop", 60*time.Second, func() (bool, string) {
		state := c.show("inferd", "ActiveState")
		return state == "inactive", state
	})
	if got := c.show("inferd", "Result") + " " + c.show("inferd", "ExecMainStatus"); got != "success 0" {
		t.Errorf("after stop: Result ExecMainStatus = %s", got)
	}
	c.must("journalctl -u inferd --no-pager -o cat | grep -q '^stopped drained_in='")
	t.Logf("stop waited for a request in flight and exited 0 after %s", time.Since(begin).Round(time.Millisecond))
}
