// Command inferd is the inference appliance daemon and its command-line tools: serve runs the
// daemon, validate checks a configuration file, perf measures a server (or a model in-process),
// version says what was built.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand(os.Stdout, os.Stderr, os.Environ()).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "inferd:", err)
		os.Exit(1)
	}
}
