//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
)

// The hostile-model suite (issue 15): the real binary, under a memory bound the suite sets
// (RLIMIT_DATA on the daemon through prlimit, inherited by its workers, which get their own
// [engine] max_memory_bytes), serves the demo MLP while one hostile model per class is dropped
// into its watched repository. For each it asserts that the daemon stays up (same pid), the MLP
// keeps answering correct results, a later repository change is applied, and the hostile
// version is UNAVAILABLE with a reason, or its request fails with a KServe error (and
// /health shows the worker's restarts and last exit where a worker died). Then the daemon is
// restarted with every hostile file still there and must come up ready, serving the others.
//
// Decisions where the issue is silent:
//   - a request that kills its worker gets a 5xx, and the version serves again from a fresh
//     worker afterwards (one crash is not "repeatedly");
//   - a request whose run fails allocating (OutputFromInput at 1e12) gets a 4xx or 5xx error
//     and the version stays READY;
//   - a model.toml asking for 40000 instances is either refused (UNAVAILABLE with a reason) or
//     served with fewer instances: both keep the daemon up, and if it serves it answers;
//   - a symlink from the repository to / is never served as a model.

const (
	// hostileDaemonData is the RLIMIT_DATA of the daemon (and, inherited, of its workers): enough
	// for the Go daemon and ORT, and small enough that a blow-up meets it at once.
	hostileDaemonData = 2 << 30
	// hostileWorkerMemory is [engine] max_memory_bytes, each worker's own bound.
	hostileWorkerMemory = 512 << 20
	// hostileLoadTimeout is [engine] load_timeout: a warmup that never ends is stopped after it.
	hostileLoadTimeout = 10 * time.Second
	// hostileRunTime is [engine] max_run_time.
	hostileRunTime = 5 * time.Second
	// hostileWait bounds each wait for a state change.
	hostileWait = 30 * time.Second
)

// hostileCase is one attack: the files it drops (paths relative to the repository; a nil
// model skips the case), and what it expects.
type hostileCase struct {
	name  string
	files map[string][]byte
	// symlink, when set, is the target of a symlink named after the case in the repository.
	symlink string
	// unavailable: the version (1) must become UNAVAILABLE with a reason.
	unavailable bool
	// request, when set, is sent once the version is READY and must fail with a KServe error;
	// crashes says it kills the worker: /health and the index must show its last exit (and,
	// for a request, a restart; a version given up at warmup need not restart its worker).
	request *inferRequest
	crashes bool
	// ordinary, when set, must be answered correctly after request (from a fresh worker).
	ordinary *inferRequest
	// servesOrRefuses: either UNAVAILABLE with a reason, or READY and answering ordinary.
	servesOrRefuses bool
	// never: the name must never become READY.
	never bool
}

