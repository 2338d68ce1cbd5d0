// Package buildinfo carries the version and revision stamped into the binary at link time
// (go build -ldflags "-X github.com/inferd/inferd/internal/buildinfo.version=... -X
// github.com/inferd/inferd/internal/buildinfo.revision=..."; the Makefile takes them from git
// describe and git rev-parse). It only reports; nothing writes them at run time.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// version and revision are set by the linker; "dev" and "" for plain go build.
var (
	version  = "dev"
	revision = ""
)

// Version is the inferd version.
func Version() string { return version }

// Revision is the commit inferd was built from: the linker's value, else the one the Go
// toolchain recorded (go build with VCS stamping), else "unknown".
func Revision() string {
	if revision != "" {
		return revision
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// GoVersion is the Go toolchain the binary was built with.
func GoVersion() string { return runtime.Version() }
