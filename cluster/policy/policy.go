// Package policy reads the cluster's traffic policy file (routing.toml): the configured
// traffic split of each model and its rollout definitions, and answers route.Splits by
// combining the two, a rollout in progress taking precedence over the configured split of its
// model. The file is separate from inferd.toml because it is a list of tables per model, is
// meant to be identical on every node (a configuration management tool distributes it), and
// changes far more often than the daemon's own settings.
//
// The package parses and combines; it neither gossips nor routes.
package policy

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/cluster/route"
	"github.com/inferd/inferd/internal/tomlx"
)

// SplitConfig is one [[split]] table.
type SplitConfig struct {
	Model        string         `toml:"model"`
	StickyHeader string         `toml:"sticky_header"`
	Targets      []TargetConfig `toml:"targets"`
}

// TargetConfig is one entry of a split's targets.
type TargetConfig struct {
	Version string  `toml:"version"`
	Node    string  `toml:"node"`
	Weight  float64 `toml:"weight"`
}

// File is the whole routing.toml.
type File struct {
	Split   []SplitConfig        `toml:"split"`
	Rollout []rollout.Definition `toml:"rollout"`
}

// Policy is a validated File.
type Policy struct {
	Splits   map[string]route.Split
	Rollouts []rollout.Definition
}

// Load reads and validates the file at path.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("routing policy: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a routing policy document; name prefixes its errors. Unknown keys are
// errors, and every problem found is reported at once.
func Parse(name string, data []byte) (*Policy, error) {
	var f File
	dec := toml.NewDecoder(strings.NewReader(string(data))).DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, describeTOMLError(name, err)
	}
	p := &Policy{Splits: map[string]route.Split{}, Rollouts: f.Rollout}
	var problems []error
	for i, s := range f.Split {
		where := fmt.Sprintf("%s: split[%d]", name, i)
		if s.Model == "" {
			problems = append(problems, fmt.Errorf("%s: model is empty", where))
			continue
		}
		where = fmt.Sprintf("%s (model %q)", where, s.Model)
		if _, dup := p.Splits[s.Model]; dup {
			problems = append(problems, fmt.Errorf("%s: a second split for the same model", where))
			continue
		}
		split := route.Split{StickyHeader: s.StickyHeader}
		for _, t := range s.Targets {
			split.Targets = append(split.Targets, route.Target(t))
		}
		if err := split.Validate(); err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", where, err))
			continue
		}
		p.Splits[s.Model] = split
	}
	if err := rollout.ValidateDefinitions(f.Rollout); err != nil {
		problems = append(problems, fmt.Errorf("%s: %w", name, err))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return p, nil
}

// describeTOMLError renders each of go-toml's problems as name:line:column: key: message.
func describeTOMLError(name string, err error) error {
	problems := tomlx.Problems(err)
	if problems == nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	errs := make([]error, len(problems))
	for i, p := range problems {
		if p.Key != "" {
			errs[i] = fmt.Errorf("%s:%d:%d: %s: %w", name, p.Line, p.Column, p.Key, p.Err)
		} else {
			errs[i] = fmt.Errorf("%s:%d:%d: %w", name, p.Line, p.Column, p.Err)
		}
	}
	return errors.Join(errs...)
}

// Models lists the models the policy names, sorted.
func (p *Policy) Models() []string {
	var out []string
	for m := range p.Splits {
		out = append(out, m)
	}
	for _, d := range p.Rollouts {
		if !slices.Contains(out, d.Model) {
			out = append(out, d.Model)
		}
	}
	slices.Sort(out)
	return out
}

// Weights is what a rollout says about a model right now (rollout.Controller satisfies it).
type Weights interface {
	VersionWeights(model string) ([]rollout.VersionWeight, bool)
}

// Splits answers route.Splits from the configured splits and the rollouts in progress: a model
// with rollout state is split between its stable and canary versions by the rollout's weights
// (keeping the configured split's sticky header); any other model by its configured split.
type Splits struct {
	policy  func() *Policy
	weights Weights
}

// NewSplits combines the current policy (a func, so a reload is seen at once) with rollouts.
// weights may be nil.
func NewSplits(policy func() *Policy, weights Weights) *Splits {
	return &Splits{policy: policy, weights: weights}
}

// Split implements route.Splits.
func (s *Splits) Split(model string) (route.Split, bool) {
	p := s.policy()
	configured, hasSplit := route.Split{}, false
	if p != nil {
		configured, hasSplit = p.Splits[model]
	}
	if s.weights != nil {
		if vw, ok := s.weights.VersionWeights(model); ok && len(vw) > 0 {
			out := route.Split{StickyHeader: configured.StickyHeader}
			for _, w := range vw {
				out.Targets = append(out.Targets, route.Target{Version: w.Version, Weight: w.Weight})
			}
			return out, true
		}
	}
	return configured, hasSplit
}
