package testmodels

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// The hostile models are run by raw ONNX Runtime in a child process (this test binary again,
// running only TestHostileChild), because what they do cannot be survived by the process that
// runs them: the parent only watches how the child ends.

// hostileChildEnv carries a childJob (JSON) to the child; without it TestHostileChild skips.
const hostileChildEnv = "INFERD_TESTMODELS_HOSTILE_CHILD"

// childMemoryLimit is the RLIMIT_DATA the child runs under: ONNX Runtime, the test binary and a
// small model need well under it, and a blow-up meets it within milliseconds.
const childMemoryLimit = 512 << 20

// Exit codes of the child besides 0 (the run succeeded and its output is on stdout).
const (
	exitLoadFailed = 3 // the session could not be created
	exitRunFailed  = 4 // Run returned an error
)

// childJob is one run for the child: the model file, one FP32 input and the memory limit.
type childJob struct {
	Path   string    `json:"path"`
	Shape  []int64   `json:"shape"`
	Values []float32 `json:"values"`
	Limit  uint64    `json:"limit"`
}

// childOutput is the child's stdout after a successful run.
type childOutput struct {
	Shape  []int64   `json:"shape"`
	Values []float32 `json:"values"`
}

// TestHostileChild is the child's side: set the memory limit, load, run once, report by exit
// code (and the output on stdout).
func TestHostileChild(t *testing.T) {
	raw := os.Getenv(hostileChildEnv)
	if raw == "" {
		t.Skip("runs only as the child process of the hostile model tests")
	}
	var job childJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		t.Fatal(err)
	}
	if job.Limit > 0 {
		lim := syscall.Rlimit{Cur: job.Limit, Max: job.Limit}
		if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &lim); err != nil {
			t.Fatal(err)
		}
	}
	s, err := ort.NewDynamicAdvancedSession(job.Path, []string{"input"}, []string{"output"}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(exitLoadFailed)
	}
	in, err := ort.NewTensor(ort.NewShape(job.Shape...), job.Values)
	if err != nil {
		t.Fatal(err)
	}
	outs := []ort.Value{nil}
	if err := s.Run([]ort.Value{in}, outs); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		os.Exit(exitRunFailed)
	}
	out, ok := outs[0].(*ort.Tensor[float32])
	if !ok {
		t.Fatalf("output is %T", outs[0])
	}
	if err := json.NewEncoder(os.Stdout).Encode(childOutput{Shape: out.GetShape(), Values: out.GetData()}); err != nil {
		t.Fatal(err)
	}
	os.Exit(0)
}

// childEnd is how a child ended.
type childEnd struct {
	code   int    // exit code; 2 with signal set is Go's report of a fatal signal
	signal string // the fatal signal the Go runtime reported ("SIGFPE"), or "" for none
	out    childOutput
	stderr string
	took   time.Duration
}

func (e childEnd) String() string {
	return fmt.Sprintf("exit %d, signal %q, after %s, stderr:\n%.2000s", e.code, e.signal, e.took.Round(time.Millisecond), e.stderr)
}

// fatalSignalRE finds the signal in the Go runtime's report of a fatal signal: a synchronous
// signal raised in C code (ONNX Runtime's kernels) cannot be handled in Go, and the runtime
// reports it with "[signal SIGFPE: ..." or a first line "SIGABRT: abort", then exits 2. (A
// process that is not Go would die of the signal itself; the worker is a Go process.)
var fatalSignalRE = regexp.MustCompile(`(?m)(?:\[signal |^)(SIG[A-Z]+)[: ]`)

// runChild runs model in a child under limit bytes of RLIMIT_DATA on input values of shape.
func runChild(t *testing.T, model []byte, shape []int64, values []float32, limit uint64) childEnd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return runChildPath(t, path, shape, values, limit)
}

func runChildPath(t *testing.T, path string, shape []int64, values []float32, limit uint64) childEnd {
	t.Helper()
	job, err := json.Marshal(childJob{Path: path, Shape: shape, Values: values, Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostileChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), hostileChildEnv+"="+string(job), "GOTRACEBACK=single")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	end := childEnd{stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		end.code = exit.ExitCode()
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			end.signal = ws.Signal().String()
		} else if m := fatalSignalRE.FindStringSubmatch(end.stderr); end.code == 2 && m != nil {
			end.signal = m[1]
		}
	case err != nil:
		t.Fatalf("running the child: %v", err)
	default:
		if err := json.Unmarshal(stdout.Bytes(), &end.out); err != nil {
			t.Fatalf("child output %q: %v", stdout.String(), err)
		}
	}
	return end
}

