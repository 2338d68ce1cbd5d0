package testutil

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	calls := 0
	took := Eventually(t, time.Minute, func() string {
		calls++
		if calls < 3 {
			return "not yet"
		}
		return ""
	})
	if calls != 3 || took < 2*Pace {
		t.Errorf("%d calls in %s, want 3 calls paced %s apart", calls, took, Pace)
	}
}

// fatal is a testing.TB whose Fatalf records its message and ends the goroutine, as t's does.
type fatal struct {
	testing.TB
	msg string
}

func (f *fatal) Helper() {}

func (f *fatal) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventuallyFailsWithTheLastComplaint(t *testing.T) {
	f := &fatal{TB: t}
	done := make(chan struct{})
	calls := 0
	go func() {
		defer close(done)
		Eventually(f, 3*Pace, func() string { calls++; return fmt.Sprintf("complaint %d", calls) })
	}()
	<-done
	if want := fmt.Sprintf("after %s: complaint %d", 3*Pace, calls); calls < 2 || f.msg != want {
		t.Errorf("after %d calls: %q, want %q", calls, f.msg, want)
	}
	f.msg = ""
	done = make(chan struct{})
	go func() { defer close(done); WaitFor(f, Pace, "the thing", func() bool { return false }) }()
	<-done
	if want := fmt.Sprintf("after %s: the thing: not yet", Pace); f.msg != want {
		t.Errorf("WaitFor: %q, want %q", f.msg, want)
	}
}
