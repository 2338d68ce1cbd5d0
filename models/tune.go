package models

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
	"github.com/inferd/inferd/tuning"
)

// Tuning is how a version's configuration was chosen, as the config endpoint and the log show
// it.
type Tuning struct {
	// Source is "auto" (calibration chose) or "model.toml" (the configuration as written).
	Source         string `json:"source"`
	Instances      int    `json:"instances"`
	IntraOpThreads int    `json:"intra_op_threads"`
	// BatchTarget is the batch size aimed for at the load the choice was made for
	// (max_batch_size rows in flight); the batcher moves it with the load it sees.
	BatchTarget int `json:"batch_target"`
	// Batching says where max_batch_size came from: "model.toml", "default" (every input and
	// output has a variable first dimension), or "off: <why>".
	Batching string `json:"batching"`
	// Reason says why this configuration, in a sentence.
	Reason string `json:"reason"`
	// Cached: the profile came from the state directory (no calibration ran).
	Cached bool `json:"cached"`
	// CalibrationMillis is how long calibration ran (0 when cached or not calibrated).
	CalibrationMillis float64 `json:"calibration_ms"`
	// Profile is every measured point: the service time of one run per candidate and batch.
	Profile []ProfilePoint `json:"profile,omitempty"`

	// service is the chosen curve's time of one run by batch size (index b-1), handed to the
	// scheduler; nil when not calibrated.
	service []time.Duration
	// latencyBudget is [tuning] latency_budget, handed to the scheduler.
	latencyBudget time.Duration
}

// ProfilePoint is one measured point of a calibration.
type ProfilePoint struct {
	Instances      int     `json:"instances"`
	IntraOpThreads int     `json:"intra_op_threads"`
	Batch          int     `json:"batch"`
	ServiceMicros  float64 `json:"service_us"`
	RowsPerSecond  float64 `json:"rows_per_second"`
	Error          string  `json:"error,omitempty"`
}

// TuningEnv is what calibration needs from the daemon: where profiles are kept, and what
// identifies the machine and the runtime in a profile's key.
type TuningEnv struct {
	Store    *tuning.Store
	Hardware string
	Runtime  string
}

// SetTuning sets where profiles are kept and what they are keyed by; without it nothing is
// kept and every load calibrates.
func (r *Repository) SetTuning(env TuningEnv) {
	r.loadMu.Lock()
	r.tuning = env
	r.loadMu.Unlock()
}

// errNotCalibrated: calibration cannot run for this version (inputs cannot be made up from its
// shapes); it serves as written.
var errNotCalibrated = errors.New("not calibrated")

// defaultBatching applies the batching default to v once its signature is known: a model.toml
// that does not write max_batch_size gets [scheduler] default_max_batch_size only if every
// input and output has a variable first dimension, and no batching otherwise.
func defaultBatching(v *Version, log *slog.Logger) {
	switch {
	case v.Config.set.maxBatchSize:
		v.Tuning.Batching = "model.toml"
	case v.Config.MaxBatchSize == 0:
		v.Tuning.Batching = "off: [scheduler] default_max_batch_size is 0"
	default:
		for _, group := range [][]tensor.Spec{v.Signature.Inputs, v.Signature.Outputs} {
			for _, s := range group {
				if len(s.Shape) == 0 || s.Shape[0] >= 0 {
					v.Config.MaxBatchSize = 0
					v.Tuning.Batching = fmt.Sprintf("off: %q has shape %s, no variable first dimension", s.Name, tensor.FormatShape(s.Shape))
					log.Info("batching off", "reason", v.Tuning.Batching)
					return
				}
			}
		}
		v.Tuning.Batching = "default"
		log.Info("batching on by default: every input and output has a variable first dimension", "max_batch_size", v.Config.MaxBatchSize)
	}
}

// calibrates reports whether v's configuration is chosen by calibration.
func (r *Repository) calibrates(v *Version) bool {
	return v.Config.Tuning.auto() && r.calibrationTime(v) > 0
}

func (r *Repository) calibrationTime(v *Version) time.Duration {
	if r.cur.Defaults.CalibrationTime == 0 {
		return 0 // off node-wide
	}
	return cmp.Or(time.Duration(v.Config.Tuning.CalibrationTime), r.cur.Defaults.CalibrationTime)
}

// tuningLimits are what bound the choice for v: the cores (or max_cores), the batch size, the
// latency budget, min and max instances, and whatever model.toml pins.
func (r *Repository) tuningLimits(v *Version) tuning.Limits {
	c := v.Config
	l := tuning.Limits{
		Cores:         r.cur.Defaults.Cores,
		MaxBatch:      max(c.MaxBatchSize, 1),
		LatencyBudget: time.Duration(c.Tuning.LatencyBudget),
		MinInstances:  c.Tuning.MinInstances,
		MaxInstances:  c.Tuning.MaxInstances,
	}
	if c.Tuning.MaxCores > 0 {
		l.Cores = min(l.Cores, c.Tuning.MaxCores)
	}
	if c.set.count {
		l.Instances = c.Instance.Count
	}
	if c.set.intraOpThreads && c.Instance.IntraOpThreads > 0 {
		l.Threads = c.Instance.IntraOpThreads
	} else if t := r.cur.Defaults.IntraOpThreads; t > 0 {
		l.Threads = t // [engine] intra_op_threads, set node-wide
	}
	return l
}

