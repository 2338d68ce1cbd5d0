package testmodels

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// These tests load every model with the real ONNX Runtime CPU library: the library is the point
// of the check, so a missing one fails the run rather than skipping it.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	lib, err := ortLibrary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testmodels:", err)
		return 1
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		fmt.Fprintf(os.Stderr, "testmodels: initializing ONNX Runtime from %s: %v\n", lib, err)
		return 1
	}
	code := m.Run()
	if err := ort.DestroyEnvironment(); err != nil {
		fmt.Fprintln(os.Stderr, "testmodels: destroying ONNX Runtime environment:", err)
		return 1
	}
	return code
}

// ortLibrary is $INFERD_ONNXRUNTIME_LIBRARY, else the library scripts/fetch-ort.sh fetches.
func ortLibrary() (string, error) {
	if lib := os.Getenv("INFERD_ONNXRUNTIME_LIBRARY"); lib != "" {
		return lib, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	lib := filepath.Join(root, "build", "onnxruntime", "libonnxruntime.so.1")
	if _, err := os.Stat(lib); err != nil {
		return "", fmt.Errorf("no ONNX Runtime library (run scripts/fetch-ort.sh or set INFERD_ONNXRUNTIME_LIBRARY): %w", err)
	}
	return lib, nil
}

// moduleRoot walks up from the working directory to the folder holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
