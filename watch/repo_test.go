package watch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/inferd/inferd/internal/testutil"
)

// The scenarios of a model repository, each run with fsnotify and with polling.
func TestRepoScenarios(t *testing.T) {
	t.Parallel()
	type scenario struct {
		name   string
		change func(t *testing.T, root string)
		want   []string
	}
	scenarios := []scenario{
		{"new model dir", func(t *testing.T, root string) {
			write(t, filepath.Join(root, "c", "1", "model.onnx"), "c-v1")
		}, []string{"c"}},
		{"new empty model dir", func(t *testing.T, root string) {
			must(t, os.Mkdir(filepath.Join(root, "d"), 0o755))
		}, []string{"d"}},
		{"new version dir", func(t *testing.T, root string) {
			write(t, filepath.Join(root, "a", "2", "model.onnx"), "a-v2")
		}, []string{"a"}},
		{"model.toml edit", func(t *testing.T, root string) {
			write(t, filepath.Join(root, "a", "model.toml"), "max_batch_size = 8\n")
		}, []string{"a"}},
		{"file deleted", func(t *testing.T, root string) {
			must(t, os.Remove(filepath.Join(root, "a", "1", "model.onnx")))
		}, []string{"a"}},
		{"version dir deleted", func(t *testing.T, root string) {
			must(t, os.RemoveAll(filepath.Join(root, "a", "1")))
		}, []string{"a"}},
		{"model dir deleted", func(t *testing.T, root string) {
			must(t, os.RemoveAll(filepath.Join(root, "b")))
		}, []string{"b"}},
		{"rename into place", func(t *testing.T, root string) {
			tmp := filepath.Join(root, "a", "2", "model.onnx.tmp")
			write(t, tmp, "a-v2 complete")
			must(t, os.Rename(tmp, filepath.Join(root, "a", "2", "model.onnx")))
		}, []string{"a"}},
		{"hidden staging dir renamed into place", func(t *testing.T, root string) {
			write(t, filepath.Join(root, ".c.tmp", "1", "model.onnx"), "c-v1")
			must(t, os.Rename(filepath.Join(root, ".c.tmp"), filepath.Join(root, "c")))
		}, []string{"c"}},
		{"chmod", func(t *testing.T, root string) {
			must(t, os.Chmod(filepath.Join(root, "b", "1", "model.onnx"), 0o600))
		}, []string{"b"}},
		{"many changes coalesce per model", func(t *testing.T, root string) {
			for i := range 20 {
				write(t, filepath.Join(root, "a", "2", fmt.Sprintf("part%d", i)), "x")
				write(t, filepath.Join(root, "b", "1", "model.onnx"), fmt.Sprintf("b-%d", i))
			}
			write(t, filepath.Join(root, "c", "1", "model.onnx"), "c-v1")
		}, []string{"a", "b", "c"}},
	}
	for _, m := range modes {
		for _, sc := range scenarios {
			t.Run(m.name+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				root := seedRepo(t)
				_, rs := startRepo(t, root, m.opts, testLogger(t, nil))
				sc.change(t, root)
				rs.waitFor(t, sc.want...)
				rs.exactly(t, window(m.opts), sc.want...)
			})
		}
	}
}

// A model file written in pieces, each pause shorter than Quiet and the whole longer, is
// reported once, after the last piece.
func TestRepoSlowWrite(t *testing.T) {
	t.Parallel()
	const (
		quiet  = 300 * time.Millisecond
		pause  = 40 * time.Millisecond
		pieces = 12 // 480ms of writing > quiet
	)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			root := seedRepo(t)
			opts := m.opts
			opts.Quiet = quiet
			_, rs := startRepo(t, root, opts, testLogger(t, nil))
			must(t, os.Mkdir(filepath.Join(root, "a", "2"), 0o755))
			f, err := os.Create(filepath.Join(root, "a", "2", "model.onnx"))
			must(t, err)
			start := time.Now()
			pace := time.NewTicker(pause) // paces the writer; nothing waits on a condition here
			for i := range pieces {
				if i > 0 {
					<-pace.C
				}
				_, err := f.Write([]byte(strings.Repeat("x", 1000)))
				must(t, err)
			}
			pace.Stop()
			last := time.Now()
			must(t, f.Close())
			if d := last.Sub(start); d <= quiet {
				t.Fatalf("writer took %v, not longer than quiet %v: test proves nothing", d, quiet)
			}
			rs.waitFor(t, "a")
			rs.exactly(t, 2*quiet, "a")
			if at := rs.snapshot()[0].at; at.Before(last) {
				t.Fatalf("reported %v before the last piece was written", last.Sub(at))
			}
		})
	}
}

