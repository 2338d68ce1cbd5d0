package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/inferd/inferd/internal/tomlx"
)

// Strategies of a Definition.
const (
	StrategyCanary    = "canary"
	StrategyBlueGreen = "blue_green"
)

// Limits on a definition; records carry step indices, so they bound what a record may say too.
const (
	maxSteps     = 100
	maxNameBytes = 255 // cluster limits record keys to 255 bytes
	minWindow    = time.Second
)

// ErrInvalid is wrapped by every problem Validate reports (each a *FieldError).
var ErrInvalid = errors.New("invalid rollout definition")

// Definition is one model's rollout, as written in config (TOML) and compared between nodes by
// its hash. The json tags fix the hash input, so keep them stable.
type Definition struct {
	// Model is the model whose traffic is split.
	Model string `toml:"model" json:"model"`
	// Strategy is "canary" (the default when empty) or "blue_green".
	Strategy string `toml:"strategy" json:"strategy"`
	// Stable is the version that serves today; Canary the one being rolled out.
	Stable string `toml:"stable" json:"stable"`
	Canary string `toml:"canary" json:"canary"`
	// Steps run in order. A canary rollout needs at least one. A blue-green rollout's steps
	// run after its switch and may only be pauses and analyses.
	Steps []Step `toml:"steps" json:"steps"`
}

// Step is exactly one of SetWeight, Pause or Analysis.
type Step struct {
	// SetWeight is the canary's share of traffic in percent, 0 to 100 in steps of 0.01.
	SetWeight *float64  `toml:"set_weight" json:"set_weight,omitempty"`
	Pause     *Pause    `toml:"pause" json:"pause,omitempty"`
	Analysis  *Analysis `toml:"analysis" json:"analysis,omitempty"`
}

// Pause holds the rollout at its current weight.
type Pause struct {
	// Duration is how long; zero (or omitted: pause = {}) waits until promoted.
	Duration Duration `toml:"duration" json:"duration"`
}

