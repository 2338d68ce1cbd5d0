package tuning

import (
	"fmt"
	"slices"
	"time"
)

// Candidate is one configuration of a model version: Instances sessions of Threads intra-op
// threads each.
type Candidate struct {
	Instances int `json:"instances"`
	Threads   int `json:"intra_op_threads"`
}

// Cores is how many cores the candidate keeps busy when every instance runs.
func (c Candidate) Cores() int { return c.Instances * c.Threads }

func (c Candidate) String() string { return fmt.Sprintf("%d×%d", c.Instances, c.Threads) }

// Point is one measured batch size of a candidate.
type Point struct {
	Batch int `json:"batch"`
	// Service is the median time of one run of Batch rows on one instance while every instance
	// of the candidate runs at once.
	Service time.Duration `json:"service_ns"`
}

// Curve is what calibration measured for one candidate: service time by batch size.
type Curve struct {
	Candidate
	// Points are ascending by batch size, without repeats.
	Points []Point `json:"points,omitempty"`
	// Err says why the candidate cannot be used (its sessions failed to open, a run failed or
	// ran out of memory); such a curve has no points and is never chosen.
	Err string `json:"error,omitempty"`
}

// Usable reports whether the curve can be chosen.
func (c Curve) Usable() bool { return c.Err == "" && len(c.Points) > 0 }

// Service is the time one run of batch rows takes on one instance: measured where batch was
// measured, interpolated linearly between measured sizes, and beyond the largest measured size
// extrapolated at the per-row cost of the last two points (a larger batch never costs less).
// Zero for an unusable curve.
func (c Curve) Service(batch int) time.Duration {
	pts := c.Points
	if len(pts) == 0 || batch < 1 {
		return 0
	}
	i, found := slices.BinarySearchFunc(pts, batch, func(p Point, b int) int { return p.Batch - b })
	switch {
	case found:
		return pts[i].Service
	case i == 0:
		// Below the smallest measured size: no cheaper than proportionally less.
		return max(pts[0].Service*time.Duration(batch)/time.Duration(pts[0].Batch), time.Nanosecond)
	case i == len(pts):
		last := pts[len(pts)-1]
		slope := float64(last.Service) / float64(last.Batch)
		if len(pts) > 1 {
			prev := pts[len(pts)-2]
			slope = max(float64(last.Service-prev.Service)/float64(last.Batch-prev.Batch), 0)
		}
		return last.Service + time.Duration(slope*float64(batch-last.Batch))
	}
	lo, hi := pts[i-1], pts[i]
	f := float64(batch-lo.Batch) / float64(hi.Batch-lo.Batch)
	return lo.Service + time.Duration(f*float64(hi.Service-lo.Service))
}

// RowsPerSecond is the candidate's throughput when every instance runs batches of batch rows
// back to back.
func (c Curve) RowsPerSecond(batch int) float64 {
	s := c.Service(batch)
	if s <= 0 {
		return 0
	}
	return float64(c.Instances*batch) / s.Seconds()
}

// ServiceTimes lists Service(b) for b = 1..maxBatch: what the scheduler is handed.
func (c Curve) ServiceTimes(maxBatch int) []time.Duration {
	out := make([]time.Duration, max(maxBatch, 1))
	for b := range out {
		out[b] = c.Service(b + 1)
	}
	return out
}

// Profile is the calibration of one model version on one machine.
type Profile struct {
	// Key identifies what was calibrated (Key).
	Key string `json:"key"`
	// Curves are the candidates in the order they were measured.
	Curves []Curve `json:"curves"`
	// Took is how long the calibration ran.
	Took time.Duration `json:"took_ns"`
	// Complete is false when the time budget ended before every candidate was measured.
	Complete bool `json:"complete"`
}

// Curve returns the curve of candidate c.
func (p Profile) Curve(c Candidate) (Curve, bool) {
	i := slices.IndexFunc(p.Curves, func(cv Curve) bool { return cv.Candidate == c })
	if i < 0 {
		return Curve{}, false
	}
	return p.Curves[i], true
}