// In marker mode a version is not reported until its marker exists, then once.
func TestRepoMarker(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			root := seedRepo(t)
			opts := m.opts
			opts.Marker = "READY"
			_, rs := startRepo(t, root, opts, testLogger(t, nil))
			write(t, filepath.Join(root, "a", "2", "model.onnx"), "a-v2")
			rs.exactly(t, 4*testQuiet) // nothing without the marker
			marked := time.Now()
			write(t, filepath.Join(root, "a", "2", "READY"), "")
			rs.waitFor(t, "a")
			rs.exactly(t, 3*testQuiet, "a")
			if at := rs.snapshot()[0].at; at.Sub(marked) < testQuiet {
				t.Fatalf("reported %v after the marker, before a quiet period of %v", at.Sub(marked), testQuiet)
			}
		})
	}
}

// newCore returns a Repo whose engine the test drives by hand with invented times.
func newCore(t *testing.T, root string, opts Options) *Repo {
	t.Helper()
	if opts.Quiet == 0 {
		opts.Quiet = 2 * time.Second
	}
	r, err := NewRepository(root, opts, testLogger(t, nil))
	must(t, err)
	return r
}

func (r *Repo) take() []string {
	b, ok := r.outbox()
	if !ok {
		return nil
	}
	b = slices.Clone(b)
	r.delivered()
	return b
}

func evt(name string, op fsnotify.Op) fsnotify.Event { return fsnotify.Event{Name: name, Op: op} }

// The quiet rule with a fake timeline: pieces every second, Quiet 2s, checks every tick. With
// events for every piece, and with an event only for the first (a writer inotify cannot see),
// nothing is reported during the write, and one report comes after the last piece.
func TestQuietRuleSlowWriter(t *testing.T) {
	t.Parallel()
	for _, events := range []string{"every piece", "first piece only"} {
		t.Run(events, func(t *testing.T) {
			t.Parallel()
			root := seedRepo(t)
			r := newCore(t, root, Options{})
			q, tick := r.s.quiet, r.s.tick
			path := filepath.Join(root, "a", "2", "model.onnx")
			base := time.Unix(1_000_000, 0)
			var last time.Time
			for i := range 8 {
				now := base.Add(time.Duration(i) * time.Second)
				f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				if errors.Is(err, os.ErrNotExist) {
					must(t, os.MkdirAll(filepath.Dir(path), 0o755))
					f, err = os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				}
				must(t, err)
				_, err = f.WriteString(strings.Repeat("x", 100))
				must(t, err)
				must(t, f.Close())
				last = now
				if i == 0 || events == "every piece" {
					r.event(evt(path, fsnotify.Write), now)
				}
				for c := time.Duration(0); c < time.Second; c += tick {
					r.check(now.Add(c))
					if got := r.take(); got != nil {
						t.Fatalf("reported %v during the write, at +%v", got, now.Add(c).Sub(base))
					}
				}
			}
			var at time.Time
			var got [][]string
			for now := last.Add(time.Second); now.Before(last.Add(20 * time.Second)); now = now.Add(tick) {
				r.check(now)
				if b := r.take(); b != nil {
					got = append(got, b)
					if at.IsZero() {
						at = now
					}
				}
			}
			if len(got) != 1 || !slices.Equal(got[0], []string{"a"}) {
				t.Fatalf("reports = %v, want one [a]", got)
			}
			if d := at.Sub(last); d < q || d > 2*q+tick {
				t.Fatalf("reported %v after the last piece, want between %v and %v", d, q, 2*q+tick)
			}
			if len(r.pending) != 0 {
				t.Fatalf("pending after settling: %v", r.pending)
			}
		})
	}
}

