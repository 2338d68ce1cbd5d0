package worker

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

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

// Exit codes of a worker that stopped on its own: the daemon reads them as a failure with
// the worker's last stderr line for the reason.
const (
	ExitSetup = 3 // could not set its limits or open the runtime
)

// Main runs a worker on ControlFD until the daemon closes it and returns its exit code; open
// opens the runtime once the limits are in place, and its close function runs at the end.
func Main(ctx context.Context, memoryLimit int64, open func() (engine.Runtime, func() error, error), log *slog.Logger) int {
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
