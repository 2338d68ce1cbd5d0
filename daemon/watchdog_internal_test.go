package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// notes collects sd_notify lines.
type notes struct {
	mu    sync.Mutex
	lines []string
}

func (n *notes) notify(s string) {
	n.mu.Lock()
	n.lines = append(n.lines, strings.Split(s, "\n")...)
	n.mu.Unlock()
}

// take returns the lines since the last take.
func (n *notes) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.lines
	n.lines = nil
	return out
}

func count(lines []string, prefix string) int {
	c := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			c++
		}
	}
	return c
}

func TestHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			n       notes
			mu      sync.Mutex
			verdict error
			block   chan struct{} // non-nil: the probe blocks until it is closed
			probes  int
		)
		stop := make(chan struct{})
		hb := &heartbeat{period: 10 * time.Second, notify: n.notify, stop: stop, log: discard,
			probe: func(time.Time) error {
				mu.Lock()
				probes++
				b, v := block, verdict
				mu.Unlock()
				if b != nil {
					<-b
				}
				return v
			}}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); hb.run(ctx) }()

		// Healthy: a ping at once and one per period.
		time.Sleep(35 * time.Second)
		synctest.Wait()
		if got := n.take(); count(got, "WATCHDOG=1") != 4 {
			t.Fatalf("healthy for 35s at 10s: %q", got)
		}

		// A failing check withholds the pings and says why, once.
		mu.Lock()
		verdict = errors.New("queue stuck")
		mu.Unlock()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		got := n.take()
		if count(got, "WATCHDOG=1") != 0 || count(got, "STATUS=unhealthy, watchdog heartbeat withheld: queue stuck") != 1 {
			t.Fatalf("while unhealthy: %q", got)
		}

		// Recovery resumes them.
		mu.Lock()
		verdict = nil
		mu.Unlock()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := n.take(); count(got, "STATUS=healthy again") != 1 || count(got, "WATCHDOG=1") != 1 {
			t.Fatalf("after recovery: %q", got)
		}

		// A check that does not return withholds the pings too, and no second check starts
		// while it hangs.
		release := make(chan struct{})
		mu.Lock()
		block, probes = release, 0
		mu.Unlock()
		time.Sleep(40 * time.Second)
		synctest.Wait()
		got = n.take()
		if count(got, "WATCHDOG=1") != 0 || count(got, "STATUS=unhealthy, watchdog heartbeat withheld: health check has not returned") != 1 {
			t.Fatalf("while the check hangs: %q", got)
		}
		mu.Lock()
		if probes != 1 {
			t.Errorf("%d checks started while the first hung; want 1", probes)
		}
		block = nil
		mu.Unlock()
		close(release)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := n.take(); count(got, "WATCHDOG=1") != 1 {
			t.Fatalf("after the check returned: %q", got)
		}

		// The debug hook stops the heartbeat for good.
		close(stop)
		synctest.Wait()
		time.Sleep(60 * time.Second)
		synctest.Wait()
		got = n.take()
		if count(got, "WATCHDOG=1") != 0 || count(got, "STATUS=unhealthy, watchdog heartbeat withheld: heartbeat stopped on request") != 1 {
			t.Fatalf("after the debug hook: %q", got)
		}

		cancel()
		<-done
	})
}

func TestExtendTimeoutWhile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n notes
		d := &Daemon{opts: Options{Notify: func(s string) error { n.notify(s); return nil }}, log: discard}
		stop := d.extendTimeoutWhile("loading models")
		time.Sleep(25 * time.Second)
		synctest.Wait()
		got := n.take()
		if count(got, "EXTEND_TIMEOUT_USEC=30000000") != 2 || count(got, "STATUS=loading models (20s so far)") != 1 {
			t.Fatalf("after 25s: %q", got)
		}
		stop()
		stop() // repeat-safe
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := n.take(); len(got) != 0 {
			t.Fatalf("after stop: %q", got)
		}
	})
}

// fakeRepo and fakeStats stand in for the repository and the scheduler.
type fakeRepo struct{ versions map[string]*models.Version }

func (r fakeRepo) Index() []models.IndexEntry {
	var out []models.IndexEntry
	for key := range r.versions {
		name, version, _ := strings.Cut(key, "/")
		out = append(out, models.IndexEntry{Name: name, Version: version, State: models.StateReady})
	}
	return out
}

func (r fakeRepo) Resolve(name, version string) (*models.Version, error) {
	v, ok := r.versions[name+"/"+version]
	if !ok {
		return nil, models.ErrModelNotFound
	}
	return v, nil
}

type fakeStats map[scheduler.Target]scheduler.Snapshot

func (f fakeStats) Stats(t scheduler.Target) scheduler.Snapshot { return f[t] }

func TestProgressProbe(t *testing.T) {
	a, b := &models.Version{}, &models.Version{}
	repo := fakeRepo{versions: map[string]*models.Version{"a/1": a, "b/2": b}}
	stats := fakeStats{}
	set := func(v *models.Version, pending int, executions uint64) {
		stats[v] = scheduler.Snapshot{Pending: pending, ExecutionCount: executions}
	}
	p := newProgressProbe(repo, stats, 30*time.Second)
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	steps := []struct {
		at      time.Duration
		a, b    [2]int // pending, executions
		wantErr string
	}{
		{0, [2]int{0, 0}, [2]int{0, 0}, ""},                // idle
		{10 * time.Second, [2]int{3, 5}, [2]int{0, 0}, ""}, // a has a queue: watch it
		{30 * time.Second, [2]int{3, 9}, [2]int{0, 0}, ""}, // a made progress
		{59 * time.Second, [2]int{3, 9}, [2]int{0, 0}, ""}, // 29s without: not yet
		{60 * time.Second, [2]int{4, 9}, [2]int{0, 0}, "model a version 1: 4 requests waiting and no batch finished for 30s"},
		{61 * time.Second, [2]int{4, 9}, [2]int{2, 1}, "model a version 1"}, // still stalled; b just started
		{62 * time.Second, [2]int{0, 9}, [2]int{2, 1}, ""},                  // a's queue emptied
		{92 * time.Second, [2]int{1, 9}, [2]int{2, 1}, "model b version 2"}, // a starts over; b stalled 31s
	}
	for _, s := range steps {
		set(a, s.a[0], uint64(s.a[1]))
		set(b, s.b[0], uint64(s.b[1]))
		err := p.check(at(s.at))
		switch {
		case s.wantErr == "" && err != nil:
			t.Errorf("at %s: %v", s.at, err)
		case s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)):
			t.Errorf("at %s: %v, want %q", s.at, err, s.wantErr)
		}
		if s.at == 92*time.Second && err != nil && strings.Contains(err.Error(), "model a") {
			t.Errorf("at %s: a was restarted from zero and must not count as stalled: %v", s.at, err)
		}
	}
}
