// Command inferd is the inference appliance daemon and its command-line tools: serve runs the
// daemon, validate checks a configuration file, perf measures a server (or a model in-process),
// version says what was built; members and rollout show and steer a cluster, keygen writes its
// gossip key.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand(os.Stdout, os.Stderr, os.Environ()).Execute(); err != nil {
		var code exitCode
		if errors.As(err, &code) {
			os.Exit(int(code)) // a worker's status, which the daemon reads; it has logged why
		}
		fmt.Fprintln(os.Stderr, "inferd:", err)
		os.Exit(1)
	}
}
