package ort

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/internal/testmodels"
)

func inputNames(sig engine.Signature) []string {
	var out []string
	for _, in := range sig.Inputs {
		out = append(out, in.Name)
	}
	return out
}

// TestInspectionIsReadOncePerFile: a version's Inspect and the Opens of its instances read the
// graph's declarations once; a file replaced by rename or rewritten in place is read afresh,
// and a file that failed is not remembered.
func TestInspectionIsReadOncePerFile(t *testing.T) {
	lib, _, err := FindLibrary("", nil)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(RuntimeOptions{LibraryPath: lib}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "model.onnx")
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reads := func() int {
		rt.inspected.mu.Lock()
		defer rt.inspected.mu.Unlock()
		return rt.inspected.reads
	}
	inspectAndOpen := func(want []string, instances int) {
		t.Helper()
		sig, err := rt.Inspect(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		if got := inputNames(sig); !slices.Equal(got, want) {
			t.Fatalf("inputs %v, want %v", got, want)
		}
		sig.Inputs[0].Shape[0] = 12345 // the caller owns its copy: the cache must not see this
		for range instances {
			s, err := rt.Open(t.Context(), path, engine.Options{IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			if got := inputNames(s.Signature()); !slices.Equal(got, want) {
				t.Fatalf("session inputs %v, want %v", got, want)
			}
			if d := s.Signature().Inputs[0].Shape[0]; d == 12345 {
				t.Fatal("a caller's change to its signature reached the cache")
			}
			s.Close()
		}
	}

	write("model.onnx", testmodels.AddConst(1))
	inspectAndOpen([]string{"input"}, 3)
	if n := reads(); n != 1 {
		t.Fatalf("Inspect and three Opens of one file read it %d times, want 1", n)
	}

	write("next.onnx", testmodels.MultiIO())
	if err := os.Rename(filepath.Join(dir, "next.onnx"), path); err != nil {
		t.Fatal(err)
	}
	inspectAndOpen([]string{"x", "y"}, 1)
	if n := reads(); n != 2 {
		t.Fatalf("after a rename over the file: %d reads, want 2", n)
	}

	write("model.onnx", testmodels.AddConst(2)) // in place: same inode, new times
	inspectAndOpen([]string{"input"}, 1)
	if n := reads(); n != 3 {
		t.Fatalf("after a rewrite in place: %d reads, want 3", n)
	}

	write("model.onnx", []byte("not a model"))
	for range 2 {
		if _, err := rt.Inspect(t.Context(), path); err == nil {
			t.Fatal("Inspect of a corrupt file succeeded")
		}
	}
	if n := reads(); n != 5 {
		t.Fatalf("a corrupt file inspected twice: %d reads, want 5 (failures are not kept)", n)
	}
}
