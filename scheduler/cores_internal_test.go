package scheduler

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestCoreBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &cores{}
		acct := newAccount(1)
		if n, ok := c.acquire(acct, 8, nil); n != 0 || !ok {
			t.Fatalf("without a budget: took %d, %v", n, ok)
		}
		c.setTotal(2)
		a, _ := c.acquire(acct, 1, nil)
		b, _ := c.acquire(acct, 1, nil)
		// the budget is taken: the next waits, first come first served, and one asking for
		// more than the budget gets all of it
		order := make(chan string, 3)
		go func() { n, _ := c.acquire(acct, 4, nil); order <- "big"; c.release(acct, n, 0) }()
		synctest.Wait()
		go func() { n, _ := c.acquire(acct, 1, nil); order <- "small"; c.release(acct, n, 0) }()
		synctest.Wait()
		if len(order) != 0 {
			t.Fatal("a run started over the budget")
		}
		c.release(acct, a, 0)
		synctest.Wait()
		if len(order) != 0 {
			t.Fatal("the small run overtook the big one that asked first")
		}
		c.release(acct, b, 0)
		if got, then := <-order, <-order; got != "big" || then != "small" {
			t.Errorf("order %s, %s", got, then)
		}

		// a run stopped while it waits gives up its place
		held, _ := c.acquire(acct, 2, nil)
		done := make(chan struct{})
		gave := make(chan bool)
		go func() { _, ok := c.acquire(acct, 1, done); gave <- ok }()
		synctest.Wait()
		close(done)
		if <-gave {
			t.Error("a stopped run reports that it got its cores")
		}
		c.release(acct, held, 0)
		if n, _ := c.acquire(acct, 2, nil); n != 2 {
			t.Errorf("after the stopped waiter left: took %d of 2", n)
		}
		c.mu.Lock()
		waiting := len(c.waiting)
		c.mu.Unlock()
		if waiting != 0 {
			t.Errorf("%d waiters left", waiting)
		}

		// removing the budget lets the waiting run go at once
		go func() { n, _ := c.acquire(acct, 1, nil); order <- "after"; c.release(acct, n, 0) }()
		synctest.Wait()
		c.setTotal(0)
		if got := <-order; got != "after" {
			t.Error(got)
		}
	})
}

// Two busy accounts of weights 3 and 1 on a budget that one run fills: core time 3 : 1; an
// account that was idle meanwhile does not jump the queue with the credit it would have banked.
func TestCoreBudgetWeights(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &cores{}
		c.setTotal(2)
		heavy, light := newAccount(3), newAccount(1)
		ran := map[*account]time.Duration{}
		var mu sync.Mutex
		run := func(a *account, stop <-chan struct{}) {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, _ := c.acquire(a, 2, nil)
				time.Sleep(time.Millisecond)
				mu.Lock()
				ran[a] += time.Millisecond
				mu.Unlock()
				c.release(a, n, time.Millisecond)
			}
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, a := range []*account{heavy, heavy, light, light} { // two instances each
			wg.Go(func() { run(a, stop) })
		}
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
		ratio := ran[heavy].Seconds() / ran[light].Seconds()
		t.Logf("weights 3 : 1: core time %s : %s", ran[heavy], ran[light])
		if ratio < 2.7 || ratio > 3.3 {
			t.Errorf("core time %.2f : 1, want 3 : 1", ratio)
		}

		// a third account, idle until now, is charged from where the others are
		idle := newAccount(1)
		n, _ := c.acquire(idle, 2, nil)
		c.release(idle, n, 0)
		if idle.charged < 0.9*min(light.charged, heavy.charged) {
			t.Errorf("an idle account starts at %.3f, behind the busy ones (%.3f, %.3f)", idle.charged, heavy.charged, light.charged)
		}
	})
}
