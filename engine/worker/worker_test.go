package worker_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/engine/worker"
	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/tensor"
)

// The test binary is also the worker: with workerEnv set it serves the control socket with real
// ONNX Runtime, behind faults a test can trigger from a request (see faulty).
const workerEnv = "INFERD_WORKER_TEST"

var libPath string

func TestMain(m *testing.M) {
	path, tried, err := ort.FindLibrary("", nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engine/worker: %v\n(tried %v)\n", err, tried)
		os.Exit(1)
	}
	libPath = path
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

func workerMain() int {
	var limit int64
	for i, a := range os.Args {
		if a == "--memory-limit" && i+1 < len(os.Args) {
			fmt.Sscan(os.Args[i+1], &limit)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	return worker.Main(context.Background(), limit, func() (engine.Runtime, func() error, error) {
		rt, err := ort.New(ort.RuntimeOptions{LibraryPath: libPath}, log)
		if err != nil {
			return nil, nil, err
		}
		return faulty{rt}, rt.Close, nil
	}, log)
}

// Faults a request triggers in the test worker with the first element of its first input.
const (
	faultSegv      = -1001 // the worker kills itself with SIGSEGV
	faultHang      = -1002 // the run never ends and ignores cancellation
	faultBalloon   = -1003 // the worker allocates until it runs out of memory
	faultExit      = -1004 // the worker exits with status 7
	faultHangPolit = -1005 // the run blocks until it is cancelled, then returns its error
)

type faulty struct{ engine.Runtime }

func (f faulty) Open(ctx context.Context, path string, opts engine.Options) (engine.Session, error) {
	if strings.HasSuffix(path, "hang.onnx") {
		select {} // a load that never ends
	}
	s, err := f.Runtime.Open(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	return faultySession{s}, nil
}

type faultySession struct{ engine.Session }

func (s faultySession) Run(ctx context.Context, in []tensor.Tensor, names []string) ([]tensor.Tensor, error) {
	if len(in) > 0 && in[0].DataType == tensor.FP32 && len(in[0].Data) >= 4 {
		switch math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data)) { // the first element only: a run must not pay for reading all of it
		case faultSegv:
			_ = syscall.Kill(os.Getpid(), syscall.SIGSEGV)
			select {}
		case faultHang:
			select {}
		case faultBalloon:
			var hold [][]byte
			for {
				hold = append(hold, make([]byte, 64<<20))
				for i := range hold[len(hold)-1] {
					hold[len(hold)-1][i] = 1
				}
			}
		case faultExit:
			fmt.Fprintln(os.Stderr, "giving up on purpose")
			os.Exit(7)
		case faultHangPolit:
			<-ctx.Done()
			return nil, fmt.Errorf("%w: %w", engine.ErrRun, ctx.Err())
		}
	}
	return s.Session.Run(ctx, in, names)
}

type recorder struct {
	mu     sync.Mutex
	events []engine.HostEvent
}

func (r *recorder) add(e engine.HostEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) kinds() []engine.HostEventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var k []engine.HostEventKind
	for _, e := range r.events {
		k = append(k, e.Kind)
	}
	return k
}

// exitsEventually waits for n exit events (the supervisor reports an exit a moment after the
// caller whose run it ended has its error).
func (r *recorder) exitsEventually(t *testing.T, n int) []engine.HostEvent {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() string {
		if got := len(r.exits()); got < n {
			return fmt.Sprintf("%d exit events, want %d", got, n)
		}
		return ""
	})
	return r.exits()
}

func (r *recorder) exits() []engine.HostEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []engine.HostEvent
	for _, e := range r.events {
		if e.Kind == engine.WorkerExited {
			out = append(out, e)
		}
	}
	return out
}

func isolator(t *testing.T) *worker.Isolator {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &worker.Isolator{
		Path: exe, Args: []string{"-test.run=^$"}, Env: append(os.Environ(), workerEnv+"=1"),
		Log: slog.New(slog.NewTextHandler(t.Output(), nil)), Grace: 300 * time.Millisecond, StartTimeout: 5 * time.Second,
	}
}

