package scheduler

import (
	"sync"
)

// cores is the node-wide core budget: every run takes its instance's intra-op threads from it
// before it starts and gives them back when it ends, so that the instances × threads of all
// loaded models never run on more cores than the node has, however many models are loaded.
// Cores are held only while a run runs: an idle model's instances hold none, and busy models
// share the cores in the order their runs ask (first come, first served, which shares them by
// demand). A run that asks for more than the budget is given the whole budget.
type cores struct {
	mu      sync.Mutex
	total   int // 0: no budget
	used    int
	waiting []*coreWait // FIFO
}

type coreWait struct {
	n     int
	ready chan struct{} // closed when granted
}

// setTotal sets the budget; 0 removes it. Runs already granted keep what they hold.
func (c *cores) setTotal(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total = max(n, 0)
	c.grantLocked()
}

// acquire takes n cores, waiting while others hold them, and returns how many it took (to give
// back with release): 0 without a budget or for n = 0. It gives up when done is closed (the run
// was stopped while it waited) and then reports false.
func (c *cores) acquire(n int, done <-chan struct{}) (int, bool) {
	c.mu.Lock()
	if c.total == 0 || n <= 0 {
		c.mu.Unlock()
		return 0, true
	}
	n = min(n, c.total)
	if len(c.waiting) == 0 && c.used+n <= c.total {
		c.used += n
		c.mu.Unlock()
		return n, true
	}
	w := &coreWait{n: n, ready: make(chan struct{})}
	c.waiting = append(c.waiting, w)
	c.mu.Unlock()
	select {
	case <-w.ready:
		return w.n, true
	case <-done:
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			c.used -= w.n
			c.grantLocked()
		default:
			for i, x := range c.waiting {
				if x == w {
					c.waiting = append(c.waiting[:i], c.waiting[i+1:]...)
					break
				}
			}
			c.grantLocked() // the next in line may fit now
		}
		return 0, false
	}
}

// release gives back what acquire took.
func (c *cores) release(n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.used -= n
	c.grantLocked()
}

// grantLocked grants the waiting runs, in order, while the first of them fits.
func (c *cores) grantLocked() {
	for len(c.waiting) > 0 {
		w := c.waiting[0]
		if c.total > 0 && c.used+min(w.n, c.total) > c.total {
			return
		}
		if c.total == 0 {
			w.n = 0 // the budget was removed: nothing to give back
		}
		c.used += w.n
		c.waiting = c.waiting[1:]
		close(w.ready)
	}
}

// CoreBudget is the node-wide core budget as it is now.
type CoreBudget struct {
	// Cores is the budget (SetCores); 0 means none is set.
	Cores int `json:"cores"`
	// Busy is how many of them runs hold now.
	Busy int `json:"cores_busy"`
	// Waiting is how many runs wait for cores now.
	Waiting int `json:"runs_waiting_for_cores"`
}

func (c *cores) budget() CoreBudget {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CoreBudget{Cores: c.total, Busy: c.used, Waiting: len(c.waiting)}
}
