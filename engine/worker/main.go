package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/engine"
)

// ControlFD is the descriptor a worker finds its control socket on (the first of ExtraFiles).
const ControlFD = 3

// Limit bounds the worker's own memory before it opens anything: RLIMIT_DATA (what malloc and
// anonymous private mappings may take, which is where ONNX Runtime's arenas live) and the Go
// runtime's soft limit. Allocations past it fail inside the runtime, which reports them, or
// end the worker, which the daemon reports as out of memory; the daemon is not touched.
func Limit(bytes int64) error {
	if bytes <= 0 {
		return nil
	}
	lim := unix.Rlimit{Cur: uint64(bytes), Max: uint64(bytes)}
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &lim); err != nil {
		return fmt.Errorf("worker: setting RLIMIT_DATA to %d bytes: %w", bytes, err)
	}
	debug.SetMemoryLimit(bytes / 2)
	return nil
}

// OOMScoreAdj is the oom_score_adj a worker gives itself at start (the daemon keeps its own,
// the unit's): when memory runs out, under a cgroup's limit or the machine's, the kernel's OOM
// killer then takes a worker, the one holding the most memory, before the daemon, so that an
// OOM costs one model version and never the node. Raising its own score needs no privilege.
const OOMScoreAdj = 500

// preferAsOOMVictim raises the oom_score_adj in file (/proc/self/oom_score_adj) to OOMScoreAdj;
// a score already as high (an operator's) is kept.
func preferAsOOMVictim(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("worker: reading oom_score_adj: %w", err)
	}
	now, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("worker: oom_score_adj %q: %w", b, err)
	}
	if now >= OOMScoreAdj {
		return nil
	}
	if err := os.WriteFile(file, []byte(strconv.Itoa(OOMScoreAdj)), 0); err != nil {
		return fmt.Errorf("worker: raising oom_score_adj from %d to %d: %w", now, OOMScoreAdj, err)
	}
	return nil
}

// Exit codes of a worker that stopped on its own: the daemon reads them as a failure with
// the worker's last stderr line for the reason.
const (
	ExitSetup = 3 // could not set its limits or open the runtime
)

// Main runs a worker on ControlFD until the daemon closes it and returns its exit code; open
// opens the runtime once the worker has made itself the OOM killer's first choice
// (OOMScoreAdj) and set its limits, and its close function runs at the end.
func Main(ctx context.Context, memoryLimit int64, open func() (engine.Runtime, func() error, error), log *slog.Logger) int {
	if err := preferAsOOMVictim("/proc/self/oom_score_adj"); err != nil {
		// The worker is still bounded by its own limit; only the kernel's choice is left to it.
		log.Warn(err.Error())
	}
	if err := Limit(memoryLimit); err != nil {
		log.Error(err.Error())
		return ExitSetup
	}
	rt, closeRT, err := open()
	if err != nil {
		log.Error("worker: opening the runtime", "err", err)
		return ExitSetup
	}
	defer closeRT()
	if err := Serve(ctx, ControlFD, rt, log); err != nil {
		log.Error(err.Error())
		return 1
	}
	return 0
}