func startHost(t *testing.T, iso *worker.Isolator, opts engine.HostOptions) (engine.Host, *recorder) {
	t.Helper()
	rec := &recorder{}
	if opts.Name == "" {
		opts.Name = "test/1"
	}
	opts.OnEvent = rec.add
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := iso.Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h, rec
}

func writeModel(t *testing.T, name string, model []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func openMLP(t *testing.T, h engine.Host) engine.Session {
	t.Helper()
	s, err := h.Open(context.Background(), writeModel(t, "mlp.onnx", testmodels.MLP()), engine.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mlpInput(rows int, first float32) tensor.Tensor {
	x := make([]float32, rows*4)
	for i := range x {
		x[i] = float32(i%7) * 0.25
	}
	x[0] = first
	return tensor.FromFloat32s("input", []int64{int64(rows), 4}, x)
}

func checkMLP(t *testing.T, s engine.Session, rows int) {
	t.Helper()
	in := mlpInput(rows, 0.5)
	out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := testmodels.MLPForward(in.Float32s())
	got := out[0].Float32s()
	if len(got) != len(want) {
		t.Fatalf("%d outputs, want %d", len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-4 {
			t.Fatalf("output %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestRunsInAnotherProcess(t *testing.T) {
	h, _ := startHost(t, isolator(t), engine.HostOptions{MemoryLimit: 1 << 30})
	pid := h.Status().PID
	if pid == 0 || pid == os.Getpid() {
		t.Fatalf("worker pid %d (the test is %d)", pid, os.Getpid())
	}
	path := writeModel(t, "mlp.onnx", testmodels.MLP())
	sig, err := h.Inspect(context.Background(), path)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if len(sig.Inputs) != 1 || sig.Inputs[0].Name != "input" || !slices.Equal(sig.Inputs[0].Shape, []int64{-1, 4}) {
		t.Fatalf("signature %+v", sig)
	}
	s := openMLP(t, h)
	if s.Provider() != engine.ProviderCPU {
		t.Errorf("provider %q", s.Provider())
	}
	for _, rows := range []int{1, 3, 1, 40000, 2} { // 40000 rows grow the arena past its first MiB
		checkMLP(t, s, rows)
	}
	if rss := h.Status().RSSBytes; rss == 0 {
		t.Errorf("worker RSS not reported")
	}
}

func TestSessionsRunInParallel(t *testing.T) {
	h, _ := startHost(t, isolator(t), engine.HostOptions{})
	a, b := openMLP(t, h), openMLP(t, h)
	var wg sync.WaitGroup
	for _, s := range []engine.Session{a, b} {
		wg.Go(func() {
			for range 200 {
				checkMLP(t, s, 2)
			}
		})
	}
	wg.Wait()
}

func TestStringsCrossTheArena(t *testing.T) {
	h, _ := startHost(t, isolator(t), engine.HostOptions{})
	s, err := h.Open(context.Background(), writeModel(t, "strings.onnx", testmodels.Strings()), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	text := []string{"hello", "", "Zwölf Boxkämpfer", strings.Repeat("x", 5000)}
	in := tensor.Tensor{Name: s.Signature().Inputs[0].Name, DataType: tensor.Bytes, Shape: []int64{int64(len(text))}}
	for _, x := range text {
		in.Strings = append(in.Strings, []byte(x))
	}
	out, err := s.Run(context.Background(), []tensor.Tensor{in}, nil)
	if err != nil {
		t.Fatal(err)
	}
	upper, same := testmodels.StringsForward(text)
	for i, o := range out {
		want := [][]string{upper, same}[i]
		for j := range want {
			if string(o.Strings[j]) != want[j] {
				t.Errorf("output %d[%d] = %q, want %q", i, j, o.Strings[j], want[j])
			}
		}
	}
}

// runFault sends a request that triggers fault f.
func runFault(ctx context.Context, s engine.Session, f float32) error {
	_, err := s.Run(ctx, []tensor.Tensor{mlpInput(1, f)}, nil)
	return err
}

func TestCrashFailsTheRunAndANewWorkerServes(t *testing.T) {
	h, rec := startHost(t, isolator(t), engine.HostOptions{})
	s := openMLP(t, h)
	first := h.Status().PID
	err := runFault(context.Background(), s, faultSegv)
	if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "SIGSEGV") {
		t.Fatalf("Run on a crashing worker: %v, want ErrWorker naming SIGSEGV", err)
	}
	checkMLP(t, s, 3) // the same session, opened again in a fresh worker
	st := h.Status()
	if st.PID == first || st.PID == 0 || st.Restarts != 1 || !strings.Contains(st.LastExit, "SIGSEGV") {
		t.Errorf("status after a crash: %+v (first pid %d)", st, first)
	}
	exits := rec.exitsEventually(t, 1)
	if len(exits) != 1 || exits[0].Class != engine.ExitSignal || exits[0].PID != first {
		t.Errorf("exit events %+v", exits)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", first)); err == nil {
		t.Errorf("the crashed worker %d is still there", first)
	}
}

func TestOutOfMemoryIsReportedAsSuch(t *testing.T) {
	h, rec := startHost(t, isolator(t), engine.HostOptions{MemoryLimit: 512 << 20})
	s := openMLP(t, h)
	err := runFault(context.Background(), s, faultBalloon)
	if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "out of memory at the 512.0 MiB limit") {
		t.Fatalf("Run that balloons: %v", err)
	}
	if e := rec.exitsEventually(t, 1); len(e) != 1 || e[0].Class != engine.ExitOOM {
		t.Errorf("exit events %+v", e)
	}
	checkMLP(t, s, 1)
}

// oomScoreAdj reads a process's oom_score_adj.
func oomScoreAdj(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A worker raises its oom_score_adj so that the kernel's OOM killer takes it before the daemon
// (which keeps its own); a score the daemon already had above that is inherited and kept.
func TestWorkerIsTheOOMKillersFirstChoice(t *testing.T) {
	own := oomScoreAdj(t, os.Getpid())
	if own >= worker.OOMScoreAdj {
		t.Skipf("this process already has oom_score_adj %d", own)
	}
	h, _ := startHost(t, isolator(t), engine.HostOptions{})
	if got := oomScoreAdj(t, h.Status().PID); got != worker.OOMScoreAdj {
		t.Errorf("worker oom_score_adj %d, want %d", got, worker.OOMScoreAdj)
	}
	if got := oomScoreAdj(t, os.Getpid()); got != own {
		t.Errorf("the daemon's oom_score_adj went from %d to %d", own, got)
	}

	// Raising its own score needs no privilege, nor does lowering it back to where it was.
	higher := worker.OOMScoreAdj + 200
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(higher)), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(own)), 0); err != nil {
			t.Errorf("restoring oom_score_adj %d: %v", own, err)
		}
	})
	h, _ = startHost(t, isolator(t), engine.HostOptions{})
	if got := oomScoreAdj(t, h.Status().PID); got != higher {
		t.Errorf("worker of a daemon at %d: oom_score_adj %d, want it kept", higher, got)
	}
}

func TestExitStatusAndLastWords(t *testing.T) {
	h, rec := startHost(t, isolator(t), engine.HostOptions{})
	s := openMLP(t, h)
	err := runFault(context.Background(), s, faultExit)
	if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "exited with status 7: giving up on purpose") {
		t.Fatalf("Run whose worker exits: %v", err)
	}
	if e := rec.exitsEventually(t, 1); len(e) != 1 || e[0].Class != engine.ExitError {
		t.Errorf("exit events %+v", e)
	}
}

func TestGivesUpAfterRepeatedFailures(t *testing.T) {
	iso := isolator(t)
	iso.MaxFailures = 3
	h, rec := startHost(t, iso, engine.HostOptions{})
	s := openMLP(t, h)
	for i := range 3 {
		if err := runFault(context.Background(), s, faultSegv); !errors.Is(err, engine.ErrWorker) {
			t.Fatalf("crash %d: %v", i, err)
		}
	}
	select {
	case <-h.Failed():
	case <-time.After(30 * time.Second):
		t.Fatal("the host did not give up after 3 failures")
	}
	if err := h.Err(); !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "3 failures within 5m0s") {
		t.Errorf("Err = %v", err)
	}
	if err := runFault(context.Background(), s, 0.5); err == nil {
		t.Error("a host that gave up still runs")
	}
	if k := rec.kinds(); k[len(k)-1] != engine.HostFailed {
		t.Errorf("events %v, want HostFailed last", k)
	}
	if pid := h.Status().PID; pid != 0 {
		t.Errorf("a host that gave up has worker %d", pid)
	}
}