func hostileCases() []hostileCase {
	one := func(name string, model []byte) map[string][]byte {
		if model == nil {
			return nil
		}
		// max_batch_size makes the model batchable, and so warmed up at batch 1 when it loads.
		return map[string][]byte{name + "/1/model.onnx": model, name + "/model.toml": []byte("max_batch_size = 8\n")}
	}
	withToml := func(name, toml string) map[string][]byte {
		return map[string][]byte{name + "/1/model.onnx": testmodels.MLP(), name + "/model.toml": []byte(toml)}
	}
	row := func(v float32) *inferRequest {
		x := []float32{1, 2, v, 4}
		return fp32Request("input", []int64{1, 4}, x).expect(testmodels.DivideByZeroFromInputForward(x))
	}
	return []hostileCase{
		{name: "balloon", files: one("balloon", testmodels.Balloon()), unavailable: true},
		{name: "balloon_tile", files: one("balloon_tile", testmodels.BalloonTile()), unavailable: true},
		{name: "balloon_pad", files: one("balloon_pad", testmodels.BalloonPad()), unavailable: true},
		{name: "shape_overflow", files: one("shape_overflow", testmodels.ShapeOverflow()), unavailable: true},
		{name: "divide_by_zero", files: one("divide_by_zero", testmodels.DivideByZero()), unavailable: true, crashes: true},
		{name: "abort_on_empty_batch", files: one("abort_on_empty_batch", testmodels.AbortOnEmptyBatch()), unavailable: true, crashes: true},
		{name: "endless_loop", files: one("endless_loop", endlessLoop()), unavailable: true},
		{name: "external_data_escape", files: one("external_data_escape", testmodels.ExternalData("../../../../../../../../etc/passwd", 16)), unavailable: true},
		{name: "external_data_dev_zero", files: one("external_data_dev_zero", testmodels.ExternalData("/dev/zero", 1<<40)), unavailable: true},
		{name: "claimed_length", files: one("claimed_length", testmodels.ClaimedLength(1<<40)), unavailable: true},
		{name: "deep_nesting", files: one("deep_nesting", testmodels.DeepNesting(3000)), unavailable: true},
		{name: "huge_warmup", files: withToml("huge_warmup", "max_batch_size = 64\n[warmup]\nbatch_sizes = [1099511627776]\n"), unavailable: true},
		{name: "many_instances", files: withToml("many_instances", "max_batch_size = 64\n[instance]\ncount = 40000\n"),
			servesOrRefuses: true, ordinary: hostileMLPRequest()},
		{name: "divide_by_zero_from_input", files: one("divide_by_zero_from_input", testmodels.DivideByZeroFromInput()),
			request: row(testmodels.DivideByZeroTrigger), crashes: true, ordinary: row(3)},
		{name: "output_from_input", files: one("output_from_input", testmodels.OutputFromInput()),
			request:  fp32Request("input", []int64{1, 1}, []float32{1e12}),
			ordinary: fp32Request("input", []int64{1, 1}, []float32{2}).expect([]float32{2, 2, 2})},
		{name: "loop_from_input", files: one("loop_from_input", loopFromInput()),
			request: steeredRequest(1 << 40), ordinary: steeredRequest(1).expect([]float32{2, 3, 4, 5})},
		{name: "root_symlink", symlink: "/", never: true},
	}
}

func TestHostileModels(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	hostileWriteFiles(t, repo, map[string][]byte{
		"mlp/1/model.onnx": testmodels.MLP(),
		"mlp/model.toml":   []byte("max_batch_size = 64\n"),
	})
	cfg := filepath.Join(root, "inferd.toml")
	testutil.WriteFile(t, root, "inferd.toml", []byte(fmt.Sprintf(`
[models]
repository = %q
quiet_period = "100ms"
[engine]
isolation = "process"
max_memory_bytes = %d
load_timeout = "%s"
max_run_time = "%s"
`, repo, hostileWorkerMemory, hostileLoadTimeout, hostileRunTime)))
	bin := daemontest.Build(t, t.TempDir())
	wrapper := []string{"prlimit", fmt.Sprintf("--data=%d", hostileDaemonData), "--"}
	d := daemontest.StartWrapped(t, wrapper, bin, cfg)
	d.WaitReady(t)
	pid := d.PID()
	hostileCheckMLP(t, d)

	canary := 0
	var refused []string // the cases whose version must stay UNAVAILABLE after a restart
	for _, c := range hostileCases() {
		t.Run(c.name, func(t *testing.T) {
			if c.files == nil && c.symlink == "" {
				t.Skip("TODO(lead): the model comes with branch i15-sched (see hostile_models_test.go)")
			}
			if !processAlive(pid) {
				t.Fatalf("inferd (pid %d) is gone, killed by an earlier case", pid)
			}
			dropHostile(t, repo, c)
			if c.unavailable {
				refused = append(refused, c.name)
			}
			checkHostile(t, d, c)
			// The daemon is the same process, the MLP answers, and a later change applies.
			if got := d.PID(); got != pid || !processAlive(pid) {
				t.Fatalf("daemon pid %d (alive %v), want %d", got, processAlive(pid), pid)
			}
			hostileCheckMLP(t, d)
			canary++
			checkCanary(t, d, repo, canary)
		})
	}

	// Restart with every hostile file still in the repository: the node comes up ready and
	// serves the others.
	d.Signal(t, syscall.SIGTERM)
	hostileWaitExit(t, d)
	d = daemontest.StartWrapped(t, wrapper, bin, cfg)
	d.WaitReady(t)
	hostileCheckMLP(t, d)
	if canary > 0 {
		waitVersionState(t, d, "canary", fmt.Sprint(canary), "READY")
		checkCanaryAnswers(t, d, canary)
	}
	for _, name := range refused {
		waitUnavailable(t, d, name)
	}
}

