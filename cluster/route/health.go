package route

import (
	"sync"
	"sync/atomic"
	"time"
)

// peer is the router's record of one node it forwards to.
type peer struct {
	name      string
	inFlight  atomic.Int64
	forwarded atomic.Uint64
	failures  atomic.Uint64
	// ejectedUntil is read on every choice without the lock (Unix nanoseconds, 0: never).
	ejectedUntil atomic.Int64

	mu          sync.Mutex
	addr        string // the HTTP address the record is about; a new one resets it
	consecutive int    // failures since the last success
	ejections   int    // ejections since the last success: the backoff exponent
}

// ejected reports whether the peer is out of rotation at now.
func (p *peer) ejected(now time.Time) bool {
	return now.UnixNano() < p.ejectedUntil.Load()
}

// success clears the peer's failure record.
func (p *peer) success() {
	p.mu.Lock()
	p.consecutive, p.ejections = 0, 0
	p.mu.Unlock()
}

// failure counts a failed try and ejects the peer when policy says so; it returns the end of
// a new ejection, or the zero time.
func (p *peer) failure(now time.Time, e Ejection) time.Time {
	p.failures.Add(1)
	if e.ConsecutiveFailures < 0 {
		return time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ejected(now) {
		// Tries that were in flight when it was ejected fail too; they say nothing new.
		return time.Time{}
	}
	p.consecutive++
	// A peer on probation (ejected before, no success since) is ejected on its first failure.
	if p.ejections == 0 && p.consecutive < e.ConsecutiveFailures {
		return time.Time{}
	}
	d := e.BaseTime
	for i := 0; i < p.ejections && d < e.MaxTime; i++ {
		d *= 2
	}
	d = min(d, e.MaxTime)
	p.ejections++
	p.consecutive = 0
	until := now.Add(d)
	p.ejectedUntil.Store(until.UnixNano())
	return until
}

// retarget resets the record when the node's address changed (a restarted node under the same
// name is a new process: what the old one did says nothing about it).
func (p *peer) retarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addr == addr {
		return
	}
	p.addr = addr
	p.consecutive, p.ejections = 0, 0
	p.ejectedUntil.Store(0)
}

// PeerStats is the router's view of one node.
type PeerStats struct {
	Node string `json:"node"`
	// Local is this node; its Forwarded counts requests served here by the router.
	Local bool   `json:"local,omitempty"`
	Addr  string `json:"addr,omitempty"`
	// InFlight is the number of requests this node has outstanding on the peer now.
	InFlight int64 `json:"in_flight"`
	// Forwarded counts tries sent to the peer (served locally, for the local node).
	Forwarded uint64 `json:"forwarded"`
	// Failures counts failed tries: connect failure, reset, per-try timeout, 503.
	Failures uint64 `json:"failures"`
	// ConsecutiveFailures is the count since the last success or ejection.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// EjectedUntil is when an ejection ends; zero when the peer is in rotation.
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
	// Ejections counts ejections since the last success (the backoff exponent).
	Ejections int `json:"ejections,omitempty"`
}

// Stats is a snapshot of the router's counters.
type Stats struct {
	// Routed counts infer requests the router chose a node for.
	Routed uint64 `json:"routed"`
	// Retries counts tries after the first.
	Retries uint64 `json:"retries"`
	// BudgetExhausted counts retries the retry budget refused.
	BudgetExhausted uint64 `json:"budget_exhausted"`
	// Peers are the nodes the router has served or forwarded to, by name.
	Peers []PeerStats `json:"peers"`
}

// budget is a retry budget over a sliding window of 1 s buckets.
type budget struct {
	ratio, floor float64
	now          func() time.Time

	mu      sync.Mutex
	buckets []bucket
}

type bucket struct {
	second            int64
	requests, retries int64
}

func newBudget(b RetryBudget, now func() time.Time) *budget {
	n := int(b.Window / time.Second)
	return &budget{
		ratio:   b.Ratio,
		floor:   b.MinPerSecond * float64(n),
		now:     now,
		buckets: make([]bucket, n),
	}
}

// currentLocked returns the bucket of the present second, emptied if it held an old one.
func (b *budget) currentLocked(sec int64) *bucket {
	i := int(sec % int64(len(b.buckets)))
	if i < 0 {
		i += len(b.buckets)
	}
	cur := &b.buckets[i]
	if cur.second != sec {
		*cur = bucket{second: sec}
	}
	return cur
}

// deposit counts a routed request.
func (b *budget) deposit() {
	sec := b.now().Unix()
	b.mu.Lock()
	b.currentLocked(sec).requests++
	b.mu.Unlock()
}

// withdraw takes one retry from the budget, if it has one.
func (b *budget) withdraw() bool {
	sec := b.now().Unix()
	b.mu.Lock()
	defer b.mu.Unlock()
	var requests, retries int64
	oldest := sec - int64(len(b.buckets)) + 1
	for _, k := range b.buckets {
		if k.second >= oldest && k.second <= sec {
			requests += k.requests
			retries += k.retries
		}
	}
	if float64(retries+1) > b.ratio*float64(requests)+b.floor {
		return false
	}
	b.currentLocked(sec).retries++
	return true
}
