package scheduler

import (
	"testing"
	"testing/synctest"
)

func TestCoreBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &cores{}
		if n, ok := c.acquire(8, nil); n != 0 || !ok {
			t.Fatalf("without a budget: took %d, %v", n, ok)
		}
		c.setTotal(2)
		a, _ := c.acquire(1, nil)
		b, _ := c.acquire(1, nil)
		// the budget is taken: the next waits, first come first served, and one asking for
		// more than the budget gets all of it
		order := make(chan string, 3)
		go func() { n, _ := c.acquire(4, nil); order <- "big"; c.release(n) }()
		synctest.Wait()
		go func() { n, _ := c.acquire(1, nil); order <- "small"; c.release(n) }()
		synctest.Wait()
		if len(order) != 0 {
			t.Fatal("a run started over the budget")
		}
		c.release(a)
		synctest.Wait()
		if len(order) != 0 {
			t.Fatal("the small run overtook the big one that asked first")
		}
		c.release(b)
		if got, then := <-order, <-order; got != "big" || then != "small" {
			t.Errorf("order %s, %s", got, then)
		}

		// a run stopped while it waits gives up its place
		held, _ := c.acquire(2, nil)
		done := make(chan struct{})
		gave := make(chan bool)
		go func() { _, ok := c.acquire(1, done); gave <- ok }()
		synctest.Wait()
		close(done)
		if <-gave {
			t.Error("a stopped run reports that it got its cores")
		}
		c.release(held)
		if n, _ := c.acquire(2, nil); n != 2 {
			t.Errorf("after the stopped waiter left: took %d of 2", n)
		}
		c.mu.Lock()
		waiting := len(c.waiting)
		c.mu.Unlock()
		if waiting != 0 {
			t.Errorf("%d waiters left", waiting)
		}

		// removing the budget lets the waiting run go at once
		go func() { n, _ := c.acquire(1, nil); order <- "after"; c.release(n) }()
		synctest.Wait()
		c.setTotal(0)
		if got := <-order; got != "after" {
			t.Error(got)
		}
	})
}
