package models

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/inferd/inferd/internal/tomlx"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/tensor"
)

// ConfigFile is the name of the optional per-model settings file.
const ConfigFile = "model.toml"

// ModelFile is the name of the model inside a version directory.
const ModelFile = "model.onnx"

// Devices a model may ask for.
const (
	DeviceCPU  = "cpu"
	DeviceGPU  = "gpu"
	DeviceAuto = "auto"
)

// Config is a model's settings: model.toml over the daemon's defaults.
type Config struct {
	// MaxBatchSize > 0 declares that dimension 0 of every input and output is the batch
	// dimension and bounds the rows one request (and later one batch) may carry; 0 means the
	// model is run exactly as its shapes say.
	MaxBatchSize int `toml:"max_batch_size" json:"max_batch_size"`
	// Instance says how many sessions each loaded version gets and where they run.
	Instance InstanceConfig `toml:"instance" json:"instance"`
	// VersionPolicy picks which numeric versions on disk are loaded.
	VersionPolicy VersionPolicy `toml:"version_policy" json:"version_policy"`
	// DynamicBatching tunes the batcher and the queue (with max_batch_size > 0 for batching;
	// the queue settings apply to every model).
	DynamicBatching BatchingConfig `toml:"dynamic_batching" json:"dynamic_batching"`
	// Inputs override dimensions the model leaves variable (for example a fixed image size).
	Inputs []TensorOverride `toml:"inputs" json:"inputs,omitempty"`
	// Warmup is run on every instance before a version becomes routable.
	Warmup WarmupConfig `toml:"warmup" json:"warmup"`
	// Limits bound what one version may take (its worker's memory, its load, one run).
	Limits LimitsConfig `toml:"limits" json:"limits"`
	// Tuning says whether and within what the version's configuration is chosen by
	// calibration (tune.go).
	Tuning TuningConfig `toml:"tuning" json:"tuning"`

	// set records which keys model.toml wrote itself (not the defaults): a key written pins
	// that dimension against the tuner, and an unwritten max_batch_size batches by default
	// only a model whose shapes allow it.
	set keysSet
}

// keysSet are the keys of model.toml that the tuner and the batching default respect.
type keysSet struct {
	maxBatchSize, count, intraOpThreads, maxQueueDelay bool
}

// TuningConfig is a model's [tuning] table.
type TuningConfig struct {
	// Auto lets calibration choose the instances, intra-op threads and batch target (unset:
	// true); false serves the configuration as written.
	Auto *bool `toml:"auto" json:"auto,omitempty"`
	// CalibrationTime bounds the calibration of one version; 0 takes [scheduler]
	// calibration_time.
	CalibrationTime Duration `toml:"calibration_time" json:"calibration_time"`
	// LatencyBudget bounds a request's time in the server: no batch target whose run, with the
	// run ahead of it, would take longer. 0: none.
	LatencyBudget Duration `toml:"latency_budget" json:"latency_budget"`
	// MinInstances and MaxInstances bound the instance count the tuner may choose (0: from
	// the cores).
	MinInstances int `toml:"min_instances" json:"min_instances,omitempty"`
	MaxInstances int `toml:"max_instances" json:"max_instances,omitempty"`
	// MaxCores caps instances × threads (0: the usable cores).
	MaxCores int `toml:"max_cores" json:"max_cores,omitempty"`
	// ScaleDownAfter is how long the load must leave an instance unneeded before it is closed
	// (instances follow the load, between min_instances and the calibrated count); unset:
	// DefaultScaleDownAfter; "0s" keeps the calibrated count.
	ScaleDownAfter *Duration `toml:"scale_down_after" json:"scale_down_after,omitempty"`
	// Weight is the model's share of the node's cores against other busy models (0: 1): busy
	// models of weights 3 and 1 get core time 3 : 1.
	Weight float64 `toml:"weight" json:"weight,omitempty"`
}

