package worker

import (
	"testing"
	"testing/synctest"
	"time"
)

// A cancelled run that does not answer gets its worker killed after the grace period, once;
// one that answers in time, or before the watch is even armed (the run finished while its
// cancellation was being sent), never does, however long the worker then lives.
func TestCancelWatch(t *testing.T) {
	const grace = 2 * time.Second
	cases := []struct {
		name      string
		finish    func(w *cancelWatch, arm func())
		wantKills int
	}{
		{"no answer", func(w *cancelWatch, arm func()) { arm() }, 1},
		{"answered in time", func(w *cancelWatch, arm func()) {
			arm()
			time.Sleep(grace / 2)
			w.finish()
		}, 0},
		{"answered before arming", func(w *cancelWatch, arm func()) {
			w.finish()
			arm()
		}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var w cancelWatch
				kills := 0
				c.finish(&w, func() { w.arm(grace, func() { kills++ }) })
				time.Sleep(10 * grace)
				synctest.Wait()
				if kills != c.wantKills {
					t.Errorf("killed %d times, want %d", kills, c.wantKills)
				}
			})
		})
	}
}
