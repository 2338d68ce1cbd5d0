package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/engine"
)

// These tests drive the real host (Isolator.Start, supervise, restart, Close) and the real
// session (open, reopen, Run with its cancel and kill) against fake workers (fake_internal_test.go)
// in a synctest bubble, so that start timeouts, the failure window and a run's grace period pass
// in fake time. worker_test.go covers the same paths with real processes.

type eventLog struct {
	mu     sync.Mutex
	events []engine.HostEvent
}

func (l *eventLog) add(e engine.HostEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []engine.HostEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]engine.HostEvent(nil), l.events...)
}

// brief renders the events for comparison: "started 100", "exited 100 signal", "failed 0".
func (l *eventLog) brief() []string {
	var out []string
	for _, e := range l.all() {
		switch e.Kind {
		case engine.WorkerStarted:
			out = append(out, fmt.Sprintf("started %d", e.PID))
		case engine.WorkerExited:
			out = append(out, fmt.Sprintf("exited %d %s", e.PID, e.Class))
		case engine.HostFailed:
			out = append(out, fmt.Sprintf("failed %d", e.PID))
		}
	}
	return out
}

func (l *eventLog) check(t *testing.T, want ...string) {
	t.Helper()
	if got := l.brief(); !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// startFake starts a host on fake workers that follow plans, and closes it when the test ends,
// checking that no worker outlives it.
func startFake(t *testing.T, iso *Isolator, plans ...workerPlan) (*host, *fakeLauncher, *eventLog) {
	t.Helper()
	l := &fakeLauncher{plans: plans}
	iso.launch = l.launch
	iso.Log = slog.New(slog.NewTextHandler(t.Output(), nil))
	ev := &eventLog{}
	eh, err := iso.Start(context.Background(), engine.HostOptions{Name: "fake/1", OnEvent: ev.add})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	h := eh.(*host)
	t.Cleanup(func() { closeHost(t, h, l) })
	return h, l, ev
}

func closeHost(t *testing.T, h *host, l *fakeLauncher) {
	t.Helper()
	if err := h.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if alive := l.alive(); len(alive) > 0 {
		t.Errorf("workers %v outlived Close", alive)
	}
}

func openFake(t *testing.T, h *host, path string) engine.Session {
	t.Helper()
	s, err := h.Open(context.Background(), path, engine.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func run(ctx context.Context, s engine.Session) error {
	_, err := s.Run(ctx, nil, nil)
	return err
}

// sleep lets d pass in fake time, then lets everything settle.
func sleep(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestSupervisorRestartsACrashedWorker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, l, ev := startFake(t, &Isolator{}, workerPlan{run: runCrashes})
		s := openFake(t, h, "a.onnx")
		openFake(t, h, "b.onnx")
		sleep(time.Minute)
		err := run(context.Background(), s)
		if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "killed by SIGSEGV") {
			t.Fatalf("Run on a worker that crashes: %v, want ErrWorker naming SIGSEGV", err)
		}
		synctest.Wait()
		st := h.Status()
		if st.PID != 101 || st.Restarts != 1 || st.LastExit != "killed by SIGSEGV" {
			t.Errorf("status after a crash: %+v, want worker 101, 1 restart, the crash as the last exit", st)
		}
		got := l.worker(1).openedPaths()
		slices.Sort(got) // in the host's map order
		if !slices.Equal(got, []string{"a.onnx", "b.onnx"}) {
			t.Fatalf("the new worker opened %q, want both sessions again", got) // a Run would wait for them forever
		}
		if err := run(context.Background(), s); err != nil {
			t.Fatalf("Run after the restart: %v", err)
		}
		if n := l.worker(1).runCount(); n != 1 {
			t.Errorf("the new worker ran %d runs, want 1", n)
		}
		ev.check(t, "started 100", "exited 100 signal", "started 101")
		if e := ev.all()[1]; e.Reason != "killed by SIGSEGV" || e.Uptime != time.Minute {
			t.Errorf("exit event %+v, want the crash after 1m", e)
		}
	})
}