// DefaultScaleDownAfter is the quiet period after which an instance the load does not need is
// closed, when model.toml sets none: long enough that a pause between bursts keeps the
// instances, short enough that memory goes back within a minute of the load dropping.
const DefaultScaleDownAfter = 30 * time.Second

// scaleDownAfter is ScaleDownAfter with its default.
func (t TuningConfig) scaleDownAfter() time.Duration {
	if t.ScaleDownAfter == nil {
		return DefaultScaleDownAfter
	}
	return time.Duration(*t.ScaleDownAfter)
}

// auto reports whether the tuner chooses for this model.
func (t TuningConfig) auto() bool { return t.Auto == nil || *t.Auto }

func (t TuningConfig) validate(cores int) []error {
	var errs []error
	if t.CalibrationTime < 0 || t.LatencyBudget < 0 || t.MinInstances < 0 || t.MaxInstances < 0 || t.MaxCores < 0 || t.scaleDownAfter() < 0 || t.Weight < 0 {
		errs = append(errs, errors.New("tuning: calibration_time, latency_budget, min_instances, max_instances, max_cores, scale_down_after and weight must not be negative"))
	}
	if t.MinInstances > 0 && t.MaxInstances > 0 && t.MinInstances > t.MaxInstances {
		errs = append(errs, fmt.Errorf("tuning: min_instances %d is more than max_instances %d", t.MinInstances, t.MaxInstances))
	}
	if t.MaxCores > 0 && t.MinInstances > t.MaxCores {
		errs = append(errs, fmt.Errorf("tuning: min_instances %d cannot fit max_cores %d (one core per instance at least)", t.MinInstances, t.MaxCores))
	}
	if cores > 0 && t.MinInstances > InstancesPerCore*cores {
		errs = append(errs, fmt.Errorf("tuning: min_instances %d is more than %d per core on the %d cores this process may use", t.MinInstances, InstancesPerCore, cores))
	}
	return errs
}

// LimitsConfig is a model's [limits] table; zero values take the daemon's [engine] defaults.
type LimitsConfig struct {
	// MaxMemoryBytes caps the memory the version's worker may allocate (isolation = "process").
	MaxMemoryBytes int64 `toml:"max_memory_bytes" json:"max_memory_bytes"`
	// LoadTimeout bounds the load and warmup of a version; past it the version is UNAVAILABLE.
	LoadTimeout Duration `toml:"load_timeout" json:"load_timeout"`
	// MaxRunTime bounds one run (a batch); past it the run is stopped and its requests fail.
	MaxRunTime Duration `toml:"max_run_time" json:"max_run_time"`
}

func (l LimitsConfig) withDefaults(d Defaults) LimitsConfig {
	if l.MaxMemoryBytes == 0 {
		l.MaxMemoryBytes = d.MaxMemoryBytes
	}
	if l.LoadTimeout == 0 {
		l.LoadTimeout = Duration(d.LoadTimeout)
	}
	if l.MaxRunTime == 0 {
		l.MaxRunTime = Duration(d.MaxRunTime)
	}
	return l
}

// BatchingConfig is a model's [dynamic_batching] table; zero values take the daemon's
// [scheduler] defaults.
type BatchingConfig struct {
	// PreferredBatchSizes run at once when reached, without waiting for MaxQueueDelay.
	PreferredBatchSizes []int `toml:"preferred_batch_sizes" json:"preferred_batch_size,omitempty"`
	// MaxQueueDelay is how long the oldest request of a forming batch may wait ("2ms").
	MaxQueueDelay Duration `toml:"max_queue_delay" json:"max_queue_delay"`
	// AdaptiveDelay dispatches before MaxQueueDelay once the batch holds what the recent load
	// predicts; unset takes the daemon's [scheduler] adaptive_delay.
	AdaptiveDelay *bool `toml:"adaptive_delay" json:"adaptive_delay"`
	// MaxQueueSize bounds the waiting requests; more get 503 at once.
	MaxQueueSize int `toml:"max_queue_size" json:"max_queue_size"`
	// PriorityLevels is the number of request priority levels (1 = highest).
	PriorityLevels int `toml:"priority_levels" json:"priority_levels"`
	// DefaultPriority is the level of requests that ask for none.
	DefaultPriority int `toml:"default_priority" json:"default_priority_level"`
	// DefaultTimeout bounds the wait in the queue of requests that set no timeout.
	DefaultTimeout Duration `toml:"default_timeout" json:"default_timeout"`
}

