package policy

import (
	"strings"
	"testing"

	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/cluster/route"
)

const example = `
[[split]]
model = "mlp"
sticky_header = "X-Session"
targets = [ { version = "1", weight = 90 }, { version = "2", weight = 10 } ]

[[split]]
model = "ocr"
targets = [ { node = "edge-1", weight = 33.33 }, { node = "edge-2", weight = 33.33 }, { node = "edge-3", weight = 33.34 } ]

[[rollout]]
model = "resnet"
stable = "1"
canary = "2"
steps = [
  { set_weight = 10 },
  { pause = { duration = "10m" } },
  { analysis = { window = "1m", intervals = 3, max_error_rate = 0.01, min_requests = 200, failure_limit = 2 } },
]
`

func TestParse(t *testing.T) {
	p, err := Parse("routing.toml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Splits["mlp"]; got.StickyHeader != "X-Session" || len(got.Targets) != 2 || got.Targets[1] != (route.Target{Version: "2", Weight: 10}) {
		t.Errorf("mlp split = %+v", got)
	}
	if got := p.Splits["ocr"]; len(got.Targets) != 3 || got.Targets[2].Node != "edge-3" {
		t.Errorf("ocr split = %+v", got)
	}
	if len(p.Rollouts) != 1 || len(p.Rollouts[0].Steps) != 3 {
		t.Errorf("rollouts = %+v", p.Rollouts)
	}
	if got := strings.Join(p.Models(), ","); got != "mlp,ocr,resnet" {
		t.Errorf("Models() = %s", got)
	}
	if p, err := Parse("empty.toml", nil); err != nil || len(p.Splits) != 0 {
		t.Errorf("an empty file: %v, %v", p, err)
	}
}

func TestParseProblems(t *testing.T) {
	cases := []struct{ doc, want string }{
		{"[[split]]\nmodel = \"m\"\ntargets = [ { version = \"1\", weight = 90 } ]\n", "sum to 90"},
		{"[[split]]\nmodel = \"m\"\ntargets = [ { version = \"1\", wieght = 100 } ]\n", "wieght: toml: unknown field"},
		{"[[split]]\ntargets = [ { version = \"1\", weight = 100 } ]\n", "model is empty"},
		{"[[split]]\nmodel = \"m\"\ntargets = [ { version = \"1\", weight = 100 } ]\n[[split]]\nmodel = \"m\"\ntargets = [ { version = \"1\", weight = 100 } ]\n", "a second split"},
		{"[[split]]\nmodel = \"m\"\ntargets = [ { version = \"1\", weight = \"x\" } ]\n", "routing.toml:3"},
		{"[[rollout]]\nmodel = \"m\"\nstable = \"1\"\ncanary = \"1\"\nsteps = [ { set_weight = 10 } ]\n", "rollout"},
		{"[[split]\n", "routing.toml:1"},
		// every unknown key, not only the first
		{"[[split]]\nmodel = \"m\"\nbogus = 1\ntargets = [ { version = \"1\", wieght = 100 } ]\n", "routing.toml:4:30: split.wieght: toml: unknown field"},
	}
	for _, c := range cases {
		_, err := Parse("routing.toml", []byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want it to contain %q", c.doc, err, c.want)
		}
	}
}

type fakeWeights map[string][]rollout.VersionWeight

func (f fakeWeights) VersionWeights(model string) ([]rollout.VersionWeight, bool) {
	w, ok := f[model]
	return w, ok
}

func TestSplitsPreferRollout(t *testing.T) {
	p, err := Parse("routing.toml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	w := fakeWeights{
		"mlp":    {{Version: "1", Weight: 75}, {Version: "3", Weight: 25}},
		"resnet": {{Version: "1", Weight: 90}, {Version: "2", Weight: 10}},
	}
	s := NewSplits(func() *Policy { return p }, w)
	got, ok := s.Split("mlp")
	if !ok || got.StickyHeader != "X-Session" || got.Targets[1] != (route.Target{Version: "3", Weight: 25}) {
		t.Errorf("mlp during a rollout = %+v, %v; want the rollout's weights with the configured sticky header", got, ok)
	}
	if got, ok := s.Split("ocr"); !ok || len(got.Targets) != 3 {
		t.Errorf("ocr = %+v, %v; want the configured split", got, ok)
	}
	if got, ok := s.Split("resnet"); !ok || got.Targets[0].Weight != 90 {
		t.Errorf("resnet = %+v, %v", got, ok)
	}
	if _, ok := s.Split("other"); ok {
		t.Error("a model without split or rollout has a split")
	}
	if _, ok := NewSplits(func() *Policy { return nil }, nil).Split("mlp"); ok {
		t.Error("no policy gives a split")
	}
}
