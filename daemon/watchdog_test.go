package daemon_test

import (
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
)

// watch reads the daemon's sd_notify lines until one satisfies pred or the deadline passes, and
// returns how many WATCHDOG=1 pings it read on the way.
func (h *harness) watch(t *testing.T, within time.Duration, what string, pred func(line string) bool) (pings int) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case s := <-h.states:
			if s == "WATCHDOG=1" {
				pings++
			}
			if pred(s) {
				return pings
			}
		case <-deadline:
			t.Fatalf("no %s within %s (%d pings meanwhile)", what, within, pings)
		}
	}
}

// pingsDuring counts the WATCHDOG=1 pings sent over d.
func (h *harness) pingsDuring(d time.Duration) (pings int) {
	end := time.After(d)
	for {
		select {
		case s := <-h.states:
			if s == "WATCHDOG=1" {
				pings++
			}
		case <-end:
			return pings
		}
	}
}

const watchdog = 600 * time.Millisecond // pings every 200ms

func startWatched(t *testing.T, opts daemon.Options) *harness {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Models.Repository = dir
	cfg.Server.ShutdownTimeout = 5 * time.Second
	// one instance, as written: a request stuck in it holds up the next (no calibration,
	// which could give the model an instance per core)
	cfg.Scheduler.CalibrationTime = 0
	opts.Watchdog = watchdog
	h, _ := launch(t, dir, &cfg, opts)
	return h
}

func isPing(s string) bool { return s == "WATCHDOG=1" }

// A scheduler that stops finishing batches while requests wait is what the watchdog is for:
// the pings stop, and they resume once it moves again.
func TestWatchdogWithheldWhileSchedulerHangs(t *testing.T) {
	h := startWatched(t, daemon.Options{})
	h.watch(t, 10*time.Second, "first ping", isPing)
	h.watch(t, 10*time.Second, "second ping", isPing)

	gate := h.rt.Hold()
	defer gate.Release()
	results := make(chan int, 2)
	go func() { code, _, _ := post(h.url); results <- code }()
	<-gate.Entered() // one request is stuck inside the engine
	go func() { code, _, _ := post(h.url); results <- code }()
	// The second waits behind it; once nothing finishes for a watchdog period, the daemon is
	// unhealthy.
	h.watch(t, 10*time.Second, "STATUS=unhealthy", func(s string) bool {
		return strings.HasPrefix(s, "STATUS=unhealthy") && strings.Contains(s, "no batch finished")
	})
	if n := h.pingsDuring(3 * watchdog); n != 0 {
		t.Fatalf("%d WATCHDOG=1 pings while the scheduler hangs", n)
	}

	gate.Release()
	for range 2 {
		if code := <-results; code != 200 {
			t.Errorf("request after the hang: %d", code)
		}
	}
	h.watch(t, 10*time.Second, "STATUS=healthy again", func(s string) bool { return s == "STATUS=healthy again" })
	h.watch(t, 10*time.Second, "a ping after recovery", isPing)
}

// An idle daemon is healthy: no waiting requests means nothing can be stalled.
func TestWatchdogPingsWhileIdle(t *testing.T) {
	h := startWatched(t, daemon.Options{})
	if n := h.pingsDuring(3 * watchdog); n < 3 {
		t.Fatalf("%d pings in %s with a %s watchdog; want at least 3", n, 3*watchdog, watchdog)
	}
}

// The debug hook stops the heartbeat for good, as the systemd suite needs to see the watchdog
// restart the daemon.
func TestStopHeartbeatHook(t *testing.T) {
	stop := make(chan struct{})
	h := startWatched(t, daemon.Options{StopHeartbeat: stop})
	h.watch(t, 10*time.Second, "first ping", isPing)
	close(stop)
	h.watch(t, 10*time.Second, "STATUS=unhealthy (debug hook)", func(s string) bool {
		return strings.HasPrefix(s, "STATUS=unhealthy") && strings.Contains(s, "debug hook")
	})
	if n := h.pingsDuring(3 * watchdog); n != 0 {
		t.Fatalf("%d pings after the heartbeat was stopped", n)
	}
	if code, _, err := post(h.url); err != nil || code != 200 {
		t.Fatalf("the daemon should still serve (only its heartbeat stopped): %d %v", code, err)
	}
}

// Without a watchdog there is no heartbeat at all.
func TestNoWatchdogNoPings(t *testing.T) {
	h := start(t, 5*time.Second)
	if n := h.pingsDuring(500 * time.Millisecond); n != 0 {
		t.Fatalf("%d pings without a watchdog", n)
	}
}
