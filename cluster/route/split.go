package route

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ErrInvalidSplit is wrapped by every error of Split.Validate.
var ErrInvalidSplit = errors.New("invalid traffic split")

// Target is one share of a model's traffic.
type Target struct {
	// Version is the model version the share goes to; empty means whatever version the
	// chosen node serves by default.
	Version string
	// Node is the member name (cluster.Member.Name) the share goes to; empty means any node
	// that serves the version.
	Node string
	// Weight is the share in percent, 0 to 100 at 0.01 resolution. A zero weight keeps the
	// target configured but sends it nothing, failover included (an aborted canary).
	Weight float64
}

// Split is a model's configured traffic split. The weights of its targets sum to 100.
type Split struct {
	Targets []Target
	// StickyHeader names a request header whose value picks the target by hash, so that the
	// same value reaches the same target on every node for as long as the weights stay the
	// same. Empty, or a request without the header: the target is drawn at random.
	StickyHeader string
}

// resolution is the number of weight units in 100 percent (0.01 resolution).
const resolution = 10000

// Validate reports the first problem of the split: no targets, a target naming neither a
// version nor a node, a weight outside 0..100 or not a multiple of 0.01, the same target
// twice, weights not summing to 100, or a sticky header that is not a header name.
func (s Split) Validate() error {
	if len(s.Targets) == 0 {
		return fmt.Errorf("%w: no targets", ErrInvalidSplit)
	}
	type key struct{ version, node string }
	seen := make(map[key]int, len(s.Targets))
	total := 0
	for i, t := range s.Targets {
		name := describeTarget(i, t)
		if t.Version == "" && t.Node == "" {
			return fmt.Errorf("%w: %s names neither a version nor a node", ErrInvalidSplit, name)
		}
		if math.IsNaN(t.Weight) || t.Weight < 0 || t.Weight > 100 {
			return fmt.Errorf("%w: %s: weight %v is outside 0..100", ErrInvalidSplit, name, t.Weight)
		}
		units := math.Round(t.Weight * 100)
		if math.Abs(units-t.Weight*100) > 1e-6 {
			return fmt.Errorf("%w: %s: weight %v is not a multiple of 0.01", ErrInvalidSplit, name, t.Weight)
		}
		k := key{t.Version, t.Node}
		if j, dup := seen[k]; dup {
			return fmt.Errorf("%w: %s repeats target %d", ErrInvalidSplit, name, j+1)
		}
		seen[k] = i
		total += int(units)
	}
	if total != resolution {
		return fmt.Errorf("%w: weights sum to %s, not 100", ErrInvalidSplit, strconv.FormatFloat(float64(total)/100, 'f', -1, 64))
	}
	if s.StickyHeader != "" && !isToken(s.StickyHeader) {
		return fmt.Errorf("%w: sticky header %q is not a valid header name", ErrInvalidSplit, s.StickyHeader)
	}
	return nil
}

func describeTarget(i int, t Target) string {
	switch {
	case t.Version != "" && t.Node != "":
		return fmt.Sprintf("target %d (version %q on node %q)", i+1, t.Version, t.Node)
	case t.Version != "":
		return fmt.Sprintf("target %d (version %q)", i+1, t.Version)
	case t.Node != "":
		return fmt.Sprintf("target %d (node %q)", i+1, t.Node)
	}
	return fmt.Sprintf("target %d", i+1)
}

// isToken reports whether s is an RFC 9110 token, the syntax of a header name.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && c > 0x20 && containsByte("!#$%&'*+-.^_`|~", c):
		default:
			return false
		}
	}
	return s != ""
}

func containsByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

// units is a target's weight in 0.01 units; anything not positive (NaN included) is 0, so an
// unvalidated split cannot make the router misbehave.
func units(w float64) int {
	if !(w > 0) {
		return 0
	}
	return int(math.Round(min(w, 100) * 100))
}

// pick returns the index of the target whose cumulative weight range holds point, which is in
// [0, total of the weights); -1 when no target has weight.
func pick(targets []Target, point int) int {
	for i, t := range targets {
		w := units(t.Weight)
		if point < w {
			return i
		}
		point -= w
	}
	return -1
}

// totalUnits is the sum of the targets' weights in 0.01 units.
func totalUnits(targets []Target) int {
	n := 0
	for _, t := range targets {
		n += units(t.Weight)
	}
	return n
}

// stickyPoint maps a sticky header value to a point in [0, total). It is a fixed function of
// the value (FNV-1a, then the splitmix64 finalizer to spread close values), so every node maps
// a client to the same target.
func stickyPoint(value string, total int) int {
	x := uint64(14695981039346656037) // FNV-1a offset basis
	for i := 0; i < len(value); i++ {
		x ^= uint64(value[i])
		x *= 1099511628211
	}
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return int(x % uint64(total))
}
