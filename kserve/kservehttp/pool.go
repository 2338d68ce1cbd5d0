package kservehttp

import (
	"math/bits"
	"sync"
)

// Pool sizes: buffers of minPooled to maxPooled bytes are recycled, by power-of-two class.
// A larger buffer is allocated to its size and left to the garbage collector when its body is
// released: a burst of large bodies must not leave the pool pinning their memory, and one large
// allocation per large body costs little next to reading it.
const (
	minPooled = 4 << 10
	maxPooled = 4 << 20
	// DefaultPoolBytes is what a Pool keeps at most when MaxBytes is 0.
	DefaultPoolBytes = 32 << 20
)

// Pool recycles body buffers, so that a stream of requests does not make the garbage collector
// run for every one. Buffers are grouped by power-of-two capacity and are 8-byte aligned. It
// keeps at most MaxBytes of idle buffers (DefaultPoolBytes when 0) and never one over 4 MiB, so
// that after a burst the memory of all but a bounded few goes back to the runtime. The zero value
// is ready to use.
//
// Only a body whose every reader is known to be done may go back: the API handler releases a
// body once its response is written. The router reads without a pool, because the HTTP
// transport may still be reading a forwarded body after its round trip has returned.
type Pool struct {
	// MaxBytes bounds the capacity of the idle buffers kept; set it before first use.
	MaxBytes int64

	mu    sync.Mutex
	idle  [bits.UintSize][][]byte // by class: capacity 1<<class
	bytes int64                   // capacity of every idle buffer
}

func sizeClass(n int) int { return bits.Len(uint(max(n, 1) - 1)) }

// get returns an empty buffer with room for n bytes.
func (p *Pool) get(n int) []byte {
	if n > maxPooled {
		return alignedBytes(n)[:0]
	}
	c := sizeClass(max(n, minPooled))
	p.mu.Lock()
	if free := p.idle[c]; len(free) > 0 {
		b := free[len(free)-1]
		free[len(free)-1] = nil
		p.idle[c] = free[:len(free)-1]
		p.bytes -= int64(cap(b))
		p.mu.Unlock()
		return b[:0]
	}
	p.mu.Unlock()
	return alignedBytes(1 << c)[:0]
}

// put keeps b for a later get, unless it is outside the pooled sizes or the pool is full.
func (p *Pool) put(b []byte) {
	if cap(b) < minPooled || cap(b) > maxPooled {
		return
	}
	// A buffer goes back to the class whose every request it can hold.
	c := bits.Len(uint(cap(b))) - 1
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+int64(cap(b)) > p.maxBytes() {
		return
	}
	p.idle[c] = append(p.idle[c], b[:0])
	p.bytes += int64(cap(b))
}

func (p *Pool) maxBytes() int64 {
	if p.MaxBytes > 0 {
		return p.MaxBytes
	}
	return DefaultPoolBytes
}

// IdleBytes is the capacity of the buffers the pool keeps now.
func (p *Pool) IdleBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}
