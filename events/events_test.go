package events_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/events"
)

func TestRingKeepsTheNewestInOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := events.New(3, func() time.Time { return t0 })
	if got := r.Since(0, 0); len(got) != 0 {
		t.Fatalf("empty ring: %+v", got)
	}
	for i := 1; i <= 5; i++ {
		if seq := r.Add(events.Event{Kind: events.KindLoad, Message: fmt.Sprint(i)}); seq != uint64(i) {
			t.Fatalf("event %d numbered %d", i, seq)
		}
	}
	got := r.Since(0, 0)
	if len(got) != 3 {
		t.Fatalf("a ring of 3 holds %d events: %+v", len(got), got)
	}
	for i, e := range got {
		if want := fmt.Sprint(i + 3); e.Message != want || e.Seq != uint64(i+3) {
			t.Errorf("event %d: %+v, want message and seq %s", i, e, want)
		}
		if !e.Time.Equal(t0) || e.Level != events.LevelInfo {
			t.Errorf("event %d not stamped with the clock and the default level: %+v", i, e)
		}
	}
	if got := r.Since(4, 0); len(got) != 1 || got[0].Seq != 5 {
		t.Errorf("since 4: %+v", got)
	}
	if got := r.Since(0, 2); len(got) != 2 || got[0].Seq != 4 || got[1].Seq != 5 {
		t.Errorf("the newest 2: %+v", got)
	}
	if got := r.Since(5, 0); len(got) != 0 {
		t.Errorf("since the last: %+v", got)
	}
	if r.Last() != 5 {
		t.Errorf("last %d, want 5", r.Last())
	}
	// A time given is kept.
	at := t0.Add(-time.Hour)
	r.Add(events.Event{Time: at, Level: events.LevelError})
	if e := r.Since(5, 0)[0]; !e.Time.Equal(at) || e.Level != events.LevelError {
		t.Errorf("given time and level not kept: %+v", e)
	}
}

func TestRingConcurrentUse(t *testing.T) {
	r := events.New(16, nil)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; i < 100; i++ {
				r.Add(events.Event{Kind: events.KindRollout})
				_ = r.Since(0, 5)
			}
		})
	}
	wg.Wait()
	got := r.Since(0, 0)
	if len(got) != 16 || r.Last() != 400 {
		t.Fatalf("after 400 adds: %d held, last %d", len(got), r.Last())
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq != got[i-1].Seq+1 {
			t.Fatalf("gap in %v", got)
		}
	}
}
