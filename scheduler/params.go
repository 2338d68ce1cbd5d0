package scheduler

import (
	"fmt"
	"math"
	"time"
)

// The reserved request parameters that the scheduler reads. Front ends pass a request's
// parameter map to SetParameters; the range a priority must be in depends on the model
// version's policy and is checked when the request is queued (Policy.level). Both report
// ErrInvalidRequest, so that a front end maps every invalid scheduling parameter alike.
const (
	// ParamPriority is the request's priority level, 1 = highest (0 or absent: the policy's
	// default).
	ParamPriority = "priority"
	// ParamTimeout bounds the request's time in the queue, in microseconds as Triton's
	// "timeout" (0 or absent: the policy's default).
	ParamTimeout = "timeout"
)

// maxTimeoutMicros caps a timeout where time.Duration would overflow; a wait that long is
// "forever" in practice.
const maxTimeoutMicros = uint64(time.Duration(1<<62) / time.Microsecond)

// maxPriority caps a priority far above any policy's levels, so that int conversion cannot
// wrap; the queue then refuses it with the model's levels in the message.
const maxPriority = 1 << 30

// SetParameters sets req's Priority and Timeout from an inference request's parameters. Each
// must be a non-negative integer: JSON numbers arrive as float64 (integral, at most 2^53), a
// binary protocol's integer parameters as int64 or uint64. Other keys are not the scheduler's
// and are left alone. Errors wrap ErrInvalidRequest and name the parameter and its value.
func (req *Request) SetParameters(params map[string]any) error {
	if v, ok := params[ParamPriority]; ok {
		n, err := nonNegativeInt(ParamPriority, v)
		if err != nil {
			return err
		}
		req.Priority = int(min(n, maxPriority))
	}
	if v, ok := params[ParamTimeout]; ok {
		n, err := nonNegativeInt(ParamTimeout, v)
		if err != nil {
			return err
		}
		req.Timeout = time.Duration(min(n, maxTimeoutMicros)) * time.Microsecond
	}
	return nil
}

func nonNegativeInt(name string, v any) (uint64, error) {
	switch n := v.(type) {
	case float64:
		if n >= 0 && n == math.Trunc(n) && n <= 1<<53 {
			return uint64(n), nil
		}
	case int64:
		if n >= 0 {
			return uint64(n), nil
		}
	case uint64:
		return n, nil
	}
	return 0, fmt.Errorf("%w: %q must be a non-negative integer, got %v", ErrInvalidRequest, name, v)
}

// level is the priority level req is queued at under p (a normalized policy), and checks the
// fields SetParameters cannot: the level must be one of p's, the timeout not negative (a
// caller that fills Request itself may set either).
func (p *Policy) level(req *Request) (int, error) {
	prio := req.Priority
	if prio == 0 {
		prio = p.DefaultPriority
	}
	if prio < 1 || prio > p.PriorityLevels {
		return 0, fmt.Errorf("%w: priority %d; this model has levels 1 (highest) to %d", ErrInvalidRequest, req.Priority, p.PriorityLevels)
	}
	if req.Timeout < 0 {
		return 0, fmt.Errorf("%w: negative timeout %s", ErrInvalidRequest, req.Timeout)
	}
	return prio, nil
}