// Duration is a time.Duration written as a Go duration string ("2ms") in model.toml; the
// type is the one every TOML file of inferd shares.
type Duration = tomlx.Duration

// InstanceConfig is the instance group of a model.
type InstanceConfig struct {
	// Count is the number of sessions per loaded version (0 = daemon default).
	Count int `toml:"count" json:"count"`
	// Device is "cpu" (the default), "gpu" or "auto". "gpu" runs every instance on a GPU that
	// placement admits it to (see package placement), or fails to load with the reason unless
	// CPUFallback allows the CPU; "auto" takes a GPU when one fits and the CPU otherwise. A
	// version that asked for a GPU and runs on the CPU says why (Version.Fallback).
	Device string `toml:"device" json:"device"`
	// GPUs lists the GPUs (NVML indices, as nvidia-smi numbers them) the model may use; empty
	// means any.
	GPUs []int `toml:"gpus" json:"gpus,omitempty"`
	// CPUFallback lets a device = "gpu" model run on the CPU when no GPU can take it.
	CPUFallback bool `toml:"cpu_fallback" json:"cpu_fallback"`
	// Spread places the instances on different GPUs where they fit, instead of all on one.
	Spread bool `toml:"spread" json:"spread,omitempty"`
	// GPUMemoryBytes is each instance's GPU memory estimate, for a model whose computed
	// estimate (weights + arena at max batch) is wrong; 0 computes it. It also caps the
	// instance's ORT arena.
	GPUMemoryBytes int64 `toml:"gpu_memory_bytes" json:"gpu_memory_bytes,omitempty"`
	// IntraOpThreads per session (0 = the daemon's setting, or else an even share of the cores
	// on the CPU and 1 on a GPU).
	IntraOpThreads int `toml:"intra_op_threads" json:"intra_op_threads"`
}

// VersionPolicy is one of: the newest Latest versions (default 1), All versions, or the
// Specific versions listed.
type VersionPolicy struct {
	Latest   int     `toml:"latest" json:"latest,omitempty"`
	All      bool    `toml:"all" json:"all,omitempty"`
	Specific []int64 `toml:"specific" json:"specific,omitempty"`
}

// TensorOverride fixes the shape of one input; every dimension must agree with the model's
// (equal, or variable in the model).
type TensorOverride struct {
	Name  string  `toml:"name" json:"name"`
	Shape []int64 `toml:"shape" json:"shape"`
}

// Defaults are the daemon-wide settings a model.toml may override.
type Defaults struct {
	Instances      int
	MaxBatchSize   int
	IntraOpThreads int
	InterOpThreads int
	// Cores is the number of CPUs the process may use, to share threads among instances.
	Cores int
	// MaxQueueDelay, MaxQueueSize and DefaultTimeout are the queue defaults.
	MaxQueueDelay  time.Duration
	AdaptiveDelay  bool
	MaxQueueSize   int
	DefaultTimeout time.Duration
	// CalibrationTime bounds the calibration of a version ([scheduler] calibration_time);
	// 0 turns calibration off node-wide: every model runs as written.
	CalibrationTime time.Duration
	// CalibrationInterference is the share of each core kept busy while calibration measures
	// (tuning.Plan.Interference): what the request path will take from the model when it
	// serves.
	CalibrationInterference float64
	// MaxMemoryBytes, LoadTimeout and MaxRunTime are the [limits] defaults ([engine] keys);
	// MaxMemoryBytes 0 means derived from the memory available when a version loads.
	MaxMemoryBytes int64
	LoadTimeout    time.Duration
	MaxRunTime     time.Duration
}

