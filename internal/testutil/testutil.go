// Package testutil holds the small helpers that tests across inferd share: files, and waiting
// for a condition with a deadline. It is imported only by tests.
package testutil

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ModuleRoot walks up from the working directory to the directory holding go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// WriteFile writes data at dir/rel, creating the directories on the way.
func WriteFile(t testing.TB, dir, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Pace is how long Eventually waits between two checks: short against the deadlines tests set,
// long enough that a check doing HTTP round trips does not load the machine.
const Pace = 20 * time.Millisecond

// Eventually calls check until it returns "" (the condition holds), waiting Pace between calls,
// and returns how long that took; when timeout passes first, it fails t with check's last
// complaint. check runs on the calling goroutine, so it may fail t itself.
func Eventually(t testing.TB, timeout time.Duration, check func() string) time.Duration {
	t.Helper()
	start := time.Now()
	pace := time.NewTicker(Pace)
	defer pace.Stop()
	for {
		complaint := check()
		if complaint == "" {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("after %s: %s", timeout, complaint)
		}
		<-pace.C
	}
}

// WaitFor is Eventually for a condition without a complaint of its own: it fails t with
// "what: not within timeout".
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, func() string {
		if cond() {
			return ""
		}
		return what + ": not yet"
	})
}
