// Package watch notices changes to the model repository and to the config file and says so on a
// channel, only once the change is complete: a file still being written is never reported.
//
// It owns the file-system side of reloading: fsnotify watches on directories (never on single
// files, which editors and deployment tools replace by rename), debouncing, the complete-write
// check, and a polling fallback where inotify is unavailable or exhausted. It must not parse,
// load or validate anything: consumers re-read what a report names and decide what to do, so a
// spurious report costs a no-op reload, while a missed or early one would serve a half-written
// model. It imports nothing of inferd's.
//
// # The quiet rule
//
// An fsnotify event (Create, Write, Remove, Rename or Chmod) or a scan that finds a difference
// makes a model (or the config file) pending. A pending model is reported only once both hold:
// no event has touched it for [Options.Quiet], and a stat scan of its tree (path, size, mtime,
// mode, inode and ctime of every file) has stayed identical for Quiet. While events keep coming
// the scan is repeated every Quiet/4, so a writer that produces no events (a copy through some
// network mounts) still holds the report back as long as any size or mtime moves within Quiet.
// A model whose settled fingerprint equals the one last reported is not reported at all.
//
// # Marker mode
//
// With [Options.Marker] set, a version directory (any subdirectory of a model directory) is
// complete once a file of that name exists directly inside it. Until then the version directory
// is invisible: its files are left out of the model's fingerprint and events inside it do not
// restart the model's quiet period (they only make the watcher look). Once the marker appears
// the version becomes part of the fingerprint, and the model is reported after the usual quiet
// period measured from the marker's creation (no further events, fingerprint stable for Quiet).
// So the marker is the "files are complete" signal and Quiet only absorbs the marker's own
// write; set Quiet short in marker mode for fast loads. Files directly in the model directory
// (model.toml) need no marker and follow the quiet rule. Removing a marker makes its version
// invisible again, which is reported like the removal of that version; writing into a version
// that already has its marker is reported after quiet like any other change.
//
// # Polling
//
// If fsnotify cannot be created, or adding a watch fails for any reason but the directory having
// vanished (ENOSPC when fs.inotify.max_user_watches is exhausted, EMFILE), the watcher logs one
// warning and polls the tree every [Options.PollInterval] from then on, comparing per-model
// fingerprints; [Options.Poll] forces this from the start (NFS and other file systems without
// inotify). In fsnotify mode a slow safety rescan runs every [Options.Rescan], and at once when
// fsnotify reports that its queue overflowed, so lost events delay a report but never lose it.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults for the zero fields of Options.
const (
	DefaultQuiet        = 2 * time.Second
	DefaultPollInterval = 10 * time.Second
	// DefaultRescanFactor times PollInterval is the default safety rescan period in fsnotify mode.
	DefaultRescanFactor = 10
)

// ErrStarted is returned by Run when the watcher was already run once.
var ErrStarted = errors.New("watch: Run called twice")

// ErrOptions wraps every rejection of Options.
var ErrOptions = errors.New("watch: invalid options")

// Options tunes a watcher. The zero value gives the defaults.
type Options struct {
	// Quiet is how long a model or file must have seen no events and an unchanged stat scan
	// before it is reported. Default 2s.
	Quiet time.Duration
	// Marker, when not empty, is the file name that marks a version directory complete (for
	// example "READY"); see the package comment. Repository watcher only. Default "" (off).
	Marker string
	// Poll forces polling instead of fsnotify, for file systems without inotify (NFS, some FUSE).
	// Default false.
	Poll bool
	// PollInterval is the polling period when polling. Default 10s.
	PollInterval time.Duration
	// Rescan is the safety rescan period in fsnotify mode, against lost events.
	// Default 10×PollInterval.
	Rescan time.Duration
}

// settings are Options with the defaults filled in, plus the logger.
type settings struct {
	quiet     time.Duration
	tick      time.Duration // how often pending work is looked at: Quiet/4
	poll      time.Duration
	rescan    time.Duration
	marker    string
	forcePoll bool
	log       *slog.Logger
}