// Marker mode with a fake timeline.
func TestMarkerRule(t *testing.T) {
	t.Parallel()
	base := time.Unix(1_000_000, 0)
	// drive checks from..to every tick, returning each batch with its time.
	type batch struct {
		at    time.Duration
		names []string
	}
	drive := func(r *Repo, from, to time.Duration, during func(now time.Duration)) []batch {
		var out []batch
		for now := from; now < to; now += r.s.tick {
			if during != nil {
				during(now)
			}
			r.check(base.Add(now))
			if b := r.take(); b != nil {
				out = append(out, batch{now, b})
			}
		}
		return out
	}

	t.Run("no report until the marker, then one after quiet", func(t *testing.T) {
		t.Parallel()
		root := seedRepo(t)
		r := newCore(t, root, Options{Marker: "READY"})
		v2 := filepath.Join(root, "a", "2")
		got := drive(r, 0, 10*time.Second, func(now time.Duration) {
			write(t, filepath.Join(v2, "model.onnx"), strings.Repeat("x", int(now/time.Millisecond)))
			r.event(evt(filepath.Join(v2, "model.onnx"), fsnotify.Write), base.Add(now))
		})
		if len(got) != 0 {
			t.Fatalf("reported %v before the marker", got)
		}
		write(t, filepath.Join(v2, "READY"), "")
		r.event(evt(filepath.Join(v2, "READY"), fsnotify.Create), base.Add(10*time.Second))
		got = drive(r, 10*time.Second, 20*time.Second, nil)
		if len(got) != 1 || !slices.Equal(got[0].names, []string{"a"}) {
			t.Fatalf("reports = %v, want one [a]", got)
		}
		if d := got[0].at - 10*time.Second; d < r.s.quiet || d > r.s.quiet+2*r.s.tick {
			t.Fatalf("reported %v after the marker, want quiet %v (+2 ticks)", d, r.s.quiet)
		}

		// Removing the marker hides the version again: that is a change.
		must(t, os.Remove(filepath.Join(v2, "READY")))
		r.event(evt(filepath.Join(v2, "READY"), fsnotify.Remove), base.Add(20*time.Second))
		if got := drive(r, 20*time.Second, 30*time.Second, nil); len(got) != 1 {
			t.Fatalf("marker removal: reports = %v, want one", got)
		}
	})

	t.Run("an unmarked version does not hold back model.toml", func(t *testing.T) {
		t.Parallel()
		root := seedRepo(t)
		r := newCore(t, root, Options{Marker: "READY"})
		v3 := filepath.Join(root, "a", "3", "model.onnx")
		toml := filepath.Join(root, "a", "model.toml")
		got := drive(r, 0, 10*time.Second, func(now time.Duration) {
			write(t, v3, strings.Repeat("x", int(now/time.Millisecond)+1))
			r.event(evt(v3, fsnotify.Write), base.Add(now))
			if now == time.Second {
				write(t, toml, "max_batch_size = 16\n")
				r.event(evt(toml, fsnotify.Write), base.Add(now))
			}
		})
		if len(got) != 1 || !slices.Equal(got[0].names, []string{"a"}) {
			t.Fatalf("reports = %v, want one [a] for model.toml", got)
		}
		if d := got[0].at - time.Second; d > r.s.quiet+2*r.s.tick {
			t.Fatalf("model.toml reported %v after its write: held back by the unmarked version", d)
		}
	})
}

// Lost events: a change without any event is found by a rescan, which the loop runs on
// fsnotify's overflow error and every Options.Rescan.
func TestRescanFindsLostChanges(t *testing.T) {
	t.Parallel()
	root := seedRepo(t)
	r := newCore(t, root, Options{})
	base := time.Unix(1_000_000, 0)
	write(t, filepath.Join(root, "a", "2", "model.onnx"), "a-v2")
	must(t, os.RemoveAll(filepath.Join(root, "b")))
	for now := base; now.Before(base.Add(10 * time.Second)); now = now.Add(r.s.tick) {
		r.check(now)
	}
	if got := r.take(); got != nil {
		t.Fatalf("reported %v without an event or a rescan", got)
	}
	r.rescan(base.Add(10 * time.Second))
	for now := base.Add(10 * time.Second); now.Before(base.Add(20 * time.Second)); now = now.Add(r.s.tick) {
		r.check(now)
	}
	if got := r.take(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after rescan reported %v, want [a b]", got)
	}
	if _, ok := r.known["b"]; ok {
		t.Fatalf("removed model b still has state")
	}
}