func TestSupervisorFailureWindow(t *testing.T) {
	cases := []struct {
		name   string
		gaps   []time.Duration // before each crash
		giveUp bool
	}{
		{"three crashes within five minutes", []time.Duration{0, 2 * time.Minute, 2*time.Minute + 59*time.Second}, true},
		{"three crashes in a burst", []time.Duration{time.Hour, time.Second, time.Second}, true},
		{"three crashes over exactly five minutes", []time.Duration{0, 2*time.Minute + 30*time.Second, 2*time.Minute + 30*time.Second}, false},
		{"three crashes spread over six minutes", []time.Duration{0, 3 * time.Minute, 3 * time.Minute}, false},
		{"five crashes three minutes apart", []time.Duration{0, 3 * time.Minute, 3 * time.Minute, 3 * time.Minute, 3 * time.Minute}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, l, ev := startFake(t, &Isolator{})
				s := openFake(t, h, "a.onnx")
				var want []string
				for i, gap := range c.gaps {
					sleep(gap)
					want = append(want, fmt.Sprintf("started %d", 100+i), fmt.Sprintf("exited %d signal", 100+i))
					l.worker(i).crash()
					synctest.Wait()
				}
				crashes := len(c.gaps)
				select {
				case <-h.Failed():
					if !c.giveUp {
						t.Fatalf("gave up: %v", h.Err())
					}
				default:
					if c.giveUp {
						t.Fatal("did not give up")
					}
				}
				st := h.Status()
				if !c.giveUp {
					want = append(want, fmt.Sprintf("started %d", 100+crashes))
					ev.check(t, want...)
					if st.Restarts != crashes || st.PID != 100+crashes || h.Err() != nil {
						t.Errorf("status %+v, Err %v, want %d restarts and worker %d", st, h.Err(), crashes, 100+crashes)
					}
					if err := run(context.Background(), s); err != nil {
						t.Errorf("Run: %v", err)
					}
					return
				}
				want = append(want, "failed 102") // the last exit comes before the give-up, and no start after it
				ev.check(t, want...)
				err := h.Err()
				if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), "3 failures within 5m0s, the last: killed by SIGSEGV") {
					t.Errorf("Err = %v, want the count, the window and the last reason", err)
				}
				if e := ev.all(); e[len(e)-1].Reason != err.Error() {
					t.Errorf("give-up event %+v, want Err as its reason", e[len(e)-1])
				}
				if st.PID != 0 || st.Restarts != 2 || l.started() != 3 {
					t.Errorf("status %+v after %d starts, want no worker, 2 restarts, no 4th start", st, l.started())
				}
				if err := run(context.Background(), s); !errors.Is(err, engine.ErrWorker) {
					t.Errorf("Run on a host that gave up: %v, want ErrWorker", err)
				}
			})
		})
	}
}

