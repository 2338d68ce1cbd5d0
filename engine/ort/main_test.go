package ort_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
)

// libPath is the ONNX Runtime library the tests load. These tests are about that library, so a
// missing one fails the run (run scripts/fetch-ort.sh or set INFERD_ONNXRUNTIME_LIBRARY) rather
// than skipping.
var libPath string

func TestMain(m *testing.M) {
	path, tried, err := ort.FindLibrary("", nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "engine/ort: %v\n(tried %v)\n", err, tried)
		os.Exit(1)
	}
	libPath = path
	os.Exit(m.Run())
}

func newRuntime(t testing.TB) *ort.Runtime {
	t.Helper()
	rt, err := ort.New(ort.RuntimeOptions{LibraryPath: libPath}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("ort.New: %v", err)
	}
	t.Cleanup(func() {
		if err := rt.Close(); err != nil {
			t.Errorf("Runtime.Close: %v", err)
		}
	})
	return rt
}

// writeModel writes model bytes to a file in a temp dir and returns its path.
func writeModel(t testing.TB, name string, model []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".onnx")
	if err := os.WriteFile(path, model, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func openModel(t testing.TB, rt *ort.Runtime, name string, model []byte) engine.Session {
	t.Helper()
	s, err := rt.Open(context.Background(), writeModel(t, name, model), engine.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("Open(%s): %v", name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
