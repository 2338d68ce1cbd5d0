package models_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/inferd/inferd/internal/testutil"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tensor"
)

// TestLoadBounds checks that settings too large for the machine make the version UNAVAILABLE
// with the reason, before anything is allocated for them: warmup batch sizes over
// max_batch_size or whose inputs exceed the memory limit, and instance counts over what the
// cores or the memory limit allow.
func TestLoadBounds(t *testing.T) {
	cases := []struct {
		name, toml, reason string
	}{
		{"warmup batch over max_batch_size", "max_batch_size = 8\n[warmup]\nbatch_sizes = [1, 16]\n",
			"warmup.batch_sizes: 16 is more than max_batch_size 8"},
		{"absurd warmup batch", "max_batch_size = 1099511627776\n[warmup]\nbatch_sizes = [1099511627776]\n[limits]\nmax_memory_bytes = 1073741824\n",
			"more than the version's memory limit of 1.0 GiB"},
		{"warmup inputs over the memory limit", "max_batch_size = 1073741824\n[warmup]\nbatch_sizes = [1073741824]\n[limits]\nmax_memory_bytes = 1073741824\n",
			"the inputs at batch size 1073741824 need 8.0 GiB, more than the version's memory limit of 1.0 GiB"},
		{"instances over the cores", "[instance]\ncount = 40000\n",
			"instance.count 40000 is more than 4 per core on the 2 cores this process may use (8 at most)"},
		{"instances over the memory limit", "[instance]\ncount = 8\n[limits]\nmax_memory_bytes = 100\n",
			"instance count 8 needs about"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.add(t, "m", "1")
			testutil.WriteFile(t, f.dir, "m/model.toml", []byte(c.toml))
			f.sync(t)
			st, reason := state(f.repo, "m", "1")
			if st == "" { // settings refused before any version was looked at
				st, reason = state(f.repo, "m", "")
			}
			if st != models.StateUnavailable || !strings.Contains(reason, c.reason) {
				t.Errorf("%s %q, want UNAVAILABLE with %q", st, reason, c.reason)
			}
		})
	}
	// Within the bounds the same settings load.
	f := newFixture(t)
	f.add(t, "m", "1")
	testutil.WriteFile(t, f.dir, "m/model.toml", []byte("max_batch_size = 8\n[instance]\ncount = 8\n[warmup]\nbatch_sizes = [8]\n[limits]\nmax_memory_bytes = 1048576\n"))
	f.sync(t)
	if st, reason := state(f.repo, "m", "1"); st != models.StateReady {
		t.Errorf("within the bounds: %s %q", st, reason)
	}
}

// TestRefusedModelFiles checks that the loader never opens a model.onnx that leads outside the
// repository or is not a regular file, and says why; the model next to them still loads.
func TestRefusedModelFiles(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.onnx")
	if err := os.WriteFile(outside, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.add(t, "ok", "1")
	mkdir := func(rel string) string {
		p := filepath.Join(f.dir, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(target, rel string) {
		if err := os.Symlink(target, filepath.Join(f.dir, rel)); err != nil {
			t.Fatal(err)
		}
	}
	mkdir("out/1")
	link(outside, "out/1/model.onnx")
	mkdir("shadow/1")
	link("/etc/shadow", "shadow/1/model.onnx")
	elsewhere := t.TempDir() // a whole model directory elsewhere
	testutil.WriteFile(t, elsewhere, "1/model.onnx", []byte("elsewhere"))
	f.rt.Register(filepath.Join(elsewhere, "1", "model.onnx"), idSig, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil })
	link(elsewhere, "outdir")
	if err := syscall.Mkfifo(filepath.Join(mkdir("fifo/1"), "model.onnx"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkdir("dir/1/model.onnx")
	f.add(t, "fifotoml", "1")
	if err := syscall.Mkfifo(filepath.Join(f.dir, "fifotoml", "model.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.add(t, "inside", "1")
	if err := os.Remove(filepath.Join(f.dir, "inside", "1", "model.onnx")); err != nil {
		t.Fatal(err)
	}
	link(filepath.Join(f.dir, "ok", "1", "model.onnx"), "inside/1/model.onnx") // a link within the root is fine
	f.rt.Register(filepath.Join(f.dir, "inside", "1", "model.onnx"), idSig, func(in []tensor.Tensor) ([]tensor.Tensor, error) { return in, nil })

	f.sync(t)
	f.sync(t, "outdir") // as the watcher asks for it: a full Sync skips linked model directories
	for model, reason := range map[string]string{
		"out":      "outside the repository root",
		"shadow":   "outside the repository root",
		"fifo":     "is a FIFO, not a regular file",
		"dir":      "is a directory, not a regular file",
		"fifotoml": "model.toml is a FIFO, not a regular file",
	} {
		st, got := state(f.repo, model, "1")
		if st == "" {
			st, got = state(f.repo, model, "")
		}
		if st != models.StateUnavailable || !strings.Contains(got, reason) {
			t.Errorf("%s: %s %q, want UNAVAILABLE with %q", model, st, got, reason)
		}
	}
	found := false
	for _, e := range f.repo.Index() {
		if e.Name == "outdir" {
			found = found || strings.Contains(e.Reason, "outside the repository root")
			if e.State == models.StateReady {
				t.Errorf("a model directory linked outside the root loaded: %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("the index does not say model outdir is outside the root: %+v", f.repo.Index())
	}
	for _, model := range []string{"ok", "inside"} {
		if st, got := state(f.repo, model, "1"); st != models.StateReady {
			t.Errorf("%s: %s %q, want READY", model, st, got)
		}
	}
}