func TestSupervisorStart(t *testing.T) {
	hang := workerPlan{hangs: true}
	cases := []struct {
		name     string
		plans    []workerPlan
		deadline time.Duration // of Start's ctx; 0 for none
		took     time.Duration
		started  int    // workers started (greeted or not)
		err      string // in Start's error; "" for success
	}{
		{"a worker that greets at once", nil, 0, 0, 1, ""},
		{"a slow start that greets just before StartTimeout", []workerPlan{{greetAfter: 10*time.Second - time.Millisecond}}, 0, 10*time.Second - time.Millisecond, 1, ""},
		{"a first start that hangs is tried once more", []workerPlan{hang, {greetAfter: time.Second}}, 0, 11 * time.Second, 2, ""},
		{"a second hang fails Start", []workerPlan{hang, hang}, 0, 20 * time.Second, 2, "did not start: worker start exceeded 10s"},
		{"a slow start after a hang fails Start", []workerPlan{hang, {greetAfter: 11 * time.Second}}, 0, 20 * time.Second, 2, "did not start: worker start exceeded 10s"},
		{"the caller's deadline is not tried again", []workerPlan{hang}, 3 * time.Second, 3 * time.Second, 1, "did not start: context deadline exceeded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := &fakeLauncher{plans: c.plans}
				ev := &eventLog{}
				iso := &Isolator{launch: l.launch, Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
				ctx := context.Background()
				if c.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, c.deadline)
					defer cancel()
				}
				start := time.Now()
				eh, err := iso.Start(ctx, engine.HostOptions{Name: "fake/1", OnEvent: ev.add})
				if took := time.Since(start); took != c.took {
					t.Errorf("Start took %s, want %s", took, c.took)
				}
				if n := l.started(); n != c.started {
					t.Errorf("%d workers started, want %d", n, c.started)
				}
				if c.err != "" {
					if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), c.err) {
						t.Errorf("Start: %v, want ErrWorker with %q", err, c.err)
					}
					if alive := l.alive(); len(alive) > 0 {
						t.Errorf("workers %v left after a failed start", alive)
					}
					ev.check(t)
					return
				}
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				h := eh.(*host)
				defer closeHost(t, h, l)
				last := 100 + c.started - 1
				if pid := h.Status().PID; pid != last {
					t.Errorf("worker %d, want %d", pid, last)
				}
				ev.check(t, fmt.Sprintf("started %d", last))
				if c.started > 1 {
					if e := l.worker(0).why(); !strings.HasPrefix(e.reason, "start: worker start exceeded 10s") {
						t.Errorf("the abandoned worker ended with %+v", e)
					}
				}
			})
		})
	}
}

func TestSupervisorRestartThatHangsCountsAsAFailure(t *testing.T) {
	t.Run("then a worker starts", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, l, ev := startFake(t, &Isolator{}, workerPlan{}, workerPlan{hangs: true})
			openFake(t, h, "a.onnx")
			l.worker(0).crash()
			synctest.Wait()
			if st := h.Status(); st.PID != 0 || l.started() != 2 {
				t.Fatalf("status %+v with %d starts while the restart hangs", st, l.started())
			}
			sleep(10 * time.Second)
			st := h.Status()
			if st.PID != 102 || st.Restarts != 1 || !strings.Contains(st.LastExit, "worker start exceeded 10s") {
				t.Errorf("status %+v, want worker 102, 1 restart, the hung start as the last exit", st)
			}
			if got := l.worker(2).openedPaths(); !slices.Equal(got, []string{"a.onnx"}) {
				t.Errorf("the new worker opened %q", got)
			}
			ev.check(t, "started 100", "exited 100 signal", "started 102")
		})
	})
	t.Run("two that hang give up", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, l, ev := startFake(t, &Isolator{}, workerPlan{}, workerPlan{hangs: true}, workerPlan{hangs: true})
			l.worker(0).crash()
			sleep(20 * time.Second)
			select {
			case <-h.Failed():
			default:
				t.Fatalf("did not give up after a crash and two hung restarts: %+v", h.Status())
			}
			if err := h.Err(); !strings.Contains(err.Error(), "3 failures within 5m0s, the last: ") || !strings.Contains(err.Error(), "worker start exceeded 10s") {
				t.Errorf("Err = %v", err)
			}
			if l.started() != 3 {
				t.Errorf("%d starts, want 3", l.started())
			}
			ev.check(t, "started 100", "exited 100 signal", "failed 0")
		})
	})
}

