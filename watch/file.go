package watch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// maxLinks bounds how many symbolic links File follows from its path.
const maxLinks = 16

// File watches one file, the config file, through its directory: editors save by writing a new
// file and renaming it over the old one, and deployment tools swap a symbolic link, and a watch
// on the file itself would follow the old inode and go deaf. Events are kept when they name the
// path, a link on the way from it to the real file, or a directory above one of those (so a
// swapped directory link is seen too). After the quiet rule settles, the content is hashed and
// the change reported only if the hash differs from the last report (or from the content when
// NewFile was called): touch, or a rewrite with identical bytes, reports nothing. A missing file
// reports nothing either; when it comes back it is compared with the last report as usual.
type File struct {
	path        string
	s           settings
	changes     chan struct{}
	started     atomic.Bool
	newNotifier func() (notifier, error)

	// Owned by Run's goroutine once it starts; the constructor fills them.
	reported [sha256.Size]byte // content hash of the baseline or of the last report
	hasHash  bool              // reported is set: the file existed then
	seen     fileStat          // stat when last settled, for rescans
	pending  *pendingTree[fileStat]
	unsent   bool
}

// NewFile returns a watcher of the file at path, taking its content as the baseline. The file
// may be missing; its directory must exist. log may be nil.
func NewFile(path string, opts Options, log *slog.Logger) (*File, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, err := opts.settings(log.With("watch", "file", "path", path))
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watch: file %s: %w", path, err)
	}
	if !isDir(filepath.Dir(abs)) {
		return nil, fmt.Errorf("watch: file %s: directory %s: %w", path, filepath.Dir(abs), fs.ErrNotExist)
	}
	f := &File{path: abs, s: s, changes: make(chan struct{}), newNotifier: newFSNotifier}
	f.seen = statFile(abs)
	if h, err := hashFile(abs); err == nil {
		f.reported, f.hasHash = h, true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("watch: file: %w", err)
	}
	return f, nil
}

// Changes receives a value each time the file's content settles different from the last
// report; changes while the consumer is busy merge into one. Closed when Run returns.
func (f *File) Changes() <-chan struct{} { return f.changes }

// Run watches until ctx ends, then closes Changes and the fsnotify watcher and returns nil.
// It may be called once.
func (f *File) Run(ctx context.Context) error {
	if f.started.Swap(true) {
		return ErrStarted
	}
	l := &loop[struct{}]{s: f.s, e: f, out: f.changes, newNotifier: f.newNotifier}
	return l.run(ctx)
}

// targets returns the path and each link on the way from it to the file it resolves to.
func (f *File) targets() []string {
	out := []string{f.path}
	p := f.path
	for range maxLinks {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			break
		}
		t, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = filepath.Clean(t)
		out = append(out, p)
	}
	if resolved, err := filepath.EvalSymlinks(f.path); err == nil && resolved != p {
		out = append(out, resolved)
	}
	return out
}

func (f *File) watchDirs() []string {
	var dirs []string
	for _, t := range f.targets() {
		d := filepath.Dir(t)
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func (f *File) event(ev fsnotify.Event, now time.Time) bool {
	name := filepath.Clean(ev.Name)
	for _, t := range f.targets() {
		if name == t || strings.HasPrefix(t, name+string(filepath.Separator)) {
			if f.pending == nil {
				f.pending = &pendingTree[fileStat]{}
			}
			f.pending.lastEvent = now
			return false
		}
	}
	return false
}

func (f *File) rescan(now time.Time) {
	if f.pending != nil {
		return
	}
	if st := statFile(f.path); st != f.seen {
		f.pending = &pendingTree[fileStat]{}
		f.pending.observe(st, now)
	}
}

func (f *File) check(now time.Time) {
	p := f.pending
	if p == nil {
		return
	}
	rescan, settle := p.step(now, f.s.quiet)
	if !rescan && !settle {
		return
	}
	st := statFile(f.path)
	if rescan || st != p.scan {
		p.observe(st, now)
		return
	}
	h, err := hashFile(f.path)
	if after := statFile(f.path); after != st {
		p.observe(after, now) // written while we read it: start over
		return
	}
	f.pending = nil
	f.seen = st
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return // nothing to load; compare with the last report when it comes back
	case err != nil:
		f.s.log.Warn("cannot read watched file", "err", err)
		return
	case f.hasHash && h == f.reported:
		return // same bytes: touch, or saved unchanged
	}
	f.reported, f.hasHash = h, true
	f.s.log.Debug("file changed")
	f.unsent = true
}

func (f *File) busy() bool { return f.pending != nil }

func (f *File) outbox() (struct{}, bool) { return struct{}{}, f.unsent }

func (f *File) delivered() { f.unsent = false }

func hashFile(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	fh, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return sum, fmt.Errorf("read %s: %w", path, err)
	}
	h.Sum(sum[:0])
	return sum, nil
}
