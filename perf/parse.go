package perf

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrSyntax marks a flag value that does not parse.
var ErrSyntax = errors.New("invalid syntax")

// maxSweepSteps bounds the values one sweep expression may expand to.
const maxSweepSteps = 1024

// ParseSweep parses a list of positive integers: comma-separated items, each a number ("4"), a
// range "a:b" (a, a+1, ..., b), a range with a step "a:b:s" (a, a+s, ... up to b) or a
// geometric range "a:b:xf" (a, a·f, a·f², ... up to b). "1,4,16,64" and "1:64:x4" are equal.
// Values keep the order given; duplicates are dropped.
func ParseSweep(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	add := func(v int) error {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
		if len(out) > maxSweepSteps {
			return fmt.Errorf("%w: %q expands to more than %d values", ErrSyntax, s, maxSweepSteps)
		}
		return nil
	}
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: empty list", ErrSyntax)
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		parts := strings.Split(item, ":")
		if len(parts) > 3 {
			return nil, fmt.Errorf("%w: %q: a range is start:end[:step|:xfactor]", ErrSyntax, item)
		}
		start, err := positive(parts[0])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if len(parts) == 1 {
			if err := add(start); err != nil {
				return nil, err
			}
			continue
		}
		end, err := positive(parts[1])
		if err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if end < start {
			return nil, fmt.Errorf("%w: %q: end %d is below start %d", ErrSyntax, item, end, start)
		}
		next := func(v int) int { return v + 1 }
		if len(parts) == 3 {
			step, mul := parts[2], false
			if f, ok := strings.CutPrefix(step, "x"); ok {
				step, mul = f, true
			}
			n, err := positive(step)
			if err != nil {
				return nil, fmt.Errorf("%q: step: %w", item, err)
			}
			switch {
			case mul && n < 2:
				return nil, fmt.Errorf("%w: %q: a factor must be at least 2", ErrSyntax, item)
			case mul:
				next = func(v int) int { return v * n }
			default:
				next = func(v int) int { return v + n }
			}
		}
		for v := start; v <= end; v = next(v) {
			if err := add(v); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// maxSweepValue keeps products and sums in ParseSweep far from overflow.
const maxSweepValue = 1 << 20

func positive(s string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || v <= 0 || v > maxSweepValue {
		return 0, fmt.Errorf("%w: %q is not an integer in 1..%d", ErrSyntax, s, maxSweepValue)
	}
	return v, nil
}

// ParseShape parses a --shape value "name=d0,d1,..." into the input name and its shape. Every
// dimension must be positive (a tensor with no elements is never useful load and crashes some
// ORT kernels); "name=" is a scalar (rank 0).
func ParseShape(s string) (string, []int64, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 {
		return "", nil, fmt.Errorf("%w: shape %q: want name=d0,d1,...", ErrSyntax, s)
	}
	name, dims := s[:i], strings.TrimSpace(s[i+1:])
	shape := []int64{}
	if dims == "" {
		return name, shape, nil
	}
	for d := range strings.SplitSeq(dims, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(d), 10, 64)
		if err != nil || v <= 0 || v > 1<<31 {
			return "", nil, fmt.Errorf("%w: shape %q: dimension %q is not a positive integer", ErrSyntax, s, d)
		}
		shape = append(shape, v)
	}
	return name, shape, nil
}
