package rollout

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

func TestValidate(t *testing.T) {
	good := Analysis{Window: Duration(time.Minute), MaxErrorRate: ptr(0.01)}
	base := func(mod func(*Definition)) Definition {
		d := Definition{Model: "m", Stable: "1", Canary: "2", Steps: []Step{weightStep(10), pauseStep(0)}}
		mod(&d)
		return d
	}
	tests := []struct {
		name   string
		def    Definition
		fields []string // FieldError.Field of each problem, in order
	}{
		{"valid canary", base(func(*Definition) {}), nil},
		{"valid blue-green without steps", Definition{Model: "m", Strategy: StrategyBlueGreen, Stable: "b", Canary: "g"}, nil},
		{"valid blue-green with verification", Definition{Model: "m", Strategy: StrategyBlueGreen, Stable: "b", Canary: "g",
			Steps: []Step{pauseStep(time.Minute), analysisStep(good)}}, nil},
		{"valid weights at the edges", base(func(d *Definition) {
			d.Steps = []Step{weightStep(0), weightStep(0.01), weightStep(99.99), weightStep(100)}
		}), nil},
		{"empty names", Definition{Steps: []Step{weightStep(1)}}, []string{"model", "stable", "canary"}},
		{"long model", base(func(d *Definition) { d.Model = string(make([]byte, 256)) }), []string{"model"}},
		{"same versions", base(func(d *Definition) { d.Canary = "1" }), []string{"canary"}},
		{"unknown strategy", base(func(d *Definition) { d.Strategy = "linear" }), []string{"strategy"}},
		{"canary without steps", base(func(d *Definition) { d.Steps = nil }), []string{"steps"}},
		{"too many steps", base(func(d *Definition) { d.Steps = slices.Repeat([]Step{pauseStep(0)}, maxSteps) }), []string{"steps"}},
		{"empty step", base(func(d *Definition) { d.Steps = []Step{{}} }), []string{"steps[0]"}},
		{"two kinds in a step", base(func(d *Definition) { d.Steps = []Step{{SetWeight: ptr(1.0), Pause: &Pause{}}} }), []string{"steps[0]"}},
		{"weights out of range", base(func(d *Definition) {
			d.Steps = []Step{weightStep(-1), weightStep(100.5), weightStep(math.NaN()), weightStep(math.Inf(1)), weightStep(12.345)}
		}), []string{"steps[0].set_weight", "steps[1].set_weight", "steps[2].set_weight", "steps[3].set_weight", "steps[4].set_weight"}},
		{"negative pause", base(func(d *Definition) { d.Steps = []Step{pauseStep(-time.Second)} }), []string{"steps[0].pause.duration"}},
		{"blue-green with a weight", Definition{Model: "m", Strategy: StrategyBlueGreen, Stable: "b", Canary: "g",
			Steps: []Step{weightStep(50)}}, []string{"steps[0].set_weight"}},
		{"analysis without thresholds or window", base(func(d *Definition) { d.Steps = []Step{analysisStep(Analysis{})} }),
			[]string{"steps[0].analysis.window", "steps[0].analysis"}},
		{"analysis out of range", base(func(d *Definition) {
			d.Steps = []Step{weightStep(5), analysisStep(Analysis{
				Window: Duration(500 * time.Millisecond), MaxErrorRate: ptr(5.0), MaxP99Latency: Duration(-1),
				MaxMeanLatency: Duration(-1), MinRequests: -1, Intervals: -1, FailureLimit: -1, InconclusiveLimit: -1,
			})}
		}), []string{"steps[1].analysis.window", "steps[1].analysis.max_error_rate", "steps[1].analysis.max_p99_latency",
			"steps[1].analysis.max_mean_latency", "steps[1].analysis.min_requests", "steps[1].analysis.intervals",
			"steps[1].analysis.failure_limit", "steps[1].analysis.inconclusive_limit"}},
		{"failure limit beyond intervals", base(func(d *Definition) {
			a := good
			a.Intervals, a.FailureLimit = 2, 3
			d.Steps = []Step{analysisStep(a)}
		}), []string{"steps[0].analysis.failure_limit"}},
		{"failure limit beyond the default interval", base(func(d *Definition) {
			a := good
			a.FailureLimit = 2
			d.Steps = []Step{analysisStep(a)}
		}), []string{"steps[0].analysis.failure_limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.def.Validate()
			var got []string
			for _, e := range flatten(err) {
				var fe *FieldError
				if !errors.As(e, &fe) || !errors.Is(e, ErrInvalid) {
					t.Fatalf("problem %v is not a *FieldError wrapping ErrInvalid", e)
				}
				got = append(got, fe.Field)
			}
			if !slices.Equal(got, tt.fields) {
				t.Errorf("fields %q, want %q\n%v", got, tt.fields, err)
			}
			if _, herr := tt.def.Hash(); (herr == nil) != (tt.fields == nil) {
				t.Errorf("Hash error %v, Validate error %v", herr, err)
			}
		})
	}
}