func TestCancelledRunThatIgnoresTerminateIsKilled(t *testing.T) {
	h, rec := startHost(t, isolator(t), engine.HostOptions{})
	s := openMLP(t, h)
	ctx, cancel := context.WithTimeoutCause(context.Background(), 100*time.Millisecond, errors.New("every request of the batch left"))
	defer cancel()
	start := time.Now()
	err := runFault(ctx, s, faultHang)
	if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "did not stop within 300ms of its cancellation") {
		t.Fatalf("hung run: %v", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("a hung run took %s to end", took)
	}
	if e := rec.exitsEventually(t, 1); len(e) != 1 || e[0].Class != engine.ExitDeadline {
		t.Errorf("exit events %+v", e)
	}
	checkMLP(t, s, 2)
}

func TestCancelledRunStopsWithoutAKill(t *testing.T) {
	h, _ := startHost(t, isolator(t), engine.HostOptions{})
	s := openMLP(t, h)
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() { cancel(errors.New("client went away")) }()
	err := runFault(ctx, s, faultHangPolit)
	if err == nil || errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "client went away") {
		t.Fatalf("cancelled run: %v", err)
	}
	if st := h.Status(); st.Restarts != 0 {
		t.Errorf("a run that honoured its cancellation cost a worker: %+v", st)
	}
	checkMLP(t, s, 1)
}

