package worker

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/inferd/inferd/engine"
)

// A process that dies of SIGSEGV is a crash, unless its peak resident memory came near its
// memory limit: then it is an allocation that failed and was not checked (the Go runtime's
// collector does that at RLIMIT_DATA), reported as out of memory with the signal and the peak.
// The wait status and the peak are a real child's.
func TestCrashNearTheLimitIsOutOfMemory(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "kill -SEGV $$")
	err := cmd.Run()
	st := cmd.ProcessState
	if st == nil {
		t.Fatal(err)
	}
	peak := peakRSS(st)
	if peak == 0 {
		t.Fatal("no peak resident memory in the child's rusage")
	}
	far := classify(st, err, "", nil, nil, int64(100*peak))
	if far.class != engine.ExitSignal || far.reason != "killed by SIGSEGV" {
		t.Errorf("far from the limit: %+v, want a crash", far)
	}
	near := classify(st, err, "", nil, nil, int64(peak))
	if near.class != engine.ExitOOM || !strings.HasPrefix(near.reason, "out of memory at the") ||
		!strings.Contains(near.reason, "killed by SIGSEGV with") || !strings.Contains(near.reason, "resident at its peak") {
		t.Errorf("at the limit: %+v, want out of memory naming the signal and the peak", near)
	}
	if none := classify(st, err, "", nil, nil, 0); none.class != engine.ExitSignal {
		t.Errorf("without a limit: %+v, want a crash", none)
	}

	// the Go runtime's report of a signal in native code (it prints it and exits 2) reads the
	// same
	cmd = exec.Command("/bin/sh", "-c", "exit 2")
	err = cmd.Run()
	st, heads := cmd.ProcessState, []string{"SIGSEGV: segmentation violation"}
	if c := classify(st, err, "", nil, heads, int64(100*peakRSS(st))); c.class != engine.ExitSignal || c.reason != "killed by SIGSEGV (in native code)" {
		t.Errorf("native crash far from the limit: %+v", c)
	}
	if c := classify(st, err, "", nil, heads, int64(peakRSS(st))); c.class != engine.ExitOOM || !strings.Contains(c.reason, "killed by SIGSEGV with") {
		t.Errorf("native crash at the limit: %+v", c)
	}
}