func (o Options) settings(log *slog.Logger) (settings, error) {
	if o.Quiet < 0 || o.PollInterval < 0 || o.Rescan < 0 {
		return settings{}, fmt.Errorf("%w: negative duration (quiet %v, poll interval %v, rescan %v)",
			ErrOptions, o.Quiet, o.PollInterval, o.Rescan)
	}
	if o.Marker != "" && (o.Marker == "." || o.Marker == ".." || containsSeparator(o.Marker)) {
		return settings{}, fmt.Errorf("%w: marker %q is not a plain file name", ErrOptions, o.Marker)
	}
	s := settings{
		quiet:     o.Quiet,
		poll:      o.PollInterval,
		rescan:    o.Rescan,
		marker:    o.Marker,
		forcePoll: o.Poll,
		log:       log,
	}
	if s.quiet == 0 {
		s.quiet = DefaultQuiet
	}
	if s.poll == 0 {
		s.poll = DefaultPollInterval
	}
	if s.rescan == 0 {
		s.rescan = DefaultRescanFactor * s.poll
	}
	s.tick = max(s.quiet/4, time.Millisecond)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

func containsSeparator(name string) bool {
	for _, c := range name {
		if c == '/' || c == '\\' {
			return true
		}
	}
	return false
}

// notifier is the part of fsnotify.Watcher the loop uses; tests substitute a fake to lose
// events or fail Add.
type notifier interface {
	Add(path string) error
	Remove(path string) error
	WatchList() []string
	Events() <-chan fsnotify.Event
	Errors() <-chan error
	Close() error
}

type fsnotifier struct{ w *fsnotify.Watcher }

func newFSNotifier() (notifier, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return fsnotifier{w}, nil
}

func (f fsnotifier) Add(path string) error         { return f.w.Add(path) }
func (f fsnotifier) Remove(path string) error      { return f.w.Remove(path) }
func (f fsnotifier) WatchList() []string           { return f.w.WatchList() }
func (f fsnotifier) Events() <-chan fsnotify.Event { return f.w.Events }
func (f fsnotifier) Errors() <-chan error          { return f.w.Errors }
func (f fsnotifier) Close() error                  { return f.w.Close() }

// engine is what a watcher plugs into the loop. All methods run on the loop's goroutine.
type engine[T any] interface {
	// watchDirs lists the directories that should be watched now.
	watchDirs() []string
	// event takes one fsnotify event; true asks for a full rescan at once.
	event(ev fsnotify.Event, now time.Time) (rescan bool)
	// rescan compares everything with the last settled state and makes differences pending.
	rescan(now time.Time)
	// check advances pending work by the quiet rule.
	check(now time.Time)
	// busy reports whether anything is pending.
	busy() bool
	// outbox returns what should be sent next, if anything; delivered says it was sent.
	outbox() (T, bool)
	delivered()
}

// loop is the goroutine-free machinery shared by Repo and File: it owns the notifier, the
// tickers and the fallback to polling, and runs in the caller of Run.
type loop[T any] struct {
	s           settings
	e           engine[T]
	out         chan<- T
	newNotifier func() (notifier, error)

	n      notifier     // nil when polling
	slow   *time.Ticker // safety rescan (fsnotify) or poll (polling)
	fast   *time.Ticker // pending work; nil when idle
	dirty  bool         // a directory may have appeared or vanished: resync the watches
	warned bool
}

func (l *loop[T]) run(ctx context.Context) error {
	defer close(l.out)
	defer l.closeNotifier()
	if !l.s.forcePoll {
		n, err := l.newNotifier()
		if err != nil {
			l.fallback(fmt.Errorf("watch: create fsnotify watcher: %w", err))
		} else {
			l.n = n
			if err := l.sync(); err != nil {
				l.fallback(err)
			}
		}
	}
	// Catch up with whatever changed between the constructor's baseline and the watches.
	l.e.rescan(time.Now())
	l.resetSlow()
	defer func() {
		l.slow.Stop()
		if l.fast != nil {
			l.fast.Stop()
		}
	}()

	for {
		var fastC <-chan time.Time
		if l.e.busy() || l.dirty {
			if l.fast == nil {
				l.fast = time.NewTicker(l.s.tick)
			}
			fastC = l.fast.C
		} else if l.fast != nil {
			l.fast.Stop()
			l.fast = nil
		}
		var evC <-chan fsnotify.Event
		var errC <-chan error
		if l.n != nil {
			evC, errC = l.n.Events(), l.n.Errors()
		}
		var outC chan<- T
		v, ok := l.e.outbox()
		if ok {
			outC = l.out
		}

		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-evC:
			if !ok {
				l.fallback(errors.New("watch: fsnotify closed its event channel"))
				continue
			}
			l.event(ev)
		case err, ok := <-errC:
			if !ok {
				l.fallback(errors.New("watch: fsnotify closed its error channel"))
				continue
			}
			l.notifierError(err)
		case <-l.slow.C:
			l.rescan()
		case <-fastC:
			if l.dirty && l.n != nil {
				l.dirty = false
				if err := l.sync(); err != nil {
					l.fallback(err)
				}
			}
			l.dirty = false
			l.e.check(time.Now())
		case outC <- v:
			l.e.delivered()
		}
	}
}