// Analysis judges the canary version from request counters, one Window at a time.
type Analysis struct {
	// Window is the length of one interval (at least 1s).
	Window Duration `toml:"window" json:"window"`
	// Intervals is how many conclusive windows the step runs; 0 means 1.
	Intervals int `toml:"intervals" json:"intervals"`
	// MaxErrorRate is the highest passing share of failed requests, 0 to 1; unset = not judged.
	MaxErrorRate *float64 `toml:"max_error_rate" json:"max_error_rate,omitempty"`
	// MaxP99Latency is the highest passing 99th percentile latency; 0 = not judged. Needs
	// counters with a histogram.
	MaxP99Latency Duration `toml:"max_p99_latency" json:"max_p99_latency"`
	// MaxMeanLatency is the highest passing mean latency; 0 = not judged.
	MaxMeanLatency Duration `toml:"max_mean_latency" json:"max_mean_latency"`
	// MinRequests is the fewest requests a window needs to be conclusive.
	MinRequests int `toml:"min_requests" json:"min_requests"`
	// FailureLimit is how many failed windows abort the rollout; 0 means 1. At most Intervals.
	FailureLimit int `toml:"failure_limit" json:"failure_limit"`
	// InconclusiveLimit pauses the rollout after this many inconclusive windows in the step
	// (Promote skips the step, Abort aborts); 0 waits for traffic indefinitely.
	InconclusiveLimit int `toml:"inconclusive_limit" json:"inconclusive_limit"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "5m") in TOML and JSON;
// the type is the one every TOML file of inferd shares.
type Duration = tomlx.Duration

// FieldError is one problem with a Definition. Field is the TOML path inside the definition
// ("steps[2].analysis.window").
type FieldError struct {
	Model string
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("rollout %q: %s", e.Model, e.Msg)
	}
	return fmt.Sprintf("rollout %q: %s: %s", e.Model, e.Field, e.Msg)
}

// Unwrap makes every FieldError match ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Validate reports every problem with d at once (errors.Join of *FieldError), or nil.
func (d Definition) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Model: d.Model, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	checkName := func(field, v string) {
		switch {
		case v == "":
			bad(field, "must not be empty")
		case len(v) > maxNameBytes:
			bad(field, "longer than %d bytes", maxNameBytes)
		}
	}
	checkName("model", d.Model)
	checkName("stable", d.Stable)
	checkName("canary", d.Canary)
	if d.Stable != "" && d.Stable == d.Canary {
		bad("canary", "is the stable version %q; a rollout needs two versions", d.Stable)
	}
	switch d.Strategy {
	case "", StrategyCanary:
		if len(d.Steps) == 0 {
			bad("steps", "a canary rollout needs at least one step")
		}
	case StrategyBlueGreen:
	default:
		bad("strategy", "%q is not %q or %q", d.Strategy, StrategyCanary, StrategyBlueGreen)
	}
	if len(d.Steps) > maxSteps-1 {
		bad("steps", "%d steps; at most %d", len(d.Steps), maxSteps-1)
	}
	for i, s := range d.Steps {
		d.validateStep(fmt.Sprintf("steps[%d]", i), s, bad)
	}
	return errors.Join(errs...)
}

func (d Definition) validateStep(at string, s Step, bad func(field, format string, args ...any)) {
	var set []string
	if s.SetWeight != nil {
		set = append(set, "set_weight")
	}
	if s.Pause != nil {
		set = append(set, "pause")
	}
	if s.Analysis != nil {
		set = append(set, "analysis")
	}
	if len(set) != 1 {
		bad(at, "set exactly one of set_weight, pause, analysis (found %d: %v)", len(set), set)
		return
	}
	switch {
	case s.SetWeight != nil:
		w := *s.SetWeight
		switch {
		case d.Strategy == StrategyBlueGreen:
			bad(at+".set_weight", "a blue_green rollout switches to 100 by itself; its steps may only be pause and analysis")
		case math.IsNaN(w) || w < 0 || w > 100:
			bad(at+".set_weight", "%v is outside 0..100 (percent)", w)
		case math.Abs(w*100-math.Round(w*100)) > 1e-6:
			bad(at+".set_weight", "%v is finer than the 0.01 resolution", w)
		}
	case s.Pause != nil:
		if s.Pause.Duration < 0 {
			bad(at+".pause.duration", "%v is negative (omit it, or 0, to pause until promoted)", s.Pause.Duration)
		}
	case s.Analysis != nil:
		validateAnalysis(at+".analysis", *s.Analysis, bad)
	}
}

func validateAnalysis(at string, a Analysis, bad func(field, format string, args ...any)) {
	if time.Duration(a.Window) < minWindow {
		bad(at+".window", "%v is shorter than %v", a.Window, minWindow)
	}
	if a.MaxErrorRate == nil && a.MaxP99Latency == 0 && a.MaxMeanLatency == 0 {
		bad(at, "set at least one of max_error_rate, max_p99_latency, max_mean_latency")
	}
	if r := a.MaxErrorRate; r != nil && (math.IsNaN(*r) || *r < 0 || *r > 1) {
		bad(at+".max_error_rate", "%v is outside 0..1 (a fraction, not percent)", *r)
	}
	if a.MaxP99Latency < 0 {
		bad(at+".max_p99_latency", "%v is negative", a.MaxP99Latency)
	}
	if a.MaxMeanLatency < 0 {
		bad(at+".max_mean_latency", "%v is negative", a.MaxMeanLatency)
	}
	if a.MinRequests < 0 {
		bad(at+".min_requests", "%d is negative", a.MinRequests)
	}
	if a.Intervals < 0 {
		bad(at+".intervals", "%d is negative", a.Intervals)
	}
	if a.FailureLimit < 0 {
		bad(at+".failure_limit", "%d is negative", a.FailureLimit)
	}
	if a.InconclusiveLimit < 0 {
		bad(at+".inconclusive_limit", "%d is negative", a.InconclusiveLimit)
	}
	if a.Intervals >= 0 && a.FailureLimit >= 0 && a.failureLimit() > a.intervals() {
		bad(at+".failure_limit", "%d is more than intervals (%d), so it could never be reached", a.failureLimit(), a.intervals())
	}
}

func (a Analysis) intervals() int    { return max(a.Intervals, 1) }
func (a Analysis) failureLimit() int { return max(a.FailureLimit, 1) }

// ValidateDefinitions validates each definition and that no model has two.
func ValidateDefinitions(defs []Definition) error {
	var errs []error
	seen := map[string]int{}
	for i, d := range defs {
		if err := d.Validate(); err != nil {
			errs = append(errs, err)
		}
		if j, dup := seen[d.Model]; dup && d.Model != "" {
			errs = append(errs, &FieldError{Model: d.Model, Msg: "defined twice (rollouts " + strconv.Itoa(j) + " and " + strconv.Itoa(i) + ")"})
		}
		seen[d.Model] = i
	}
	return errors.Join(errs...)
}

// plan is a validated definition in the form the controller runs: defaults applied,
// blue-green expanded into its switch step, and the hash that records carry.
type plan struct {
	def   Definition
	steps []Step
	hash  string
}

func newPlan(d Definition) (*plan, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	n := Definition{Model: d.Model, Strategy: d.Strategy, Stable: d.Stable, Canary: d.Canary}
	if n.Strategy == "" {
		n.Strategy = StrategyCanary
	}
	if n.Strategy == StrategyBlueGreen {
		full := 100.0
		n.Steps = append(n.Steps, Step{SetWeight: &full})
	}
	for _, s := range d.Steps {
		if s.Analysis != nil {
			a := *s.Analysis
			a.Intervals, a.FailureLimit = a.intervals(), a.failureLimit()
			s.Analysis = &a
		}
		if s.SetWeight != nil {
			w := math.Round(*s.SetWeight*100) / 100
			s.SetWeight = &w
		}
		n.Steps = append(n.Steps, s)
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("rollout %q: hashing the definition: %w", d.Model, err)
	}
	sum := sha256.Sum256(b)
	return &plan{def: n, steps: n.Steps, hash: hex.EncodeToString(sum[:hashBytes])}, nil
}

// Hash is the definition's identity in records: equal for definitions that run the same
// rollout (defaults applied), different otherwise. It fails only on an invalid definition.
func (d Definition) Hash() (string, error) {
	p, err := newPlan(d)
	if err != nil {
		return "", err
	}
	return p.hash, nil
}