// openTunedLocked opens v's CPU instances in the configuration calibration chooses: from the
// profile kept for the same model file, settings, hardware and runtime if there is one, or
// else by calibrating in v's host within the calibration time (the sessions calibration opened
// for the chosen configuration are kept). When calibration cannot run or no configuration it
// measured fits, v is opened as written and Tuning says why. Caller holds loadMu.
func (r *Repository) openTunedLocked(ctx context.Context, v *Version, path string, cpu engine.Options, log *slog.Logger) error {
	written := func(reason string) error { return r.openWrittenLocked(ctx, v, path, cpu, reason) }
	limits := r.tuningLimits(v)
	batches := tuning.BatchSizes(limits.MaxBatch)
	rng := rand.New(rand.NewPCG(uint64(v.Number), 2))
	memLimit, err := r.memoryLimitLocked(v)
	if err != nil {
		return err
	}
	inputs := func(b int) ([]tensor.Tensor, error) {
		if err := checkWarmupBytes(v, int64(b), memLimit); err != nil {
			return nil, err
		}
		return warmupInputs(v, int64(b), true, rng)
	}
	if _, err := inputs(1); err != nil {
		return written(fmt.Sprintf("%v: %v", errNotCalibrated, err))
	}
	candidates := tuning.Candidates(limits)
	env := r.tuning
	key, err := tuning.Key(path, fmt.Sprintf("max_batch_size=%d inputs=%v inter_op=%d candidates=%v batches=%v interference=%.2f",
		v.Config.MaxBatchSize, v.Config.Inputs, cpu.InterOpThreads, candidates, batches, r.cur.Defaults.CalibrationInterference), env.Hardware, env.Runtime)
	if err != nil {
		return err
	}
	open := func(ctx context.Context, threads int) (engine.Session, error) {
		o := cpu
		o.IntraOpThreads = threads
		return v.host.Open(ctx, path, o)
	}

	prof, cached, err := env.Store.Load(key)
	if err != nil {
		log.Warn("calibration profile unreadable: calibrating again", "err", err)
	}
	pool := &tuning.Pool{}
	if !cached {
		plan := tuning.Plan{Candidates: candidates, Batches: batches, Inputs: inputs, Budget: r.calibrationTime(v),
			Interference: r.cur.Defaults.CalibrationInterference, Cores: limits.Cores}
		if prof, pool, err = tuning.Calibrate(ctx, open, plan, log); err != nil {
			return fmt.Errorf("calibration: %w", err)
		}
		prof.Key = key
		if err := env.Store.Save(prof); err != nil {
			log.Warn("calibration profile not kept", "err", err)
		}
	}
	defer pool.Close()
	v.Tuning.Cached = cached
	if !cached {
		v.Tuning.CalibrationMillis = float64(prof.Took.Microseconds()) / 1000
	}
	v.Tuning.Profile = profilePoints(prof)

	d, err := tuning.Choose(prof, limits)
	if err != nil {
		log.Warn("calibration found no configuration: serving as written", "err", err)
		return written(err.Error())
	}
	curve, _ := prof.Curve(d.Candidate)
	v.Tuning.Source, v.Tuning.Reason = "auto", d.Reason
	v.Tuning.Instances, v.Tuning.IntraOpThreads, v.Tuning.BatchTarget = d.Instances, d.Threads, d.BatchTarget
	v.Tuning.service = curve.ServiceTimes(limits.MaxBatch)
	v.Tuning.latencyBudget = limits.LatencyBudget
	v.Sessions = pool.Take(d.Threads, d.Instances)
	for len(v.Sessions) < d.Instances {
		s, err := open(ctx, d.Threads)
		if err != nil {
			closeAll(v.Sessions)
			v.Sessions = nil
			return err
		}
		v.Sessions = append(v.Sessions, s)
	}
	v.Provider = v.Sessions[0].Provider()
	v.scale.open = func(ctx context.Context) (engine.Session, error) { return open(ctx, d.Threads) }
	log.Info("tuned", "instances", d.Instances, "intra_op_threads", d.Threads, "batch_target", d.BatchTarget,
		"cached", cached, "calibration_ms", v.Tuning.CalibrationMillis, "reason", d.Reason)
	return nil
}

// openWrittenLocked opens v's CPU instances as model.toml writes them ([instance] count of cpu
// each) and records why in v.Tuning. Caller holds loadMu.
func (r *Repository) openWrittenLocked(ctx context.Context, v *Version, path string, cpu engine.Options, reason string) error {
	n := v.Config.Instance.Count
	v.Tuning.Source, v.Tuning.Reason = "model.toml", reason
	v.Tuning.Instances, v.Tuning.IntraOpThreads = n, cpu.IntraOpThreads
	return r.openAll(ctx, v, path, slices.Repeat([]engine.Options{cpu}, n))
}

func profilePoints(p tuning.Profile) []ProfilePoint {
	var out []ProfilePoint
	for _, c := range p.Curves {
		if !c.Usable() {
			out = append(out, ProfilePoint{Instances: c.Instances, IntraOpThreads: c.Threads, Error: c.Err})
			continue
		}
		for _, pt := range c.Points {
			out = append(out, ProfilePoint{
				Instances: c.Instances, IntraOpThreads: c.Threads, Batch: pt.Batch,
				ServiceMicros: float64(pt.Service.Nanoseconds()) / 1000, RowsPerSecond: c.RowsPerSecond(pt.Batch),
			})
		}
	}
	return out
}