// ErrConfig marks an invalid model.toml.
var ErrConfig = errors.New("invalid model configuration")

// readConfig reads dir/model.toml (if any) over the defaults. Its results are named so that
// the deferred defaults reach what it returns (they were lost on every path before).
func readConfig(dir string, d Defaults) (c Config, err error) {
	c = Config{MaxBatchSize: d.MaxBatchSize, Instance: InstanceConfig{Count: d.Instances, Device: DeviceCPU}}
	defer func() {
		c.DynamicBatching = c.DynamicBatching.withDefaults(d)
		c.Limits = c.Limits.withDefaults(d)
	}()
	path := dir + "/" + ConfigFile
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return c.withPolicyDefault(), nil
	}
	if err := checkRegular(path, path); err != nil {
		// Never opened: a FIFO's open would block the loader.
		return c, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c.withPolicyDefault(), nil
	}
	if err != nil {
		return c, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: %s", ErrConfig, describeTOMLError(path, err))
	}
	c.set = keysWritten(data)
	if c.Instance.Count == 0 {
		c.Instance.Count = d.Instances
	}
	if c.Instance.Device == "" {
		c.Instance.Device = DeviceCPU
	}
	if err := c.validate(); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if err := c.Instance.checkCores(d.Cores); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if err := errors.Join(c.Tuning.validate(d.Cores)...); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return c.withPolicyDefault(), nil
}

// keysWritten reads which of the keys the tuner respects model.toml writes (data has been
// decoded strictly already).
func keysWritten(data []byte) keysSet {
	var probe struct {
		MaxBatchSize *int `toml:"max_batch_size"`
		Instance     struct {
			Count          *int `toml:"count"`
			IntraOpThreads *int `toml:"intra_op_threads"`
		} `toml:"instance"`
		DynamicBatching struct {
			MaxQueueDelay any `toml:"max_queue_delay"`
		} `toml:"dynamic_batching"`
	}
	_ = toml.Unmarshal(data, &probe)
	return keysSet{
		maxBatchSize:   probe.MaxBatchSize != nil,
		count:          probe.Instance.Count != nil,
		intraOpThreads: probe.Instance.IntraOpThreads != nil,
		maxQueueDelay:  probe.DynamicBatching.MaxQueueDelay != nil,
	}
}

// InstancesPerCore bounds [instance] count: at most this many instances per CPU the process may
// use. Each instance is an ONNX Runtime session with its own threads and a copy of the weights;
// past a few per core they only contend, and a count in the thousands is a typo that would
// exhaust threads and memory. The memory side is checked at load against the version's memory
// limit (checkModelFile).
const InstancesPerCore = 4

func (ic InstanceConfig) checkCores(cores int) error {
	if cores > 0 && ic.Count > InstancesPerCore*cores {
		return fmt.Errorf("instance.count %d is more than %d per core on the %d cores this process may use (%d at most)",
			ic.Count, InstancesPerCore, cores, InstancesPerCore*cores)
	}
	return nil
}

func (b BatchingConfig) withDefaults(d Defaults) BatchingConfig {
	if b.MaxQueueDelay == 0 {
		b.MaxQueueDelay = Duration(d.MaxQueueDelay)
	}
	if b.MaxQueueSize == 0 {
		b.MaxQueueSize = d.MaxQueueSize
	}
	if b.AdaptiveDelay == nil {
		adaptive := d.AdaptiveDelay
		b.AdaptiveDelay = &adaptive
	}
	if b.DefaultTimeout == 0 {
		b.DefaultTimeout = Duration(d.DefaultTimeout)
	}
	if b.PriorityLevels == 0 {
		b.PriorityLevels = 1
	}
	if b.DefaultPriority == 0 {
		b.DefaultPriority = (b.PriorityLevels + 1) / 2
	}
	return b
}