func (l *loop[T]) event(ev fsnotify.Event) {
	if ev.Op.Has(fsnotify.Create) || ev.Op.Has(fsnotify.Remove) || ev.Op.Has(fsnotify.Rename) {
		l.dirty = true
	}
	if l.e.event(ev, time.Now()) {
		l.rescan()
	}
}

func (l *loop[T]) notifierError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		l.s.log.Warn("file events were lost; rescanning", "err", err)
	} else {
		l.s.log.Warn("file notification error; rescanning", "err", err)
	}
	l.rescan()
}

// rescan resyncs the watches (a lost Create may have left a directory unwatched) and compares
// every fingerprint with the settled state.
func (l *loop[T]) rescan() {
	if l.n != nil {
		if err := l.sync(); err != nil {
			l.fallback(err)
			return // fallback rescanned
		}
	}
	l.e.rescan(time.Now())
}

// sync makes the notifier's watch list equal to the engine's directories. Stale watches are
// removed before new ones are added: after a rename, inotify hands back the old watch
// descriptor for the same inode under its old path.
func (l *loop[T]) sync() error {
	want := l.e.watchDirs()
	have := l.n.WatchList()
	slices.Sort(want)
	for _, p := range have {
		if _, ok := slices.BinarySearch(want, p); !ok {
			_ = l.n.Remove(p) // already gone with its directory, most often
		}
	}
	slices.Sort(have)
	for _, p := range want {
		if _, ok := slices.BinarySearch(have, p); ok {
			continue
		}
		if err := l.n.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
			return fmt.Errorf("watch: add watch on %s: %w", p, err)
		}
	}
	return nil
}

// fallback switches to polling for good. It happens at most once per Run, so it warns once.
func (l *loop[T]) fallback(err error) {
	l.closeNotifier()
	if !l.warned {
		l.warned = true
		l.s.log.Warn("file notifications unavailable; polling instead",
			"err", err, "poll_interval", l.s.poll)
	}
	if l.slow != nil {
		l.resetSlow()
		l.e.rescan(time.Now())
	}
}

func (l *loop[T]) resetSlow() {
	if l.slow != nil {
		l.slow.Stop()
	}
	d := l.s.rescan
	if l.n == nil {
		d = l.s.poll
	}
	l.slow = time.NewTicker(d)
}

func (l *loop[T]) closeNotifier() {
	if l.n != nil {
		if err := l.n.Close(); err != nil {
			l.s.log.Debug("close fsnotify watcher", "err", err)
		}
		l.n = nil
	}
}