func TestLoadPastItsDeadlineKillsTheWorker(t *testing.T) {
	h, rec := startHost(t, isolator(t), engine.HostOptions{})
	first := h.Status().PID
	ctx, cancel := context.WithTimeoutCause(context.Background(), 200*time.Millisecond, errors.New("load and warmup exceeded load_timeout 200ms"))
	defer cancel()
	_, err := h.Open(ctx, writeModel(t, "hang.onnx", testmodels.MLP()), engine.Options{})
	if err == nil || !strings.Contains(err.Error(), "load_timeout 200ms") {
		t.Fatalf("Open that hangs: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() string {
		if e := rec.exits(); len(e) != 1 || e[0].Class != engine.ExitDeadline || !strings.Contains(e[0].Reason, "load_timeout") {
			return fmt.Sprintf("exit events %+v", e)
		}
		return ""
	})
	testutil.Eventually(t, 10*time.Second, func() string {
		if st := h.Status(); st.PID == 0 || st.PID == first {
			return fmt.Sprintf("status %+v", st)
		}
		return ""
	})
	openMLP(t, h) // the new worker loads what does load
}

func TestCloseEndsTheWorker(t *testing.T) {
	h, rec := startHost(t, isolator(t), engine.HostOptions{})
	s := openMLP(t, h)
	pid := h.Status().PID
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("worker %d outlived Close", pid)
	}
	if err := runFault(context.Background(), s, 0.5); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	if e := rec.exits(); len(e) != 0 {
		t.Errorf("a worker asked to go was reported as a failure: %+v", e)
	}
}

