package ort

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// EnvLibrary is the environment variable that names the ONNX Runtime library.
const EnvLibrary = "INFERD_ONNXRUNTIME_LIBRARY"

// SystemLibraryDir is where the .deb and .rpm install the library.
const SystemLibraryDir = "/usr/lib/inferd"

// CUDAProviderLibrary is ONNX Runtime's CUDA execution provider; ORT loads it (and
// sharedProviderLibrary) from the directory of libonnxruntime.so when a session asks for CUDA.
const CUDAProviderLibrary = "libonnxruntime_providers_cuda.so"

const sharedProviderLibrary = "libonnxruntime_providers_shared.so"

// libraryNames are the file names looked for in each directory, best first.
var libraryNames = [...]string{"libonnxruntime.so.1", "libonnxruntime.so"}

// FindLibrary returns the ONNX Runtime shared library to load and every path it tried, in
// order. An explicit path (from config) or INFERD_ONNXRUNTIME_LIBRARY (read with getenv; nil
// means os.Getenv) is used alone: when it names no file that is an error, not a reason to look
// elsewhere, so a typo never loads some other library. Otherwise it looks in
//
//  1. /usr/lib/inferd (libonnxruntime.so.1, then libonnxruntime.so),
//  2. the running executable's directory, then its ../lib/inferd,
//  3. build/onnxruntime in the nearest directory above the working directory that holds a
//     go.mod (a developer's checkout, after scripts/fetch-ort.sh).
//
// The error wraps ErrLibrary and lists every path tried.
func FindLibrary(explicit string, getenv func(string) string) (string, []string, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	s := searcher{
		getenv:     getenv,
		systemDirs: []string{SystemLibraryDir},
		executable: os.Executable,
		getwd:      os.Getwd,
	}
	return s.find(explicit)
}

// searcher holds FindLibrary's view of the machine, so that tests can point it at temp dirs.
type searcher struct {
	getenv     func(string) string
	systemDirs []string
	executable func() (string, error)
	getwd      func() (string, error)
}

func (s searcher) find(explicit string) (string, []string, error) {
	var tried []string
	try := func(path string) bool {
		tried = append(tried, path)
		st, err := os.Stat(path)
		return err == nil && st.Mode().IsRegular()
	}
	for _, fixed := range []struct{ path, from string }{
		{explicit, "configured"},
		{s.getenv(EnvLibrary), EnvLibrary},
	} {
		if fixed.path == "" {
			continue
		}
		if try(fixed.path) {
			return fixed.path, tried, nil
		}
		return "", tried, fmt.Errorf("%w: %s library %s is not a readable file", ErrLibrary, fixed.from, fixed.path)
	}
	for _, dir := range s.dirs() {
		for _, name := range libraryNames {
			if p := filepath.Join(dir, name); try(p) {
				return p, tried, nil
			}
		}
	}
	return "", tried, fmt.Errorf("%w: libonnxruntime.so not found (set %s or engine.onnxruntime_library); tried %s",
		ErrLibrary, EnvLibrary, strings.Join(tried, ", "))
}

// dirs lists the directories searched when nothing names the library, best first: the system
// directory, next to the binary, then the build folder of the source tree the binary or the
// working directory lies in.
func (s searcher) dirs() []string {
	dirs := append([]string(nil), s.systemDirs...)
	var starts []string
	if exe, err := s.executable(); err == nil {
		dir := filepath.Dir(exe)
		dirs = append(dirs, dir, filepath.Join(dir, "..", "lib", "inferd"))
		starts = append(starts, dir)
	}
	if wd, err := s.getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, start := range starts {
		if root, ok := moduleRoot(start); ok && !slices.Contains(dirs, filepath.Join(root, "build", "onnxruntime")) {
			dirs = append(dirs, filepath.Join(root, "build", "onnxruntime"))
		}
	}
	return dirs
}

// moduleRoot walks up from dir to the nearest directory holding go.mod.
func moduleRoot(dir string) (string, bool) {
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		if filepath.Dir(dir) == dir {
			return "", false
		}
	}
}
