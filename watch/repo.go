package watch

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Repo watches a model repository, root/<model>/<version>/..., and reports the names of models
// whose files changed and settled. A model is a direct subdirectory of root whose name does not
// start with "."; hidden names are skipped so that a model staged as root/.m.tmp and renamed to
// root/m is reported once, as m. A new model, a removed one (its directory gone or renamed
// away) and a changed file anywhere in a model's tree (model.toml, a version directory, a file
// in one) all report the model's name.
//
// State is one fingerprint per existing model plus one small record per model with pending
// changes, so memory does not grow with the number of changes.
type Repo struct {
	root        string
	s           settings
	changes     chan []string
	started     atomic.Bool
	newNotifier func() (notifier, error) // a field so tests can fail or starve fsnotify

	outsideMu sync.Mutex
	outside   map[string]string // model name -> target of a link that leads outside root, logged once

	// Owned by Run's goroutine once it starts; the constructor fills known.
	known   map[string]fingerprint // settled fingerprint per existing model (baseline or last report)
	pending map[string]*pendingTree[fingerprint]
	unsent  map[string]struct{} // reported but not yet taken from Changes
	batch   []string            // sorted unsent, built lazily
}

// pendingTree tracks one model (or the config file, with a fileStat) through the quiet rule.
type pendingTree[S comparable] struct {
	lastEvent   time.Time // last event that counts; zero if none
	scanned     bool
	scanAt      time.Time // when scan was taken
	scan        S
	stableSince time.Time // when scan last changed
}

// observe records a scan taken at now.
func (p *pendingTree[S]) observe(scan S, now time.Time) {
	if !p.scanned || scan != p.scan {
		p.scan = scan
		p.stableSince = now
	}
	p.scanned = true
	p.scanAt = now
}

// step says what check should do with p at now: take a fresh scan because events came in since
// the last one, or settle (compare a last scan with p.scan), or wait.
func (p *pendingTree[S]) step(now time.Time, quiet time.Duration) (rescan, settle bool) {
	if !p.scanned || p.lastEvent.After(p.scanAt) {
		return true, false
	}
	if now.Sub(p.lastEvent) < quiet || now.Sub(p.stableSince) < quiet {
		return false, false
	}
	return false, true
}

// NewRepository returns a watcher of the repository at root. It takes the baseline at once:
// what exists now is not reported, and anything that changes after NewRepository returns is, so
// a consumer constructs the watcher, loads the repository, then calls Run. log may be nil.
func NewRepository(root string, opts Options, log *slog.Logger) (*Repo, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := opts.settings(log.With("watch", "repository", "root", root))
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("watch: repository %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("watch: repository: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("watch: repository %s: not a directory", abs)
	}
	r := &Repo{
		root:        abs,
		s:           s,
		changes:     make(chan []string),
		newNotifier: newFSNotifier,
		known:       map[string]fingerprint{},
		pending:     map[string]*pendingTree[fingerprint]{},
		unsent:      map[string]struct{}{},
		outside:     map[string]string{},
	}
	for _, name := range r.models() {
		if fp := r.fingerprint(name); fp != (fingerprint{}) {
			r.known[name] = fp
		}
	}
	return r, nil
}

// Changes delivers batches of model names, sorted, each model at most once per batch. Names
// that settle while the consumer is busy are merged into the next batch, so a slow consumer
// never blocks the watcher nor makes it queue without bound. Closed when Run returns.
func (r *Repo) Changes() <-chan []string { return r.changes }

// Run watches until ctx ends, then closes Changes and the fsnotify watcher and returns nil.
// It may be called once.
func (r *Repo) Run(ctx context.Context) error {
	if r.started.Swap(true) {
		return ErrStarted
	}
	l := &loop[[]string]{s: r.s, e: r, out: r.changes, newNotifier: r.newNotifier}
	return l.run(ctx)
}

// models lists the model names present under root.
func (r *Repo) models() []string {
	entries, err := os.ReadDir(r.root)
	if err != nil {
		r.s.log.Debug("read repository root", "err", err)
		return nil
	}
	var names []string
	for _, e := range entries {
		if hidden(e.Name()) {
			continue
		}
		if e.IsDir() || (e.Type()&os.ModeSymlink != 0 && isDir(filepath.Join(r.root, e.Name())) && r.inside(e.Name())) {
			names = append(names, e.Name())
		}
	}
	return names
}

