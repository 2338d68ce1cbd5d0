// Package buildinfo carries the version stamped into the binary at link time
// (go build -ldflags "-X github.com/inferd/inferd/internal/buildinfo.version=..."; the Makefile
// takes it from git describe). It only reports; nothing writes it at run time.
package buildinfo

import "runtime"

// version is set by the linker; "dev" for plain go build.
var version = "dev"

// Version is the inferd version.
func Version() string { return version }

// GoVersion is the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
