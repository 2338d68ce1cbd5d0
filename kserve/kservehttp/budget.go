package kservehttp

import "sync/atomic"

// Budget bounds the request-body bytes that every body read with it holds at once
// (server.max_body_bytes_in_flight). Read reserves each buffer's capacity as it allocates it,
// that is as the body's bytes arrive, and Body.Release gives it back; a body whose next buffer
// the budget cannot take is refused with a 503, while bodies already in flight go on. In
// cluster mode the router and the API share one Budget: the router reads a body and the API
// serves it without reading it again, so it is counted once.
//
// A nil *Budget bounds nothing. Its methods are safe for concurrent use.
type Budget struct {
	limit func() int64
	used  atomic.Int64
}

// NewBudget returns a Budget bounded by limit, called at each reservation so that a reload
// moves the bound between two buffers; a limit of 0 or less bounds nothing. Lowering it below
// what is in flight refuses new buffers until enough bodies are released.
func NewBudget(limit func() int64) *Budget { return &Budget{limit: limit} }

// InUse is the bytes reserved now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// reserve takes n bytes if the limit allows them; otherwise it reports what is in use and the
// limit.
func (b *Budget) reserve(n int64) (inUse, limit int64, ok bool) {
	if b == nil {
		return 0, 0, true
	}
	limit = b.limit()
	for {
		inUse = b.used.Load()
		if limit > 0 && inUse+n > limit {
			return inUse, limit, false
		}
		if b.used.CompareAndSwap(inUse, inUse+n) {
			return inUse + n, limit, true
		}
	}
}

func (b *Budget) release(n int64) {
	if b != nil && n != 0 {
		b.used.Add(-n)
	}
}
