package worker

import (
	"testing"
	"time"
)

func TestFailureWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		at     []time.Duration // failures, from t0
		giveUp bool            // after the last
	}{
		{"one", []time.Duration{0}, false},
		{"two", []time.Duration{0, time.Minute}, false},
		{"three within five minutes", []time.Duration{0, time.Minute, 4*time.Minute + 59*time.Second}, true},
		{"three spread out", []time.Duration{0, 3 * time.Minute, 6 * time.Minute}, false},
		{"old ones age out", []time.Duration{0, time.Minute, 10 * time.Minute, 11 * time.Minute}, false},
		{"a burst after a quiet spell", []time.Duration{0, 10 * time.Minute, 10*time.Minute + time.Second, 10*time.Minute + 2*time.Second}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var f failureWindow
			var got bool
			for _, d := range c.at {
				got = f.add(t0.Add(d))
			}
			if got != c.giveUp {
				t.Errorf("give up = %v, want %v", got, c.giveUp)
			}
		})
	}
}
