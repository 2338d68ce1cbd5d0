package worker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/placement"
)

// classify says why a worker ended, from its wait status, the reason the daemon killed it (if
// it did), the last lines of its stderr and its memory limit.
func classify(st *os.ProcessState, waitErr error, killed string, stderr, heads []string, limit int64) exitInfo {
	if killed != "" {
		return exitInfo{reason: killed, class: engine.ExitDeadline}
	}
	if st == nil {
		return exitInfo{reason: fmt.Sprintf("could not be waited for: %v", waitErr), class: engine.ExitError}
	}
	ws, _ := st.Sys().(syscall.WaitStatus)
	oom := mentionsOutOfMemory(stderr)
	// A crash at the memory limit is taken for what it is: an allocation that failed and was
	// not checked (the Go runtime's own collector dereferences what it could not map, native
	// code too). The peak resident memory says whether the worker was there.
	peak := peakRSS(st)
	atLimit := limit > 0 && float64(peak) >= nearLimit*float64(limit)
	crashed := func(name string) exitInfo {
		return exitInfo{reason: fmt.Sprintf("%s (killed by %s with %s resident at its peak)", outOfMemory(limit), name, placement.Bytes(peak)), class: engine.ExitOOM}
	}
	switch {
	case ws.Signaled():
		sig := ws.Signal()
		name := unix.SignalName(sig)
		if name == "" {
			name = sig.String()
		}
		if oom {
			return exitInfo{reason: outOfMemory(limit) + " (then " + name + ")", class: engine.ExitOOM}
		}
		if atLimit && sig != syscall.SIGKILL {
			return crashed(name)
		}
		if sig == syscall.SIGKILL {
			// Not sent by the daemon: the kernel's OOM killer (a cgroup limit) or an operator.
			return exitInfo{reason: "killed by SIGKILL (not by inferd: the kernel's OOM killer or another process)", class: engine.ExitOOM}
		}
		return exitInfo{reason: "killed by " + name, class: engine.ExitSignal}
	case ws.Exited():
		if oom {
			return exitInfo{reason: outOfMemory(limit), class: engine.ExitOOM}
		}
		if sig := crashSignal(heads); sig != "" {
			// The Go runtime caught a signal raised in native code, printed its report and
			// exited 2: the process died of that signal in all but name.
			if atLimit {
				return crashed(sig)
			}
			return exitInfo{reason: "killed by " + sig + " (in native code)", class: engine.ExitSignal}
		}
		reason := fmt.Sprintf("exited with status %d", ws.ExitStatus())
		if last := lastLine(stderr); last != "" {
			reason += ": " + last
		}
		return exitInfo{reason: reason, class: engine.ExitError}
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		return exitInfo{reason: ee.Error(), class: engine.ExitError}
	}
	return exitInfo{reason: st.String(), class: engine.ExitError}
}

// nearLimit is the share of the memory limit that a worker's peak resident memory must reach
// for a crash to be taken for a failed allocation. The limit (RLIMIT_DATA) counts private
// writable mappings, resident or not (thread stacks, reserved arenas): a worker that runs out
// at 512 MiB has about 425 MiB resident at its peak (0.83 of it; TestOutOfMemoryIsReportedAsSuch),
// and one that crashes far from it 30 to 40 MiB.
const nearLimit = 0.7

// peakRSS is the most memory the worker had resident, in bytes; 0 when unknown.
func peakRSS(st *os.ProcessState) uint64 {
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 0 {
		return uint64(ru.Maxrss) << 10 // kilobytes on Linux
	}
	return 0
}

func outOfMemory(limit int64) string {
	if limit <= 0 {
		return "out of memory"
	}
	return fmt.Sprintf("out of memory at the %s limit (%d bytes)", placement.Bytes(uint64(limit)), limit)
}

// mentionsOutOfMemory reports whether the worker said, as it died, that an allocation failed:
// the Go runtime's "out of memory" fatal error, or a C++ std::bad_alloc that nothing caught.
// This reads the text of another program's last words, not an error value of ours: there is
// no other channel for them.
func mentionsOutOfMemory(lines []string) bool {
	for _, l := range lines {
		l = strings.ToLower(l)
		// A thread whose stack cannot be mapped under the worker's RLIMIT_DATA: EAGAIN, which
		// the Go runtime reports as it aborts ("pthread_create failed: Resource temporarily
		// unavailable").
		if strings.Contains(l, "pthread_create failed") && strings.Contains(l, "resource temporarily unavailable") {
			return true
		}
		if strings.Contains(l, "out of memory") || strings.Contains(l, "bad_alloc") ||
			strings.Contains(l, "cannot allocate memory") || strings.Contains(l, "failed to allocate") {
			return true
		}
	}
	return false
}

// crashSignal finds the signal a Go crash report names ("[signal SIGFPE: ...", "SIGSEGV: ...").
func crashSignal(heads []string) string {
	for _, h := range heads {
		h = strings.TrimPrefix(h, "[signal ")
		if name, _, ok := strings.Cut(h, ":"); ok && strings.HasPrefix(name, "SIG") && !strings.Contains(name, " ") {
			return name
		}
	}
	return ""
}

func lastLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" {
			return s
		}
	}
	return ""
}
