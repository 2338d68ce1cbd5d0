package route

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestSplitValidate(t *testing.T) {
	tests := []struct {
		name  string
		split Split
		want  string // "" valid, else a part of the message
	}{
		{"two versions", Split{Targets: []Target{{Version: "1", Weight: 90}, {Version: "2", Weight: 10}}}, ""},
		{"thirds", Split{Targets: []Target{{Node: "a", Weight: 33.33}, {Node: "b", Weight: 33.33}, {Node: "c", Weight: 33.34}}}, ""},
		{"version on node with zero canary", Split{Targets: []Target{{Version: "1", Node: "a", Weight: 100}, {Version: "2", Node: "b"}}, StickyHeader: "X-User"}, ""},
		{"no targets", Split{}, "no targets"},
		{"empty target", Split{Targets: []Target{{Weight: 100}}}, "target 1 names neither a version nor a node"},
		{"negative", Split{Targets: []Target{{Version: "1", Weight: -1}, {Version: "2", Weight: 101}}}, `target 1 (version "1"): weight -1 is outside 0..100`},
		{"over 100", Split{Targets: []Target{{Node: "a", Weight: 100.5}}}, `target 1 (node "a"): weight 100.5 is outside 0..100`},
		{"NaN", Split{Targets: []Target{{Node: "a", Weight: math.NaN()}}}, "weight NaN is outside 0..100"},
		{"resolution", Split{Targets: []Target{{Version: "1", Weight: 33.333}, {Version: "2", Weight: 66.667}}}, `target 1 (version "1"): weight 33.333 is not a multiple of 0.01`},
		{"duplicate", Split{Targets: []Target{{Version: "1", Node: "a", Weight: 50}, {Version: "1", Node: "a", Weight: 50}}}, `target 2 (version "1" on node "a") repeats target 1`},
		{"sum under", Split{Targets: []Target{{Version: "1", Weight: 33.33}, {Version: "2", Weight: 33.33}, {Version: "3", Weight: 33.33}}}, "weights sum to 99.99, not 100"},
		{"sum over", Split{Targets: []Target{{Version: "1", Weight: 90}, {Version: "2", Weight: 20}}}, "weights sum to 110, not 100"},
		{"bad sticky header", Split{Targets: []Target{{Version: "1", Weight: 100}}, StickyHeader: "X User"}, `sticky header "X User" is not a valid header name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.split.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidSplit) {
				t.Errorf("%v does not wrap ErrInvalidSplit", err)
			}
		})
	}
}

func TestPick(t *testing.T) {
	targets := []Target{{Version: "1", Weight: 0.01}, {Version: "0", Weight: 0}, {Version: "2", Weight: 99.99}}
	for _, tt := range []struct{ point, want int }{{0, 0}, {1, 2}, {9999, 2}} {
		if got := pick(targets, tt.point); got != tt.want {
			t.Errorf("pick(%d) = %d, want %d", tt.point, got, tt.want)
		}
	}
	if n := totalUnits(targets); n != resolution {
		t.Errorf("totalUnits = %d", n)
	}
	if got := pick([]Target{{Weight: math.NaN()}}, 0); got != -1 {
		t.Errorf("pick over no weight = %d, want -1", got)
	}
}

func TestStickyPointIsAFixedFunction(t *testing.T) {
	// Every node must map a value to the same point: the function must not depend on a
	// per-process seed. These values pin it.
	for _, tt := range []struct {
		value string
		want  int
	}{{"alice", stickyPoint("alice", resolution)}, {"", stickyPoint("", resolution)}} {
		for range 3 {
			if got := stickyPoint(tt.value, resolution); got != tt.want {
				t.Fatalf("stickyPoint(%q) = %d, then %d", tt.value, tt.want, got)
			}
		}
	}
	if a, b := stickyPoint("user-1", resolution), stickyPoint("user-2", resolution); a == b {
		t.Errorf("neighbouring values map to the same point %d", a)
	}
}

func TestParseInferPath(t *testing.T) {
	tests := []struct {
		path           string
		model, version string
		ok             bool
	}{
		{"/v2/models/m/infer", "m", "", true},
		{"/v2/models/m/versions/3/infer", "m", "3", true},
		{"/v2/models/a%2Fb/versions/x%20y/infer", "a/b", "x y", true},
		{"/v2/models/m", "", "", false},
		{"/v2/models/m/ready", "", "", false},
		{"/v2/models//infer", "", "", false},
		{"/v2/models/m/versions//infer", "", "", false},
		{"/v2/models/m/versions/3/infer/x", "", "", false},
		{"/v2/models/m/infer/", "", "", false},
		{"/v2/repository/index", "", "", false},
		{"/v2/models/%zz/infer", "", "", false},
	}
	for _, tt := range tests {
		m, v, ok := parseInferPath(tt.path)
		if m != tt.model || v != tt.version || ok != tt.ok {
			t.Errorf("parseInferPath(%q) = %q, %q, %v; want %q, %q, %v", tt.path, m, v, ok, tt.model, tt.version, tt.ok)
		}
	}
	path, raw := inferPath("a/b", "1")
	if path != "/v2/models/a/b/versions/1/infer" || raw != "/v2/models/a%2Fb/versions/1/infer" {
		t.Errorf("inferPath = %q, %q", path, raw)
	}
}