func TestSupervisorCloseDuringARestart(t *testing.T) {
	cases := []struct {
		name string
		next workerPlan // the worker the restart starts
	}{
		{"while the new worker starts", workerPlan{hangs: true}},
		{"while the sessions open again", workerPlan{openHangs: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := &fakeLauncher{plans: []workerPlan{{}, c.next}}
				ev := &eventLog{}
				iso := &Isolator{launch: l.launch, Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
				eh, err := iso.Start(context.Background(), engine.HostOptions{Name: "fake/1", OnEvent: ev.add})
				if err != nil {
					t.Fatal(err)
				}
				h := eh.(*host)
				s := openFake(t, h, "a.onnx")
				l.worker(0).crash()
				synctest.Wait()
				if l.started() != 2 || len(l.alive()) != 1 {
					t.Fatalf("%d starts, %v alive: the restart is not under way", l.started(), l.alive())
				}
				start := time.Now()
				closeHost(t, h, l)
				if took := time.Since(start); took != 0 {
					t.Errorf("Close took %s", took)
				}
				select {
				case <-h.Failed():
					t.Errorf("a host closed during a restart failed: %v", h.Err())
				default:
				}
				if st := h.Status(); st.PID != 0 {
					t.Errorf("status after Close: %+v", st)
				}
				if err := run(context.Background(), s); !errors.Is(err, engine.ErrClosed) {
					t.Errorf("Run after Close: %v, want ErrClosed", err)
				}
				synctest.Wait()
				ev.check(t, "started 100", "exited 100 signal")
			})
		})
	}
}

func TestSupervisorRunDeadline(t *testing.T) {
	cases := []struct {
		name   string
		grace  time.Duration // 0: the default, 2s
		plan   workerPlan
		took   time.Duration // by Run
		killed string        // the exit reason, "" if the worker must live
	}{
		{"a worker that ignores the cancel is killed after Grace", 0, workerPlan{run: runIgnoresCancel}, 3 * time.Second,
			"run did not stop within 2s of its cancellation (every request of the batch left)"},
		{"with a shorter Grace", 300 * time.Millisecond, workerPlan{run: runIgnoresCancel}, 1300 * time.Millisecond,
			"run did not stop within 300ms of its cancellation (every request of the batch left)"},
		{"a worker that stops at once is not killed", 0, workerPlan{run: runStopsOnCancel}, time.Second, ""},
		{"a worker that stops just inside Grace is not killed", 0, workerPlan{run: runStopsOnCancel, stopAfter: 2*time.Second - time.Millisecond}, 3*time.Second - time.Millisecond, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, l, ev := startFake(t, &Isolator{Grace: c.grace}, c.plan)
				s := openFake(t, h, "a.onnx")
				w := l.worker(0)
				cause := errors.New("every request of the batch left")
				ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, cause)
				defer cancel()
				start := time.Now()
				err := run(ctx, s)
				if took := time.Since(start); took != c.took {
					t.Errorf("Run took %s, want %s", took, c.took)
				}
				if got := w.cancelFrames(); len(got) != 1 || got[0].seq != 1 || got[0].session != 1 || got[0].at.Sub(start) != time.Second {
					t.Errorf("cancel frames %+v, want one for run 1 of session 1 at its deadline", got)
				}
				sleep(time.Minute) // long past any grace period
				if c.killed == "" {
					if !errors.Is(err, engine.ErrRun) || errors.Is(err, engine.ErrWorker) || !errors.Is(err, cause) {
						t.Errorf("Run: %v, want ErrRun with the deadline's cause", err)
					}
					if exited(w) {
						t.Errorf("a worker that stopped its run in time ended: %+v", w.why())
					}
					ev.check(t, "started 100")
					if err := s.Close(); err != nil || exited(w) {
						t.Errorf("Close: %v; the worker must still answer", err)
					}
					return
				}
				if !errors.Is(err, engine.ErrWorker) || !strings.Contains(err.Error(), c.killed) {
					t.Errorf("Run: %v, want ErrWorker with %q", err, c.killed)
				}
				if e := w.why(); e.reason != c.killed || e.class != engine.ExitDeadline {
					t.Errorf("the worker ended with %+v", e)
				}
				ev.check(t, "started 100", "exited 100 deadline", "started 101")
				if st := h.Status(); st.Restarts != 1 || st.PID != 101 {
					t.Errorf("status %+v", st)
				}
			})
		})
	}
}