// BenchmarkRun measures what a run pays to cross to a worker: an identity model over a batch
// of 32×1024 FP32 (128 KiB in, 128 KiB out, the MLP benchmark's batch) run in-process and
// through a worker. The difference is the worker path's fixed cost per batch. BENCH_ROWS sets
// the rows (BENCH_ROWS=1: a request's round trip at concurrency 1).
//
//	go test -run '^$' -bench Run -benchtime 2000x ./engine/worker/
func BenchmarkRun(b *testing.B) {
	model, err := testmodels.Identity(tensor.FP32)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "identity.onnx")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		b.Fatal(err)
	}
	rows := 32
	if r := os.Getenv("BENCH_ROWS"); r != "" {
		rows, _ = strconv.Atoi(r)
	}
	x := make([]float32, rows*1024)
	in := []tensor.Tensor{tensor.FromFloat32s("in", []int64{int64(rows), 1024}, x)}
	run := func(b *testing.B, s engine.Session) {
		for b.Loop() {
			if _, err := s.Run(context.Background(), in, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("in-process", func(b *testing.B) {
		rt, err := ort.New(ort.RuntimeOptions{LibraryPath: libPath}, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer rt.Close()
		s, err := rt.Open(context.Background(), path, engine.Options{IntraOpThreads: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("worker", func(b *testing.B) {
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		iso := &worker.Isolator{Path: exe, Args: []string{"-test.run=^$"}, Env: append(os.Environ(), workerEnv+"=1")}
		h, err := iso.Start(context.Background(), engine.HostOptions{Name: "bench/1", MemoryLimit: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		s, err := h.Open(context.Background(), path, engine.Options{IntraOpThreads: 1})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
}

// children lists this process's live child processes (workers and spares), zombies left out.
func children(t *testing.T) []int {
	t.Helper()
	var out []int
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(field)
			if err != nil {
				continue
			}
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err == nil && !strings.Contains(string(st), ") Z ") {
				out = append(out, pid)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestSpareWorkerIsTakenWithItsLimit: a worker started ahead becomes the next version's, with
// that version's memory limit in force, and another spare starts behind it; Close ends it.
func TestSpareWorkerIsTakenWithItsLimit(t *testing.T) {
	before := children(t)
	iso := isolator(t)
	iso.KeepSpare = time.Minute
	iso.Prestart()
	var spare int
	testutil.WaitFor(t, 10*time.Second, "a spare worker", func() bool {
		for _, pid := range children(t) {
			if !slices.Contains(before, pid) {
				spare = pid
				return true
			}
		}
		return false
	})
	h, rec := startHost(t, iso, engine.HostOptions{MemoryLimit: 512 << 20})
	if got := h.Status().PID; got != spare {
		t.Fatalf("the version's worker is pid %d, want the spare %d", got, spare)
	}
	var next int
	testutil.WaitFor(t, 10*time.Second, "the next spare", func() bool {
		for _, pid := range children(t) {
			if !slices.Contains(before, pid) && pid != spare {
				next = pid
				return true
			}
		}
		return false
	})
	s := openMLP(t, h)
	checkMLP(t, s, 2)
	err := runFault(context.Background(), s, faultBalloon)
	if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "out of memory at the 512.0 MiB limit") {
		t.Fatalf("Run that balloons in a spare taken with a 512 MiB limit: %v", err)
	}
	if e := rec.exitsEventually(t, 1); len(e) != 1 || e[0].Class != engine.ExitOOM {
		t.Errorf("exit events %+v", e)
	}
	checkMLP(t, s, 1) // the restart took the next spare, or a new worker
	iso.Close()
	testutil.WaitFor(t, 10*time.Second, "the spare to exit after Close", func() bool {
		return !slices.Contains(children(t), next) || h.Status().PID == next
	})
}

// TestSpareWorkerExitsUnused: a spare nobody takes exits after KeepSpare.
func TestSpareWorkerExitsUnused(t *testing.T) {
	before := children(t)
	iso := isolator(t)
	iso.KeepSpare = 50 * time.Millisecond
	t.Cleanup(iso.Close)
	iso.Prestart()
	started := false
	testutil.WaitFor(t, 20*time.Second, "a spare to start and exit unused", func() bool {
		extra := 0
		for _, pid := range children(t) {
			if !slices.Contains(before, pid) {
				extra++
			}
		}
		started = started || extra > 0
		return started && extra == 0
	})
}
