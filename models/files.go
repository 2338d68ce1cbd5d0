package models

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrFileRefused marks a file in the repository that the loader will not open: one whose
// symbolic links lead outside the repository root, or that is not a regular file (a FIFO, whose
// open would block the loader; a device; a directory).
var ErrFileRefused = errors.New("file refused")

// checkInRoot resolves path's symbolic links and refuses it when the result lies outside root
// (itself resolved, so that a root reached through a link still works). A link from one model
// to a file of another, inside the root, is allowed; a model.onnx linked to /etc/shadow or to a
// file outside the root is not read. It returns the resolved path. The check and the later
// open are two steps: whoever can swap links in the repository between them can already write
// model files there.
func checkInRoot(root, path string) (string, error) {
	realRoot, err := resolve(root)
	if err != nil {
		return "", fmt.Errorf("repository root %s: %w", root, err)
	}
	resolved, err := resolve(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if rel, err := filepath.Rel(realRoot, resolved); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %s leads to %s, outside the repository root %s", ErrFileRefused, path, resolved, realRoot)
	}
	return resolved, nil
}

// checkModelPath refuses a model file unless it is a regular file inside root (checkInRoot),
// without opening it.
func checkModelPath(root, path string) error {
	resolved, err := checkInRoot(root, path)
	if err != nil {
		return err
	}
	return checkRegular(path, resolved)
}

// checkRegular stats resolved (path's target) and refuses anything but a regular file.
func checkRegular(path, resolved string) error {
	fi, err := os.Stat(resolved)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is %s, not a regular file", ErrFileRefused, path, fileKind(fi.Mode()))
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// exists says whether path names anything, a dangling link included.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// resolve is path made absolute with its links resolved.
func resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}
