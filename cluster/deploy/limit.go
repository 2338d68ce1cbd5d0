package deploy

import (
	"context"
	"io"
	"sync"
	"time"
)

// limiter paces bytes to a rate (bytes per second) shared by every transfer that uses it:
// each piece waits until the bytes before it would have been sent at that rate. Zero rate is
// no limit.
type limiter struct {
	rate float64
	mu   sync.Mutex
	next time.Time
}

func newLimiter(bytesPerSecond int64) *limiter { return &limiter{rate: float64(bytesPerSecond)} }

// wait blocks until n more bytes fit the rate, or ctx ends.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil || l.rate <= 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	delay := l.next.Sub(now)
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	if delay <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// pieceSize is how many bytes a paced copy moves per wait.
const pieceSize = 64 << 10

// copyPaced copies src to dst in pieces, each waiting for the limiter, and returns the bytes
// copied.
func copyPaced(ctx context.Context, dst io.Writer, src io.Reader, l *limiter) (int64, error) {
	buf := make([]byte, pieceSize)
	var done int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if werr := l.wait(ctx, n); werr != nil {
				return done, werr
			}
			m, werr := dst.Write(buf[:n])
			done += int64(m)
			if werr != nil {
				return done, werr
			}
		}
		if err == io.EOF {
			return done, nil
		}
		if err != nil {
			return done, err
		}
	}
}
