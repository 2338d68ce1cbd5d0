package daemon

import (
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"runtime"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/grpcapi"
	"github.com/inferd/inferd/hostinfo"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/tuning"
)

// settings is everything the running daemon takes from one configuration. It is built once
// when that configuration takes effect (in New, and by each reload that applies one) and never
// changed after: a reload builds a new value and swaps it in with one atomic store, so every
// reader sees the old configuration or the new one, never a mix. Each consumer reads its own
// part through the getter it declares: api.Options.Settings, grpcapi.Options.Settings, models.NewWith and
// route.Options.MaxBodyBytes. What only a restart applies is in cfg at its running value
// (config.KeepRestartOnly), so the daemon's view of itself stays true.
type settings struct {
	cfg    *config.Config
	api    api.Settings
	grpc   grpcapi.Settings
	models models.Settings
	level  slog.Level // log.level; an invalid one never gets past config's validation
}

func newSettings(cfg *config.Config) *settings {
	s := &settings{
		cfg:  cfg,
		api:  api.Settings{MaxRequestBytes: cfg.Server.MaxRequestBytes, Limits: limits(cfg)},
		grpc: grpcapi.Settings{Limits: limits(cfg)},
		models: models.Settings{
			Root:              cfg.Models.Repository,
			Control:           cfg.Models.Control,
			Defaults:          defaults(cfg),
			GPUMemoryFraction: cfg.GPU.MemoryFraction,
		},
	}
	_ = s.level.UnmarshalText([]byte(cfg.Log.Level))
	return s
}

// setSettingsLocked puts s in force. The logger's level is the one setting outside the value:
// cmd builds the handler over a slog.LevelVar before the daemon exists, so it is set here, in
// the same step. Caller holds reloadMu (or is New).
func (d *Daemon) setSettingsLocked(s *settings) {
	d.settings.Store(s)
	if d.opts.LogLevel != nil {
		d.opts.LogLevel.Set(s.level)
	}
}

// bodyBytesInFlight is server.max_body_bytes_in_flight in force, for the body budget the API
// and the cluster's router share: 0 in the file is a quarter of the usable memory detected at
// start, at least server.max_request_bytes (so that one largest body always fits); with no
// memory detected, 0 stays unbounded.
func (d *Daemon) bodyBytesInFlight() int64 {
	return bodyBudgetBytes(d.settings.Load().cfg.Server, d.usableMemory)
}

func bodyBudgetBytes(s config.Server, usableMemory uint64) int64 {
	if s.MaxBodyBytesInFlight > 0 || usableMemory == 0 {
		return s.MaxBodyBytesInFlight
	}
	return max(int64(min(usableMemory/4, math.MaxInt64)), s.MaxRequestBytes)
}

// maxRequestBytes is server.max_request_bytes in force, for the cluster's router: the same
// limit the API applies, so a reload moves both.
func (d *Daemon) maxRequestBytes() int64 { return d.settings.Load().api.MaxRequestBytes }

// config is the configuration in force.
func (d *Daemon) config() *config.Config { return d.settings.Load().cfg }

// calibrationInterference is the share of each core that calibration keeps busy while it
// measures (tuning.Plan.Interference): about what the request path takes from a busy model on
// the cores it shares (docs/tuning.md shows what it changed in make bench).
const calibrationInterference = 0.15

func defaults(cfg *config.Config) models.Defaults {
	return models.Defaults{
		Instances:               cfg.Scheduler.DefaultInstances,
		MaxBatchSize:            cfg.Scheduler.DefaultMaxBatchSize,
		IntraOpThreads:          cfg.Engine.IntraOpThreads,
		InterOpThreads:          cfg.Engine.InterOpThreads,
		Cores:                   runtime.GOMAXPROCS(0),
		MaxQueueDelay:           cfg.Scheduler.MaxQueueDelay,
		AdaptiveDelay:           cfg.Scheduler.AdaptiveDelay,
		MaxQueueSize:            cfg.Scheduler.MaxQueueSize,
		DefaultTimeout:          cfg.Scheduler.DefaultTimeout,
		CalibrationTime:         cfg.Scheduler.CalibrationTime,
		CalibrationInterference: calibrationInterference,
		MaxMemoryBytes:          cfg.Engine.MaxMemoryBytes,
		LoadTimeout:             cfg.Engine.LoadTimeout,
		MaxRunTime:              cfg.Engine.MaxRunTime,
	}
}

// tuningEnv is where the repository keeps calibration profiles (server.state_dir/profiles)
// and what it keys them by: the CPU model and the cores this process may use, and the ONNX
// Runtime version.
func tuningEnv(cfg *config.Config, runtimeVersion string) models.TuningEnv {
	var store *tuning.Store
	if cfg.Server.StateDir != "" {
		store = tuning.NewStore(filepath.Join(cfg.Server.StateDir, "profiles"))
	}
	hw := fmt.Sprintf("cores=%d", runtime.GOMAXPROCS(0))
	if info, err := hostinfo.Detect(); err == nil {
		hw = fmt.Sprintf("cpu=%s threads=%d %s features=%v", info.CPU.Model, info.CPU.Threads, hw, info.CPU.Features)
	}
	return models.TuningEnv{Store: store, Hardware: hw, Runtime: runtimeVersion}
}