// dropHostile writes c's files into the repository (each version folder complete before it
// appears) or makes its symlink.
func dropHostile(t *testing.T, repo string, c hostileCase) {
	t.Helper()
	if c.symlink != "" {
		if err := os.Symlink(c.symlink, filepath.Join(repo, c.name)); err != nil {
			t.Fatal(err)
		}
		return
	}
	stage := filepath.Join(filepath.Dir(repo), ".stage-"+c.name)
	hostileWriteFiles(t, stage, c.files)
	if err := os.Rename(filepath.Join(stage, c.name), filepath.Join(repo, c.name)); err != nil {
		t.Fatal(err)
	}
}

func checkHostile(t *testing.T, d *daemontest.Daemon, c hostileCase) {
	t.Helper()
	switch {
	case c.unavailable:
		waitUnavailable(t, d, c.name)
		if c.crashes {
			waitWorkerExit(t, d, c.name, 0)
		}
	case c.never:
		// A change applied after the symlink appeared (the next canary) shows the watcher got
		// past it; the symlink's name must not have become a served model by then.
		t.Cleanup(func() {
			if e, ok := hostileIndexEntry(t, d, c.name, "1"); ok && e.State == "READY" {
				t.Errorf("%s is served: %+v", c.name, e)
			}
		})
	case c.servesOrRefuses:
		e := waitSettled(t, d, c.name)
		if e.State == "READY" {
			checkAnswers(t, d, c.name, c.ordinary)
		} else if e.Reason == "" {
			t.Errorf("%s is %s without a reason", c.name, e.State)
		}
	case c.request != nil:
		waitVersionState(t, d, c.name, "1", "READY")
		status, body := hostileInfer(t, d, c.name, c.request)
		if status < 400 || !strings.Contains(body, `"error"`) {
			t.Fatalf("hostile request to %s: %d %s, want a KServe error", c.name, status, body)
		}
		t.Logf("hostile request to %s: %d %s", c.name, status, body)
		if c.crashes {
			waitWorkerExit(t, d, c.name, 1)
		}
		// Served again (a fresh worker where the last one died).
		testutil.Eventually(t, hostileWait, func() string {
			status, body := hostileInfer(t, d, c.name, c.ordinary)
			if status != http.StatusOK {
				return fmt.Sprintf("ordinary request to %s after the hostile one: %d %s", c.name, status, body)
			}
			return ""
		})
		checkAnswers(t, d, c.name, c.ordinary)
	}
}

// checkCanary adds version n of the canary model (input + n) and waits until it answers.
func checkCanary(t *testing.T, d *daemontest.Daemon, repo string, n int) {
	t.Helper()
	writeModel(t, repo, "canary", n, testmodels.AddConst(float32(n)))
	waitVersionState(t, d, "canary", fmt.Sprint(n), "READY")
	checkCanaryAnswers(t, d, n)
}

func checkCanaryAnswers(t *testing.T, d *daemontest.Daemon, n int) {
	t.Helper()
	x := []float32{1, 2, 3, 4}
	status, out := hostileInferVersion(t, d, "canary", fmt.Sprint(n), fp32Request("input", []int64{1, 4}, x))
	if status != http.StatusOK {
		t.Fatalf("canary %d: %d %v", n, status, out)
	}
	for i, v := range x {
		if got := out.floats(t, 0)[i]; got != v+float32(n) {
			t.Fatalf("canary %d output[%d] = %v, want %v", n, i, got, v+float32(n))
		}
	}
}

// hostileCheckMLP asks the demo MLP for two rows and compares with the reference.
func hostileCheckMLP(t *testing.T, d *daemontest.Daemon) {
	t.Helper()
	checkAnswers(t, d, "mlp", hostileMLPRequest())
}

func hostileMLPRequest() *inferRequest {
	x := []float32{0.5, -1, 2, 0.25, 1, 1, 1, 1}
	return fp32Request("input", []int64{2, 4}, x).expect(testmodels.MLPForward(x))
}

// hostileWaitExit waits for the daemon to end after SIGTERM.
func hostileWaitExit(t *testing.T, d *daemontest.Daemon) {
	t.Helper()
	ctx, cancel := contextWithTimeout(hostileWait)
	defer cancel()
	if code, err := d.Wait(ctx); err != nil || code != 0 {
		t.Fatalf("inferd after SIGTERM: exit %d, %v", code, err)
	}
}

// alive says whether pid is a running process.
func processAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func hostileWriteFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for rel, data := range files {
		testutil.WriteFile(t, dir, rel, data)
	}
}