// schedulerPolicy maps the settings onto how the scheduler queues and batches the model's
// requests; it lives beside the settings it reads, so that a new batching key changes one file.
func (c Config) schedulerPolicy() scheduler.Policy {
	b := c.DynamicBatching
	return scheduler.Policy{
		MaxBatchSize:        c.MaxBatchSize,
		PreferredBatchSizes: b.PreferredBatchSizes,
		MaxQueueDelay:       time.Duration(b.MaxQueueDelay),
		AdaptiveDelay:       b.AdaptiveDelay != nil && *b.AdaptiveDelay,
		MaxQueueSize:        b.MaxQueueSize,
		PriorityLevels:      b.PriorityLevels,
		DefaultPriority:     b.DefaultPriority,
		DefaultTimeout:      time.Duration(b.DefaultTimeout),
		MaxRunTime:          time.Duration(c.Limits.MaxRunTime),
		Weight:              c.Tuning.Weight,
	}
}

func (c Config) withPolicyDefault() Config {
	if !c.VersionPolicy.All && c.VersionPolicy.Specific == nil && c.VersionPolicy.Latest == 0 {
		c.VersionPolicy.Latest = 1
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.MaxBatchSize < 0 {
		errs = append(errs, fmt.Errorf("max_batch_size %d must be >= 0", c.MaxBatchSize))
	}
	if c.Instance.Count < 1 {
		errs = append(errs, fmt.Errorf("instance.count %d must be >= 1", c.Instance.Count))
	}
	if !slices.Contains([]string{DeviceCPU, DeviceGPU, DeviceAuto}, c.Instance.Device) {
		errs = append(errs, fmt.Errorf("instance.device %q must be cpu, gpu or auto", c.Instance.Device))
	}
	errs = append(errs, c.Instance.validateGPU()...)
	if c.Instance.IntraOpThreads < 0 {
		errs = append(errs, fmt.Errorf("instance.intra_op_threads %d must be >= 0", c.Instance.IntraOpThreads))
	}
	p := c.VersionPolicy
	set := 0
	if p.Latest != 0 {
		set++
	}
	if p.All {
		set++
	}
	if p.Specific != nil {
		set++
	}
	if set > 1 {
		errs = append(errs, errors.New("version_policy: set only one of latest, all, specific"))
	}
	if p.Latest < 0 {
		errs = append(errs, fmt.Errorf("version_policy.latest %d must be >= 1", p.Latest))
	}
	for _, v := range p.Specific {
		if v < 1 {
			errs = append(errs, fmt.Errorf("version_policy.specific: version %d must be >= 1", v))
		}
	}
	b := c.DynamicBatching
	for _, p := range b.PreferredBatchSizes {
		if p < 1 || (c.MaxBatchSize > 0 && p > c.MaxBatchSize) {
			errs = append(errs, fmt.Errorf("dynamic_batching.preferred_batch_sizes: %d must be between 1 and max_batch_size %d", p, c.MaxBatchSize))
		}
	}
	if len(b.PreferredBatchSizes) > 0 && c.MaxBatchSize == 0 {
		errs = append(errs, errors.New("dynamic_batching.preferred_batch_sizes needs max_batch_size > 0"))
	}
	if b.MaxQueueDelay < 0 || b.DefaultTimeout < 0 || b.MaxQueueSize < 0 || b.PriorityLevels < 0 {
		errs = append(errs, errors.New("dynamic_batching: max_queue_delay, default_timeout, max_queue_size and priority_levels must not be negative"))
	}
	if b.DefaultPriority < 0 || (b.PriorityLevels > 0 && b.DefaultPriority > b.PriorityLevels) {
		errs = append(errs, fmt.Errorf("dynamic_batching.default_priority %d must be between 1 and priority_levels %d", b.DefaultPriority, max(b.PriorityLevels, 1)))
	}
	if l := c.Limits; l.MaxMemoryBytes < 0 || l.LoadTimeout < 0 || l.MaxRunTime < 0 {
		errs = append(errs, errors.New("limits: max_memory_bytes, load_timeout and max_run_time must not be negative"))
	}
	for _, b := range c.Warmup.BatchSizes {
		if c.MaxBatchSize > 0 && b > c.MaxBatchSize {
			errs = append(errs, fmt.Errorf("warmup.batch_sizes: %d is more than max_batch_size %d", b, c.MaxBatchSize))
		}
	}
	if err := c.Warmup.validate(); err != nil {
		errs = append(errs, err)
	}
	for _, o := range c.Inputs {
		if o.Name == "" {
			errs = append(errs, errors.New("inputs: an override needs a name"))
		}
		for _, d := range o.Shape {
			if d < -1 || d == 0 {
				errs = append(errs, fmt.Errorf("inputs %q: dimension %d must be positive or -1", o.Name, d))
			}
		}
	}
	return errors.Join(errs...)
}

// describeTOMLError renders go-toml's errors as file:line: message, one per problem.
func describeTOMLError(path string, err error) string {
	problems := tomlx.Problems(err)
	if problems == nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	lines := make([]string, len(problems))
	for i, p := range problems {
		if p.Unknown {
			lines[i] = fmt.Sprintf("%s:%d: unknown key %q", path, p.Line, p.Key)
		} else {
			lines[i] = fmt.Sprintf("%s:%d: %v", path, p.Line, p.Err)
		}
	}
	return strings.Join(lines, "; ")
}

// selectVersions applies the policy to the versions found on disk (sorted ascending) and
// returns the ones to load, ascending.
func (p VersionPolicy) selectVersions(onDisk []int64) []int64 {
	switch {
	case p.All:
		return onDisk
	case p.Specific != nil:
		var out []int64
		for _, v := range onDisk {
			if slices.Contains(p.Specific, v) {
				out = append(out, v)
			}
		}
		return out
	default:
		n := max(p.Latest, 1)
		if len(onDisk) <= n {
			return onDisk
		}
		return onDisk[len(onDisk)-n:]
	}
}

// effectiveSignature applies max_batch_size and the input overrides to the model's own
// signature. With batching on, dimension 0 of every input and output must be variable: it
// becomes the batch dimension (-1).
func (c Config) effectiveInputs(inputs []tensor.Spec) ([]tensor.Spec, error) {
	out := make([]tensor.Spec, len(inputs))
	for i, in := range inputs {
		in.Shape = slices.Clone(in.Shape)
		out[i] = in
	}
	for _, o := range c.Inputs {
		i := slices.IndexFunc(out, func(s tensor.Spec) bool { return s.Name == o.Name })
		if i < 0 {
			return nil, fmt.Errorf("%w: inputs override %q: the model has no such input", ErrConfig, o.Name)
		}
		if len(o.Shape) != len(out[i].Shape) {
			return nil, fmt.Errorf("%w: inputs override %q: shape %s has rank %d, the model's %s has rank %d",
				ErrConfig, o.Name, tensor.FormatShape(o.Shape), len(o.Shape), tensor.FormatShape(out[i].Shape), len(out[i].Shape))
		}
		for d, want := range o.Shape {
			have := out[i].Shape[d]
			if have >= 0 && want != have {
				return nil, fmt.Errorf("%w: inputs override %q: dimension %d is %d in the model, not %d",
					ErrConfig, o.Name, d, have, want)
			}
			out[i].Shape[d] = want
		}
	}
	return out, nil
}

func checkBatchDims(maxBatch int, specs []tensor.Spec, kind string) error {
	if maxBatch == 0 {
		return nil
	}
	for _, s := range specs {
		if len(s.Shape) == 0 || s.Shape[0] >= 0 {
			return fmt.Errorf("%w: max_batch_size %d needs a variable first (batch) dimension, but %s %q has shape %s",
				ErrConfig, maxBatch, kind, s.Name, tensor.FormatShape(s.Shape))
		}
	}
	return nil
}