// inside says whether the model directory name, when it is a symbolic link, leads to a place
// inside root. One that leads outside (ln -s / x) is ignored, with one log line per target: the
// watcher would otherwise walk and watch whatever it leads to, / included, and the loader
// refuses it anyway.
func (r *Repo) inside(name string) bool {
	p := filepath.Join(r.root, name)
	if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		return true
	}
	target, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false // dangling or a loop: nothing to watch
	}
	root, err := filepath.EvalSymlinks(r.root)
	if err != nil {
		return false
	}
	if rel, err := filepath.Rel(root, target); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && rel != "." {
		return true
	}
	r.outsideMu.Lock()
	defer r.outsideMu.Unlock()
	if r.outside[name] != target {
		r.outside[name] = target
		r.s.log.Warn("ignoring a model directory whose link leads outside the repository", "model", name, "target", target)
	}
	return false
}

func hidden(name string) bool { return strings.HasPrefix(name, ".") }

func (r *Repo) fingerprint(name string) fingerprint {
	if !r.inside(name) {
		return fingerprint{} // as if absent: never walked
	}
	return fingerprintModel(filepath.Join(r.root, name), r.s.marker)
}

func (r *Repo) watchDirs() []string {
	dirs := []string{r.root}
	var walk func(dir string)
	walk = func(dir string) {
		dirs = append(dirs, dir)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.IsDir() {
				walk(filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, name := range r.models() {
		walk(filepath.Join(r.root, name))
	}
	return dirs
}

func (r *Repo) event(ev fsnotify.Event, now time.Time) bool {
	if ev.Name == r.root {
		return true // root removed or renamed: compare everything
	}
	rel, err := filepath.Rel(r.root, ev.Name)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return false
	}
	parts := strings.SplitN(filepath.ToSlash(rel), "/", 3)
	name := parts[0]
	if hidden(name) {
		return false
	}
	p := r.pending[name]
	if p == nil {
		p = &pendingTree[fingerprint]{}
		r.pending[name] = p
	}
	if r.counts(parts) {
		p.lastEvent = now
	}
	return false
}

// counts reports whether an event at root/parts... restarts the model's quiet period: in marker
// mode, events inside a version directory that has no marker yet do not.
func (r *Repo) counts(parts []string) bool {
	if r.s.marker == "" || len(parts) < 2 {
		return true
	}
	vdir := filepath.Join(r.root, parts[0], parts[1])
	if !isDir(vdir) {
		return true // a file such as model.toml, or something removed
	}
	return exists(filepath.Join(vdir, r.s.marker))
}

func (r *Repo) rescan(now time.Time) {
	names := r.models()
	for name := range r.known {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if r.pending[name] != nil {
			continue // the quiet rule is already on it
		}
		if fp := r.fingerprint(name); fp != r.known[name] {
			p := &pendingTree[fingerprint]{}
			p.observe(fp, now)
			r.pending[name] = p
		}
	}
}

func (r *Repo) check(now time.Time) {
	for name, p := range r.pending {
		rescan, settle := p.step(now, r.s.quiet)
		if !rescan && !settle {
			continue
		}
		fp := r.fingerprint(name)
		if rescan || fp != p.scan {
			p.observe(fp, now)
			continue
		}
		delete(r.pending, name)
		if fp == r.known[name] {
			continue // back where it was, or the events changed nothing we track
		}
		if fp == (fingerprint{}) {
			delete(r.known, name)
		} else {
			r.known[name] = fp
		}
		r.s.log.Debug("model changed", "model", name)
		r.unsent[name] = struct{}{}
		r.batch = nil
	}
}

func (r *Repo) busy() bool { return len(r.pending) > 0 }

func (r *Repo) outbox() ([]string, bool) {
	if len(r.unsent) == 0 {
		return nil, false
	}
	if r.batch == nil {
		for name := range r.unsent {
			r.batch = append(r.batch, name)
		}
		slices.Sort(r.batch)
	}
	return r.batch, true
}

func (r *Repo) delivered() {
	clear(r.unsent)
	r.batch = nil
}
