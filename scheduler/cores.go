package scheduler

import (
	"sync"
	"time"
)

// cores is the node-wide core budget: every run takes its instance's intra-op threads from it
// before it starts and gives them back when it ends, so that the instances × threads of all
// loaded models never run on more cores than the node has, however many models are loaded.
// Cores are held only while a run runs: an idle model's instances hold none, and busy models
// share the cores by demand and weight. Each model version's account is charged, when a run
// ends, the core time it took divided by its weight; while runs wait, the one whose account was
// charged least goes first (first come, first served among equals), so that busy models get
// core time in proportion to their weights. An account that was idle starts from where the
// busy ones are, not from the credit it would have banked. A run that asks for more than the
// budget is given the whole budget.
type cores struct {
	mu      sync.Mutex
	total   int // 0: no budget
	used    int
	waiting []*coreWait // in the order they asked
	// now is the charge of the account granted last: an idle account catching up starts there.
	now float64
}

// account is one model version's share of the budget; guarded by cores.mu.
type account struct {
	weight  float64 // > 0
	charged float64 // core seconds ÷ weight
}

// newAccount returns an account of weight w (1 when w is not positive).
func newAccount(w float64) *account {
	if w <= 0 {
		w = 1
	}
	return &account{weight: w}
}

type coreWait struct {
	acct  *account
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

// acquire takes n cores for a run of a's, waiting while others hold them, and returns how many
// it took (to give back with release): 0 without a budget or for n = 0. It gives up when done
// is closed (the run was stopped while it waited) and then reports false.
func (c *cores) acquire(a *account, n int, done <-chan struct{}) (int, bool) {
	c.mu.Lock()
	if c.total == 0 || n <= 0 {
		c.mu.Unlock()
		return 0, true
	}
	n = min(n, c.total)
	a.charged = max(a.charged, c.now)
	if len(c.waiting) == 0 && c.used+n <= c.total {
		c.used += n
		c.mu.Unlock()
		return n, true
	}
	w := &coreWait{acct: a, n: n, ready: make(chan struct{})}
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

// release gives back the n cores a run of a's took for d, charging a for them.
func (c *cores) release(a *account, n int, d time.Duration) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	a.charged += float64(n) * d.Seconds() / a.weight
	c.used -= n
	c.grantLocked()
}

// grantLocked grants the waiting runs, the least charged account's first, while it fits.
func (c *cores) grantLocked() {
	for len(c.waiting) > 0 {
		i := 0
		for j, w := range c.waiting {
			if w.acct.charged < c.waiting[i].acct.charged {
				i = j
			}
		}
		w := c.waiting[i]
		if c.total > 0 && c.used+min(w.n, c.total) > c.total {
			return
		}
		if c.total == 0 {
			w.n = 0 // the budget was removed: nothing to give back
		}
		c.used += w.n
		c.now = max(c.now, w.acct.charged)
		c.waiting = append(c.waiting[:i:i], c.waiting[i+1:]...)
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
