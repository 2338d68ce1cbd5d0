package kservehttp

import (
	"math/bits"
	"sync"
)

// Pool recycles body buffers, so that a stream of large requests does not make the garbage
// collector run for every one. Buffers are grouped by power-of-two capacity and are 8-byte
// aligned. The zero value is ready to use.
//
// Only a body whose every reader is known to be done may go back: the API handler releases a
// body once its response is written. The router reads without a pool, because the HTTP
// transport may still be reading a forwarded body after its round trip has returned.
type Pool struct {
	classes [40]sync.Pool
}

func sizeClass(n int) int { return bits.Len(uint(max(n, 1) - 1)) }

// get returns an empty buffer with room for n bytes.
func (p *Pool) get(n int) []byte {
	c := sizeClass(n)
	if c < len(p.classes) {
		if b, ok := p.classes[c].Get().(*[]byte); ok {
			return (*b)[:0]
		}
	}
	return alignedBytes(1 << min(c, 62))[:0]
}

func (p *Pool) put(b []byte) {
	if cap(b) < 4096 {
		return
	}
	// A buffer goes back to the class whose every request it can hold.
	c := bits.Len(uint(cap(b))) - 1
	if c < len(p.classes) {
		b = b[:0]
		p.classes[c].Put(&b)
	}
}