func rows(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

func TestHostileModels(t *testing.T) {
	zeros := rows(4, 0)
	cases := []struct {
		name   string
		model  []byte
		shape  []int64
		values []float32
		check  func(t *testing.T, e childEnd)
	}{
		{"balloon_small_runs", balloon(4), []int64{1, 4}, []float32{1, 2, 3, 4}, succeeds([]int64{1, 4}, []float32{1, 2, 3, 4})},
		{"balloon", Balloon(), []int64{1, 4}, zeros, exits(exitRunFailed)},
		{"balloon_of_1mib_runs", BalloonOf(1 << 20), []int64{1, 4}, []float32{1, 2, 3, 4}, succeeds([]int64{1, 4}, []float32{1, 2, 3, 4})},
		{"balloon_of_1gib", BalloonOf(1 << 30), []int64{1, 4}, zeros, exits(exitRunFailed)}, // over childMemoryLimit
		{"divide_by_zero", DivideByZero(), []int64{1, 4}, zeros, killedBy("SIGFPE")},
		{"divide_by_zero_from_input_ordinary", DivideByZeroFromInput(), []int64{2, 4}, []float32{0, 1, 2, 3, 4, 5, 6, 8},
			succeeds([]int64{2, 4}, DivideByZeroFromInputForward([]float32{0, 1, 2, 3, 4, 5, 6, 8}))},
		{"divide_by_zero_from_input_trigger", DivideByZeroFromInput(), []int64{1, 4}, []float32{1, 2, DivideByZeroTrigger, 3}, killedBy("SIGFPE")},
		{"output_from_input_ordinary", OutputFromInput(), []int64{2, 1}, []float32{2, -1.5}, succeeds([]int64{2, 3}, []float32{2, 2, 2, -1.5, -1.5, -1.5})},
		{"output_from_input_huge", OutputFromInput(), []int64{1, 1}, []float32{1e12}, exits(exitRunFailed)},
		{"abort_on_empty_batch", AbortOnEmptyBatch(), []int64{1, 4}, zeros, killedBy("SIGABRT")},
		{"balloon_tile", BalloonTile(), []int64{1, 4}, zeros, exits(exitRunFailed)},
		{"balloon_pad", BalloonPad(), []int64{1, 4}, zeros, exits(exitRunFailed)},
		{"shape_overflow", ShapeOverflow(), []int64{1, 4}, zeros, exits(exitRunFailed)},
		// ORT 1.29 checks external data paths: none of these loads, and none reads the file.
		{"external_data_escape", ExternalData("../../../../../../../../etc/passwd", 16), []int64{1, 4}, zeros, exits(exitLoadFailed)},
		{"external_data_absolute", ExternalData("/etc/passwd", 16), []int64{1, 4}, zeros, exits(exitLoadFailed)},
		{"external_data_dev_zero", ExternalData("/dev/zero", 1<<40), []int64{1, 4}, zeros, exits(exitLoadFailed)},
		{"claimed_length", ClaimedLength(1 << 40), []int64{1, 4}, zeros, exits(exitLoadFailed)},
		{"deep_nesting_shallow_runs", DeepNesting(20), []int64{1, 4}, []float32{1, 2, 3, 4}, succeeds([]int64{1, 4}, []float32{1, 2, 3, 4})},
		{"deep_nesting", DeepNesting(3000), []int64{1, 4}, zeros, exits(exitLoadFailed)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.check(t, runChild(t, c.model, c.shape, c.values, childMemoryLimit))
		})
	}
}

func succeeds(shape []int64, values []float32) func(*testing.T, childEnd) {
	return func(t *testing.T, e childEnd) {
		t.Helper()
		if e.code != 0 {
			t.Fatalf("child failed: %v", e)
		}
		if !slices.Equal(e.out.Shape, shape) {
			t.Fatalf("output shape %v, want %v", e.out.Shape, shape)
		}
		for i := range values {
			if !closeEnough(float64(e.out.Values[i]), float64(values[i])) {
				t.Errorf("output[%d] = %v, want %v", i, e.out.Values[i], values[i])
			}
		}
	}
}

func exits(code int) func(*testing.T, childEnd) {
	return func(t *testing.T, e childEnd) {
		t.Helper()
		if e.code != code || e.signal != "" {
			t.Fatalf("want exit %d; got %v", code, e)
		}
		t.Logf("as expected: %v", e)
	}
}

func killedBy(sig string) func(*testing.T, childEnd) {
	return func(t *testing.T, e childEnd) {
		t.Helper()
		if e.signal != sig {
			t.Fatalf("want death by %s; got %v", sig, e)
		}
		t.Logf("as expected: %v", e)
	}
}

// TestHostileExternalDataSymlink: external data named inside the model's folder but a symlink out
// of it (to /etc/passwd, to /dev/zero with a 1 TiB length) is refused by ORT 1.29 too.
func TestHostileExternalDataSymlink(t *testing.T) {
	for _, c := range []struct {
		name, target string
		length       int64
	}{{"passwd", "/etc/passwd", 16}, {"dev_zero", "/dev/zero", 1 << 40}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			model := filepath.Join(dir, "model.onnx")
			if err := os.WriteFile(model, ExternalData("w.bin", c.length), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(c.target, filepath.Join(dir, "w.bin")); err != nil {
				t.Fatal(err)
			}
			exits(exitLoadFailed)(t, runChildPath(t, model, []int64{1, 4}, rows(4, 0), childMemoryLimit))
		})
	}
}

// TestHostileModelsAreSmall: an attack needs no big file (DeepNesting aside, whose size is its
// depth).
func TestHostileModelsAreSmall(t *testing.T) {
	for name, m := range map[string][]byte{
		"Balloon": Balloon(), "BalloonOf": BalloonOf(1 << 30), "BalloonTile": BalloonTile(), "BalloonPad": BalloonPad(),
		"DivideByZero": DivideByZero(), "DivideByZeroFromInput": DivideByZeroFromInput(),
		"AbortOnEmptyBatch": AbortOnEmptyBatch(), "OutputFromInput": OutputFromInput(),
		"ShapeOverflow": ShapeOverflow(), "ExternalData": ExternalData("../../etc/passwd", 16),
		"ClaimedLength": ClaimedLength(1 << 40),
	} {
		if len(m) > 1024 {
			t.Errorf("%s is %d bytes", name, len(m))
		}
	}
}