// flatten lists the problems of an errors.Join.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestFieldErrorMessage(t *testing.T) {
	d := Definition{Model: "resnet", Stable: "1", Canary: "2", Steps: []Step{analysisStep(Analysis{Window: Duration(time.Minute), MaxErrorRate: ptr(1.5)})}}
	want := `rollout "resnet": steps[0].analysis.max_error_rate: 1.5 is outside 0..1 (a fraction, not percent)`
	if err := d.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant        %s", err, want)
	}
	if err := ValidateDefinitions([]Definition{d, d}); len(flatten(err)) != 3 {
		t.Errorf("two bad duplicates: %v, want 3 problems", err)
	}
}

// The TOML shape documented in the package comment decodes into valid definitions.
func TestDecodeTOML(t *testing.T) {
	const doc = `
[[rollout]]
model  = "resnet"
stable = "1"
canary = "2"
steps = [
  { set_weight = 10 },
  { pause = { duration = "10m" } },
  { analysis = { window = "1m", intervals = 3, max_error_rate = 0.01, max_p99_latency = "250ms", min_requests = 200, failure_limit = 2 } },
  { set_weight = 50 },
  { pause = {} },                   # until promoted
]

[[rollout]]
model    = "ocr"
strategy = "blue_green"
stable   = "blue"
canary   = "green"
`
	var cfg struct {
		Rollout []Definition `toml:"rollout"`
	}
	if err := toml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := ValidateDefinitions(cfg.Rollout); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rollout) != 2 || len(cfg.Rollout[0].Steps) != 5 {
		t.Fatalf("decoded %+v", cfg.Rollout)
	}
	s := cfg.Rollout[0].Steps
	a := s[2].Analysis
	if *s[0].SetWeight != 10 || s[1].Pause.Duration != Duration(10*time.Minute) || s[4].Pause == nil || s[4].Pause.Duration != 0 ||
		a.Window != Duration(time.Minute) || a.MaxP99Latency != Duration(250*time.Millisecond) || *a.MaxErrorRate != 0.01 ||
		a.Intervals != 3 || a.MinRequests != 200 || a.FailureLimit != 2 {
		t.Errorf("steps decoded as %+v, analysis %+v", s, a)
	}
	var bad struct {
		Rollout []Definition `toml:"rollout"`
	}
	if err := toml.Unmarshal([]byte("[[rollout]]\nsteps = [{ pause = { duration = \"soon\" } }]\n"), &bad); err == nil {
		t.Error("a malformed duration decoded")
	}
}

// The hash identifies what the rollout does: defaults written out do not change it, any
// change to versions or steps does.
func TestHash(t *testing.T) {
	a := Analysis{Window: Duration(time.Minute), MaxErrorRate: ptr(0.1)}
	explicit := a
	explicit.Intervals, explicit.FailureLimit = 1, 1
	d := Definition{Model: "m", Stable: "1", Canary: "2", Steps: []Step{weightStep(10), analysisStep(a)}}
	same := Definition{Model: "m", Strategy: StrategyCanary, Stable: "1", Canary: "2", Steps: []Step{weightStep(10), analysisStep(explicit)}}
	h1, err := d.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if h2, _ := same.Hash(); h2 != h1 {
		t.Errorf("defaults changed the hash: %s vs %s", h1, h2)
	}
	other := d
	other.Steps = []Step{weightStep(20), analysisStep(a)}
	if h3, _ := other.Hash(); h3 == h1 {
		t.Error("a different weight has the same hash")
	}
	if len(h1) != 2*hashBytes || !isLowerHex(h1) {
		t.Errorf("hash %q", h1)
	}
}
