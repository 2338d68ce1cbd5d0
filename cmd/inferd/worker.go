package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/engine/worker"
)

// workerCommand is the hidden `inferd worker`: the daemon starts one per model version
// ([engine] isolation = "process") with its control socket on descriptor 3. It is not meant
// to be run by hand.
func workerCommand(env []string) *cobra.Command {
	var library string
	var memoryLimit int64
	cmd := &cobra.Command{
		Use:    "worker",
		Short:  "Serve one model version's sessions for the daemon (started by inferd serve)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Plain text on stderr: the daemon relays each line into its own log.
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			code := worker.Main(context.Background(), memoryLimit, func() (engine.Runtime, func() error, error) {
				rt, err := ort.New(ort.RuntimeOptions{LibraryPath: library, Getenv: lookup(env)}, log)
				if err != nil {
					return nil, nil, err
				}
				return rt, rt.Close, nil
			}, log)
			if code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&library, "onnxruntime-library", "", "the ONNX Runtime library")
	cmd.Flags().Int64Var(&memoryLimit, "memory-limit", 0, "RLIMIT_DATA in bytes; 0 for none")
	return cmd
}

// exitCode is an error that asks main for a particular exit status.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// isolatorFor chooses where model versions run: in worker processes started from this very
// binary (isolation = "process"), or in the daemon (nil: the daemon uses the runtime itself).
// With workers, one is started ahead at once, for the first load (see worker.Isolator's
// KeepSpare); the function returned ends it.
func isolatorFor(cfg *config.Config, library string, env []string, log *slog.Logger) (engine.Isolator, func(), error) {
	if cfg.Engine.Isolation != engine.IsolationProcess {
		return nil, func() {}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("engine.isolation = %q needs the daemon's own binary to start workers: %w", cfg.Engine.Isolation, err)
	}
	iso := &worker.Isolator{
		Path:      exe,
		Args:      []string{"worker", "--onnxruntime-library", library},
		Env:       workerEnv(env),
		Log:       log.With("component", "worker"),
		KeepSpare: spareWorkerIdle,
	}
	iso.Prestart()
	return iso, iso.Close, nil
}

// spareWorkerIdle is how long a worker started ahead waits for a load before it exits: long
// enough to carry a burst of loads (the daemon's start, a repository change), short enough that
// an idle daemon holds no worker it does not use.
const spareWorkerIdle = 10 * time.Second

// workerEnv passes the daemon's environment on, except what only the daemon should see
// (systemd's socket-activation and notify variables).
func workerEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		out = append(out, kv)
	}
	return out
}
