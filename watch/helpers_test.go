package watch

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/inferd/inferd/internal/testutil"
)

// Real-time tests use a short Quiet; waits are deadlines on conditions, and "nothing more is
// reported" is checked over a fixed window a few Quiet periods long.
const (
	testQuiet    = 150 * time.Millisecond
	testPoll     = 40 * time.Millisecond
	waitDeadline = 5 * time.Second
)

// modes runs a scenario with fsnotify and with forced polling.
var modes = []struct {
	name string
	opts Options
}{
	{"fsnotify", Options{Quiet: testQuiet, PollInterval: time.Hour}},
	{"poll", Options{Quiet: testQuiet, PollInterval: testPoll, Poll: true}},
}

// window is how long to keep listening for reports that should not come.
func window(opts Options) time.Duration {
	w := 3 * opts.Quiet
	if opts.Poll {
		w += 2 * opts.PollInterval
	}
	return w
}

func write(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// seedRepo lays out root/a/{model.toml,1/model.onnx} and root/b/1/model.onnx.
func seedRepo(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	write(t, filepath.Join(root, "a", "model.toml"), "max_batch_size = 4\n")
	write(t, filepath.Join(root, "a", "1", "model.onnx"), "a-v1")
	write(t, filepath.Join(root, "b", "1", "model.onnx"), "b-v1")
	return root
}

type report struct {
	at    time.Time
	names []string
}

// reports collects what a watcher sends, with the time it arrived.
type reports struct {
	mu     sync.Mutex
	got    []report
	closed chan struct{}
}

func collect[T any](ch <-chan T, names func(T) []string) *reports {
	rs := &reports{closed: make(chan struct{})}
	go func() {
		defer close(rs.closed)
		for v := range ch {
			rs.mu.Lock()
			rs.got = append(rs.got, report{time.Now(), names(v)})
			rs.mu.Unlock()
		}
	}()
	return rs
}

func (rs *reports) snapshot() []report {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Clone(rs.got)
}

func (rs *reports) counts() map[string]int {
	c := map[string]int{}
	for _, r := range rs.snapshot() {
		for _, n := range r.names {
			c[n]++
		}
	}
	return c
}

// waitFor polls until every name in want was reported at least once.
func (rs *reports) waitFor(t testing.TB, want ...string) {
	t.Helper()
	for _, w := range want {
		rs.waitCount(t, w, 1)
	}
}

// waitCount polls until name was reported at least n times.
func (rs *reports) waitCount(t testing.TB, name string, n int) {
	t.Helper()
	testutil.Eventually(t, waitDeadline, func() string {
		if rs.counts()[name] >= n {
			return ""
		}
		return fmt.Sprintf("%d reports of %s; got %v", n, name, rs.snapshot())
	})
}

// exactly checks, after a window in which anything extra would have arrived, that the reports
// so far name each of want exactly once and nothing else.
func (rs *reports) exactly(t testing.TB, window time.Duration, want ...string) {
	t.Helper()
	<-time.After(window) // a window for absent reports, not a wait for a condition
	wantCounts := map[string]int{}
	for _, w := range want {
		wantCounts[w]++
	}
	if got := rs.counts(); !maps.Equal(got, wantCounts) {
		t.Fatalf("reports per name = %v, want %v (reports %v)", got, wantCounts, rs.snapshot())
	}
}

// running starts a watcher's Run and stops it at cleanup, checking that Changes closes.
func running(t testing.TB, run func(context.Context) error, rs *reports) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitDeadline):
			t.Errorf("Run did not return after cancel")
		}
		select {
		case <-rs.closed:
		case <-time.After(waitDeadline):
			t.Errorf("Changes not closed after Run returned")
		}
	})
}

func startRepo(t testing.TB, root string, opts Options, log *slog.Logger) (*Repo, *reports) {
	t.Helper()
	r, err := NewRepository(root, opts, log)
	must(t, err)
	rs := collect(r.Changes(), func(b []string) []string { return b })
	running(t, r.Run, rs)
	return r, rs
}

func startFile(t testing.TB, path string, opts Options) (*File, *reports) {
	t.Helper()
	f, err := NewFile(path, opts, testLogger(t, nil))
	must(t, err)
	rs := collect(f.Changes(), func(struct{}) []string { return []string{"file"} })
	running(t, f.Run, rs)
	return f, rs
}

// testLogger logs through t, and into buf when it is not nil.
func testLogger(t testing.TB, buf *syncBuffer) *slog.Logger {
	var w interface{ Write([]byte) (int, error) } = tWriter{t}
	if buf != nil {
		w = buf
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeNotifier stands in for fsnotify: events are whatever the test sends, and Add can fail.
type fakeNotifier struct {
	events  chan fsnotify.Event
	errs    chan error
	addErr  func(path string) error
	mu      sync.Mutex
	watches map[string]bool
	closed  bool
}

func newFakeNotifier() *fakeNotifier {
	return &fakeNotifier{
		events:  make(chan fsnotify.Event),
		errs:    make(chan error),
		watches: map[string]bool{},
	}
}

func (f *fakeNotifier) Add(path string) error {
	if f.addErr != nil {
		if err := f.addErr(path); err != nil {
			return err
		}
	}
	if _, err := os.Stat(path); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches[path] = true
	return nil
}

func (f *fakeNotifier) Remove(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.watches[path] {
		return fmt.Errorf("%w: %s", fsnotify.ErrNonExistentWatch, path)
	}
	delete(f.watches, path)
	return nil
}

func (f *fakeNotifier) WatchList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.watches))
}

func (f *fakeNotifier) Events() <-chan fsnotify.Event { return f.events }
func (f *fakeNotifier) Errors() <-chan error          { return f.errs }

func (f *fakeNotifier) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeNotifier) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// relWatches lists the fake's watches relative to root.
func (f *fakeNotifier) relWatches(root string) []string {
	var out []string
	for _, p := range f.WatchList() {
		r, _ := filepath.Rel(root, p)
		out = append(out, filepath.ToSlash(r))
	}
	return out
}
