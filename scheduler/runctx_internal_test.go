package scheduler

import (
	"context"
	"runtime"
	"testing"
	"testing/synctest"
)

// context.AfterFunc on an instance's run context registers with it instead of starting a
// goroutine per call; the function runs when the run is stopped, not after it was unregistered,
// and not for a later run.
func TestRunContextAfterFunc(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newRunContext()
		gen := c.reset()
		before := runtime.NumGoroutine()
		var stops []func() bool
		for range 100 {
			stops = append(stops, context.AfterFunc(c, func() { t.Error("an unregistered function ran") }))
		}
		if n := runtime.NumGoroutine() - before; n != 0 {
			t.Errorf("100 registrations started %d goroutines", n)
		}
		for _, stop := range stops {
			if !stop() {
				t.Error("stop of a function that had not run reported false")
			}
		}
		ran := make(chan struct{})
		stop := context.AfterFunc(c, func() { close(ran) })
		c.stop(gen, errAborted)
		<-ran
		if stop() {
			t.Error("stop after the function started reported true")
		}

		// already stopped: at once
		again := make(chan struct{})
		context.AfterFunc(c, func() { close(again) })
		<-again

		// a registration of one run does not fire for the next
		c.reset()
		late := false
		context.AfterFunc(c, func() { late = true })
		gen = c.reset()
		c.stop(gen, errAborted)
		synctest.Wait()
		if late {
			t.Error("a function registered for an earlier run ran when a later one stopped")
		}
	})
}