// Bursts of events for several models settle into one batch with each model once, and state
// does not outlive the changes (temporary files at the root leave nothing behind).
func TestCoalesceAndBoundedState(t *testing.T) {
	t.Parallel()
	root := seedRepo(t)
	r := newCore(t, root, Options{})
	base := time.Unix(1_000_000, 0)
	for i := range 500 {
		now := base.Add(time.Duration(i) * time.Millisecond)
		m := []string{"a", "b"}[i%2]
		p := filepath.Join(root, m, "1", "model.onnx")
		write(t, p, fmt.Sprint(i))
		r.event(evt(p, fsnotify.Write), now)
		tmp := filepath.Join(root, fmt.Sprintf("tmp%d", i))
		write(t, tmp, "x")
		r.event(evt(tmp, fsnotify.Create), now)
		must(t, os.Remove(tmp))
		r.event(evt(tmp, fsnotify.Remove), now)
		if i%50 == 0 {
			r.check(now)
		}
	}
	if got := r.take(); got != nil {
		t.Fatalf("reported %v during the burst", got)
	}
	counts := map[string]int{}
	for now := base.Add(time.Second); now.Before(base.Add(10 * time.Second)); now = now.Add(r.s.tick) {
		r.check(now)
		for _, name := range r.take() {
			counts[name]++
		}
	}
	if !maps.Equal(counts, map[string]int{"a": 1, "b": 1}) {
		t.Fatalf("reports per model = %v, want a and b once", counts)
	}
	if len(r.pending) != 0 || len(r.known) != 2 || len(r.unsent) != 0 {
		t.Fatalf("state after settling: %d pending, %d known, %d unsent; want 0, 2, 0",
			len(r.pending), len(r.known), len(r.unsent))
	}
}

// The loop with a notifier that loses every event: nothing is reported until fsnotify says its
// queue overflowed, and then the rescan finds the change.
func TestOverflowRescans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := seedRepo(t)
		fake := newFakeNotifier()
		r, err := NewRepository(root, Options{Quiet: time.Second, Rescan: time.Hour}, testLogger(t, nil))
		must(t, err)
		r.newNotifier = func() (notifier, error) { return fake, nil }
		rs := collect(r.Changes(), func(b []string) []string { return b })
		running(t, r.Run, rs)
		synctest.Wait()

		write(t, filepath.Join(root, "a", "2", "model.onnx"), "a-v2")
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := rs.counts(); len(got) != 0 {
			t.Fatalf("reported %v with every event lost", got)
		}
		fake.errs <- fsnotify.ErrEventOverflow
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := rs.counts(); got["a"] != 1 || len(got) != 1 {
			t.Fatalf("after overflow reports = %v, want a once", got)
		}
	})
}

// The slow safety rescan finds what lost events hid, without an overflow error.
func TestSafetyRescan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := seedRepo(t)
		fake := newFakeNotifier()
		r, err := NewRepository(root, Options{Quiet: time.Second, PollInterval: time.Second}, testLogger(t, nil))
		must(t, err)
		r.newNotifier = func() (notifier, error) { return fake, nil }
		rs := collect(r.Changes(), func(b []string) []string { return b })
		running(t, r.Run, rs)
		synctest.Wait()
		must(t, os.RemoveAll(filepath.Join(root, "b")))
		time.Sleep(DefaultRescanFactor*time.Second - 100*time.Millisecond)
		synctest.Wait()
		if got := rs.counts(); len(got) != 0 {
			t.Fatalf("reported %v before the safety rescan", got)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := rs.counts(); got["b"] != 1 || len(got) != 1 {
			t.Fatalf("after the safety rescan reports = %v, want b once", got)
		}
	})
}

