package watch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
)

func TestFileScenarios(t *testing.T) {
	t.Parallel()
	type scenario struct {
		name   string
		change func(t *testing.T, dir, cfg string)
		want   int // reports
	}
	scenarios := []scenario{
		{"edit in place", func(t *testing.T, dir, cfg string) {
			f, err := os.OpenFile(cfg, os.O_WRONLY|os.O_TRUNC, 0)
			must(t, err)
			_, err = f.WriteString("level = \"debug\"\n")
			must(t, err)
			must(t, f.Close())
		}, 1},
		{"atomic rename replace", func(t *testing.T, dir, cfg string) {
			tmp := filepath.Join(dir, ".inferd.toml.swp")
			write(t, tmp, "level = \"warn\"\n")
			must(t, os.Rename(tmp, cfg))
		}, 1},
		{"touch without content change", func(t *testing.T, dir, cfg string) {
			later := time.Now().Add(time.Hour)
			must(t, os.Chtimes(cfg, later, later))
		}, 0},
		{"rewrite with identical bytes", func(t *testing.T, dir, cfg string) {
			write(t, cfg, "level = \"info\"\n")
		}, 0},
		{"other file in the directory", func(t *testing.T, dir, cfg string) {
			write(t, filepath.Join(dir, "other.toml"), "x")
		}, 0},
		{"deleted then restored unchanged", func(t *testing.T, dir, cfg string) {
			must(t, os.Remove(cfg))
			write(t, cfg, "level = \"info\"\n")
		}, 0},
	}
	for _, m := range modes {
		for _, sc := range scenarios {
			t.Run(m.name+"/"+sc.name, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				cfg := filepath.Join(dir, "inferd.toml")
				write(t, cfg, "level = \"info\"\n")
				_, rs := startFile(t, cfg, m.opts)
				sc.change(t, dir, cfg)
				if sc.want == 0 {
					rs.exactly(t, window(m.opts))
					return
				}
				rs.waitFor(t, "file")
				rs.exactly(t, window(m.opts), "file")
			})
		}
	}
}

// A systemd-style swap: the config path is a link, replaced by a new link to other content.
// Edits to the current target count; edits to the old target no longer do.
func TestFileSymlinkSwap(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.toml"), filepath.Join(dir, "b.toml")
			write(t, a, "version = 1\n")
			write(t, b, "version = 2\n")
			cfg := filepath.Join(dir, "inferd.toml")
			must(t, os.Symlink("a.toml", cfg))
			_, rs := startFile(t, cfg, m.opts)

			tmp := filepath.Join(dir, ".inferd.toml.new")
			must(t, os.Symlink("b.toml", tmp))
			must(t, os.Rename(tmp, cfg))
			rs.waitFor(t, "file")
			rs.exactly(t, window(m.opts), "file")

			write(t, a, "version = 10\n") // the old target: not the config any more
			rs.exactly(t, window(m.opts), "file")

			write(t, b, "version = 3\n") // the current target, edited in place
			rs.waitCount(t, "file", 2)
			rs.exactly(t, window(m.opts), "file", "file")
		})
	}
}

// A link in another directory: its directory is watched too.
func TestFileTargetInOtherDirectory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir, data := t.TempDir(), t.TempDir()
		target := filepath.Join(data, "real.toml")
		write(t, target, "v = 1\n")
		cfg := filepath.Join(dir, "inferd.toml")
		must(t, os.Symlink(target, cfg))
		fake := newFakeNotifier()
		f, err := NewFile(cfg, Options{Quiet: time.Second, Rescan: time.Hour}, testLogger(t, nil))
		must(t, err)
		f.newNotifier = func() (notifier, error) { return fake, nil }
		rs := collect(f.Changes(), func(struct{}) []string { return []string{"file"} })
		running(t, f.Run, rs)
		synctest.Wait()
		watches := fake.WatchList()
		if len(watches) != 2 || !(watches[0] == dir || watches[1] == dir) || !(watches[0] == data || watches[1] == data) {
			t.Fatalf("watches = %v, want %s and %s", watches, dir, data)
		}
		fake.events <- evt(filepath.Join(data, "unrelated"), fsnotify.Write)
		write(t, target, "v = 2\n")
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := rs.counts()["file"]; got != 0 {
			t.Fatalf("reported %d times on an unrelated event", got)
		}
		fake.events <- evt(target, fsnotify.Write)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := rs.counts()["file"]; got != 1 {
			t.Fatalf("reports = %d, want 1", got)
		}
	})
}

// The quiet rule for the file: a write in progress is not hashed and reported.
func TestFileQuietRule(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "inferd.toml")
	write(t, cfg, "a")
	f, err := NewFile(cfg, Options{Quiet: 2 * time.Second}, testLogger(t, nil))
	must(t, err)
	base := time.Unix(1_000_000, 0)
	content := "a"
	for i := range 6 {
		now := base.Add(time.Duration(i) * time.Second)
		content += "b"
		write(t, cfg, content)
		f.event(evt(cfg, fsnotify.Write), now)
		for c := time.Duration(0); c < time.Second; c += f.s.tick {
			f.check(now.Add(c))
			if f.unsent {
				t.Fatalf("reported during the write at +%v", now.Add(c).Sub(base))
			}
		}
	}
	for now := base.Add(6 * time.Second); now.Before(base.Add(10 * time.Second)); now = now.Add(f.s.tick) {
		f.check(now)
		if f.unsent {
			if d := now.Sub(base.Add(5 * time.Second)); d < f.s.quiet {
				t.Fatalf("reported %v after the last write, before quiet", d)
			}
			return
		}
	}
	t.Fatal("never reported")
}

func TestFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := NewFile(filepath.Join(dir, "missing", "inferd.toml"), Options{}, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: err = %v, want ErrNotExist", err)
	}
	if _, err := NewFile(filepath.Join(dir, "inferd.toml"), Options{}, nil); err != nil {
		t.Errorf("missing file in an existing directory: %v", err)
	}
	if _, err := NewFile(filepath.Join(dir, "inferd.toml"), Options{PollInterval: -time.Second}, nil); !errors.Is(err, ErrOptions) {
		t.Errorf("negative poll interval: err = %v, want ErrOptions", err)
	}
}
