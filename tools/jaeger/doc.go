// Package jaeger pins the Jaeger all-in-one binary used by the tracing e2e
// test (make jaeger builds it into build/jaeger). It is its own module so the
// daemon's go.mod and make vulncheck do not carry Jaeger's dependency tree.
package jaeger