// Watches follow directories as they appear and vanish, and events drive reports.
func TestWatchesFollowDirectories(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := seedRepo(t)
		fake := newFakeNotifier()
		r, err := NewRepository(root, Options{Quiet: time.Second, Rescan: time.Hour}, testLogger(t, nil))
		must(t, err)
		r.newNotifier = func() (notifier, error) { return fake, nil }
		rs := collect(r.Changes(), func(b []string) []string { return b })
		running(t, r.Run, rs)
		synctest.Wait()
		want := []string{".", "a", "a/1", "b", "b/1"}
		if got := fake.relWatches(root); !slices.Equal(got, want) {
			t.Fatalf("initial watches = %v, want %v", got, want)
		}

		write(t, filepath.Join(root, "a", "2", "sub", "model.onnx"), "a-v2")
		fake.events <- evt(filepath.Join(root, "a", "2"), fsnotify.Create)
		must(t, os.RemoveAll(filepath.Join(root, "b")))
		fake.events <- evt(filepath.Join(root, "b"), fsnotify.Remove)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		want = []string{".", "a", "a/1", "a/2", "a/2/sub"}
		if got := fake.relWatches(root); !slices.Equal(got, want) {
			t.Fatalf("watches = %v, want %v", got, want)
		}
		if got := rs.counts(); got["a"] != 1 || got["b"] != 1 || len(got) != 2 {
			t.Fatalf("reports = %v, want a and b once", got)
		}
	})
}

// Where fsnotify cannot start, or a watch cannot be added (ENOSPC: max_user_watches), the
// watcher warns once and polls.
func TestFallbackToPolling(t *testing.T) {
	cases := []struct {
		name  string
		setup func(fake *fakeNotifier) func() (notifier, error)
	}{
		{"no inotify", func(*fakeNotifier) func() (notifier, error) {
			return func() (notifier, error) { return nil, syscall.ENOSYS }
		}},
		{"ENOSPC at start", func(fake *fakeNotifier) func() (notifier, error) {
			fake.addErr = func(p string) error {
				if strings.HasSuffix(p, filepath.Join("b", "1")) {
					return syscall.ENOSPC
				}
				return nil
			}
			return func() (notifier, error) { return fake, nil }
		}},
		{"ENOSPC on a new directory", func(fake *fakeNotifier) func() (notifier, error) {
			fake.addErr = func(p string) error {
				if strings.HasSuffix(p, filepath.Join("c", "1")) {
					return syscall.ENOSPC
				}
				return nil
			}
			return func() (notifier, error) { return fake, nil }
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				root := seedRepo(t)
				fake := newFakeNotifier()
				var logs syncBuffer
				r, err := NewRepository(root, Options{Quiet: time.Second, PollInterval: 5 * time.Second, Rescan: time.Hour}, testLogger(t, &logs))
				must(t, err)
				r.newNotifier = c.setup(fake)
				rs := collect(r.Changes(), func(b []string) []string { return b })
				running(t, r.Run, rs)
				synctest.Wait()

				write(t, filepath.Join(root, "c", "1", "model.onnx"), "c-v1")
				select { // a live fake delivers the event; after fallback nobody listens
				case fake.events <- evt(filepath.Join(root, "c"), fsnotify.Create):
				case <-time.After(time.Millisecond):
				}
				time.Sleep(10 * time.Second)
				synctest.Wait()
				write(t, filepath.Join(root, "a", "model.toml"), "changed")
				time.Sleep(10 * time.Second)
				synctest.Wait()
				if got := rs.counts(); got["c"] != 1 || got["a"] != 1 || len(got) != 2 {
					t.Fatalf("reports = %v, want a and c once, found by polling", got)
				}
				if n := strings.Count(logs.String(), "polling instead"); n != 1 {
					t.Fatalf("fallback warnings = %d, want 1; log:\n%s", n, logs.String())
				}
				if !strings.Contains(logs.String(), "level=WARN") {
					t.Fatalf("fallback not logged at Warn:\n%s", logs.String())
				}
				if c.name != "no inotify" && !fake.isClosed() {
					t.Fatalf("notifier not closed after fallback")
				}
			})
		})
	}
}

