package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/engine/ort"
	"github.com/inferd/inferd/gpu"
	"github.com/inferd/inferd/internal/buildinfo"
	"github.com/inferd/inferd/logging"
)

// defaultConfigPath is where the packages install the configuration.
const defaultConfigPath = "/etc/inferd/inferd.toml"

func newRootCommand(stdout, stderr io.Writer, env []string) *cobra.Command {
	root := &cobra.Command{
		Use:           "inferd",
		Short:         "Serve ONNX models over the KServe v2 / Open Inference Protocol",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serveCommand(env), validateCommand(env), versionCommand(env), devicesCommand(env), perfCommand(env))
	root.AddCommand(membersCommand(env), rolloutCommand(env), keygenCommand(), workerCommand(env))
	root.AddCommand(statusCommand(env))
	root.AddCommand(deployCommand(env), undeployCommand(env))
	return root
}

func serveCommand(env []string) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path, env)
			if err != nil {
				return err
			}
			level := new(slog.LevelVar)
			log := newLogger(cmd.ErrOrStderr(), cfg.Log, level)
			slog.SetDefault(log)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return serve(ctx, cfg, path, env, level, log)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", defaultConfigPath, "configuration file")
	return cmd
}

func serve(ctx context.Context, cfg *config.Config, path string, env []string, level *slog.LevelVar, log *slog.Logger) error {
	library, _, err := ort.FindLibrary(cfg.Engine.OnnxRuntimeLibrary, lookup(env))
	if err != nil {
		return err
	}
	// The isolator comes first: the worker it starts ahead for the first load then starts while
	// the daemon loads its own runtime.
	iso, closeIso, err := isolatorFor(cfg, library, env, log)
	if err != nil {
		return err
	}
	defer closeIso()
	rt, err := ort.New(ort.RuntimeOptions{LibraryPath: library, Getenv: lookup(env)}, log.With("component", "engine"))
	if err != nil {
		return err
	}
	defer rt.Close()
	sm, err := fromServiceManager(lookup(env), log)
	if err != nil {
		return err
	}
	defer sm.close()
	engineState := api.Component{State: "ok", Detail: map[string]string{
		"runtime": "onnxruntime " + rt.Version(), "library": rt.LibraryPath(), "providers": strings.Join(rt.Providers(), ","),
	}}
	cudaInPCIOrder(env)
	gpus := gpu.New(gpu.Options{InitRetry: cfg.GPU.InitRetry, Getenv: lookup(env)}, log.With("component", "gpu"))
	defer gpus.Close()
	d, err := daemon.New(cfg, daemon.Options{
		Isolator:       iso,
		Version:        buildinfo.Version(),
		Revision:       buildinfo.Revision(),
		RuntimeVersion: rt.Version(),
		Runtime:        rt,
		Components: func() map[string]api.Component {
			return map[string]api.Component{"engine": engineState}
		},
		Notify:        notifySystemd,
		ConfigPath:    path,
		Env:           env,
		LogLevel:      level,
		Listener:      sm.listener,
		Watchdog:      sm.watchdog,
		StopHeartbeat: sm.stopHeartbeat,
		GPU:           gpus,
	}, log)
	if err != nil {
		return err
	}
	// systemctl reload sends SIGHUP.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: reloading the configuration")
				_ = d.Reload(ctx)
			case <-ctx.Done():
				return
			}
		}
	}()
	return d.Run(ctx)
}

// notifySystemd sends state to $NOTIFY_SOCKET; without one (not under systemd) it does nothing.
func notifySystemd(state string) error {
	_, err := sdaemon.SdNotify(false, state)
	return err
}

func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.Level)) // validated by config
	level.Set(l)
	if log, ok := journalLogger(w, level); ok {
		return slog.New(logging.TraceContext(log.Handler()))
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(logging.TraceContext(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(logging.TraceContext(slog.NewTextHandler(w, opts)))
}

func validateCommand(env []string) *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a configuration file and list every problem with file:line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0], env)
			var problems *config.Problems
			if errors.As(err, &problems) {
				fmt.Fprintln(cmd.ErrOrStderr(), problems.Error())
				return fmt.Errorf("%s: %d problem(s)", args[0], len(problems.List))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (listen %s, repository %s)\n", args[0], cfg.Server.Listen, cfg.Models.Repository)
			return nil
		},
	}
}

func versionCommand(env []string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of inferd and where its ONNX Runtime library is",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "inferd %s (revision %s, %s, %s/%s)\n", buildinfo.Version(), buildinfo.Revision(), buildinfo.GoVersion(), runtime.GOOS, runtime.GOARCH)
			lib, tried, err := ort.FindLibrary("", lookup(env))
			if err != nil {
				fmt.Fprintf(out, "onnxruntime: not found (looked in %s)\n", strings.Join(tried, ", "))
				return nil
			}
			fmt.Fprintf(out, "onnxruntime: %s\n", lib)
			return nil
		},
	}
}

// cudaInPCIOrder makes CUDA number GPUs as NVML does (and nvidia-smi, and model.toml's gpus):
// by PCI bus rather than fastest first, unless the environment says otherwise. Call it before
// CUDA starts.
func cudaInPCIOrder(env []string) {
	if lookup(env)("CUDA_DEVICE_ORDER") == "" {
		_ = os.Setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
	}
}

// lookup turns an environment list into a getenv function.
func lookup(env []string) func(string) string {
	return func(key string) string {
		for _, kv := range env {
			if k, v, ok := strings.Cut(kv, "="); ok && k == key {
				return v
			}
		}
		return ""
	}
}