func TestRepoErrors(t *testing.T) {
	t.Parallel()
	root := seedRepo(t)
	if _, err := NewRepository(filepath.Join(root, "missing"), Options{}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing root: err = %v, want ErrNotExist", err)
	}
	if _, err := NewRepository(root, Options{Quiet: -1}, nil); !errors.Is(err, ErrOptions) {
		t.Errorf("negative quiet: err = %v, want ErrOptions", err)
	}
	if _, err := NewRepository(root, Options{Marker: "a/READY"}, nil); !errors.Is(err, ErrOptions) {
		t.Errorf("marker with a slash: err = %v, want ErrOptions", err)
	}
	r, err := NewRepository(root, Options{Poll: true}, nil)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Errorf("Run on a cancelled context: %v", err)
	}
	if _, ok := <-r.Changes(); ok {
		t.Errorf("Changes not closed")
	}
	if err := r.Run(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Run: err = %v, want ErrStarted", err)
	}
}

// Cancelling Run closes Changes and leaves no goroutine behind, with real fsnotify watchers
// and after changes went through.
func TestCancelLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		root := seedRepo(t)
		cfg := filepath.Join(t.TempDir(), "inferd.toml")
		write(t, cfg, "a = 1\n")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 3 { // repeated, so growth per run would show
			r, err := NewRepository(root, Options{Quiet: 50 * time.Millisecond}, nil)
			must(t, err)
			f, err := NewFile(cfg, Options{Quiet: 50 * time.Millisecond}, nil)
			must(t, err)
			runCtx, stop := context.WithCancel(ctx)
			rdone, fdone := make(chan error, 1), make(chan error, 1)
			go func() { rdone <- r.Run(runCtx) }()
			go func() { fdone <- f.Run(runCtx) }()
			rs := collect(r.Changes(), func(b []string) []string { return b })
			fsr := collect(f.Changes(), func(struct{}) []string { return []string{"file"} })
			name := fmt.Sprintf("m%d", time.Now().UnixNano())
			write(t, filepath.Join(root, name, "1", "model.onnx"), "x")
			write(t, cfg, name)
			rs.waitFor(t, name)
			fsr.waitFor(t, "file")
			stop()
			for _, ch := range []chan error{rdone, fdone} {
				if err := <-ch; err != nil {
					t.Fatalf("Run: %v", err)
				}
			}
			<-rs.closed
			<-fsr.closed
		}
	}()
	testutil.Eventually(t, waitDeadline, func() string {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Sprintf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
		return ""
	})
}

// TestLinksOutsideRootIgnored puts model directories that are links to / and to a directory
// elsewhere into the repository, and one that links to a model inside it: the watcher watches
// and reports only what lies inside the root (it must not walk /), and says once per link why
// it ignores the others.
func TestLinksOutsideRootIgnored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := seedRepo(t)
		elsewhere := t.TempDir()
		write(t, filepath.Join(elsewhere, "1", "model.onnx"), "elsewhere")
		must(t, os.Symlink("/", filepath.Join(root, "x")))
		must(t, os.Symlink(elsewhere, filepath.Join(root, "y")))
		must(t, os.Symlink(filepath.Join(root, "a"), filepath.Join(root, "alias")))
		var logs syncBuffer
		fake := newFakeNotifier()
		r, err := NewRepository(root, Options{Quiet: time.Second, Rescan: time.Hour}, testLogger(t, &logs))
		must(t, err)
		if got := r.models(); !slices.Equal(got, []string{"a", "alias", "b"}) {
			t.Errorf("models = %v, want a, alias and b", got)
		}
		r.newNotifier = func() (notifier, error) { return fake, nil }
		rs := collect(r.Changes(), func(b []string) []string { return b })
		running(t, r.Run, rs)
		synctest.Wait()
		want := []string{".", "a", "a/1", "alias", "alias/1", "b", "b/1"}
		if got := fake.relWatches(root); !slices.Equal(got, want) {
			t.Fatalf("watches = %v, want %v", got, want)
		}
		// A change where the outside link leads is not the repository's.
		write(t, filepath.Join(elsewhere, "2", "model.onnx"), "elsewhere 2")
		fake.events <- evt(filepath.Join(root, "y"), fsnotify.Create)
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := rs.counts(); len(got) != 0 {
			t.Errorf("reports = %v, want none", got)
		}
		text := logs.String()
		for _, name := range []string{"x", "y"} {
			if n := strings.Count(text, "model="+name+" "); n != 1 {
				t.Errorf("model %s: %d log lines, want one:\n%s", name, n, text)
			}
		}
		if !strings.Contains(text, "leads outside the repository") {
			t.Errorf("no log line says why:\n%s", text)
		}
	})
}
