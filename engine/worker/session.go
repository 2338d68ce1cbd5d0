package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// session is the daemon's handle on a session in a worker: an engine.Session. It outlives the
// worker: when the host starts a new worker it opens the session there again and swaps the
// remote end, so the scheduler's instance keeps working.
type session struct {
	host     *host
	path     string
	opts     engine.Options
	sig      engine.Signature
	provider string

	run    sync.Mutex // one Run at a time, as engine.Session asks
	mu     sync.Mutex
	remote *remote // nil once closed; broken when the reopen failed
	closed bool

	in   []slot
	out  []slot
	seq  uint64
	last time.Duration // how long the last run took, reply included
}

var _ engine.Session = (*session)(nil)

// remote is a session's other end in one worker process.
type remote struct {
	proc     proc
	id       uint64
	conn     *conn
	arena    *arena
	sig      engine.Signature
	provider string
	broken   error // the reopen in a new worker failed: every Run fails with it
}

func (r *remote) close() {
	if r.conn != nil {
		r.conn.close()
	}
	if r.arena != nil {
		r.arena.close()
	}
}

// replySpin is how long a Run polls for its reply before it blocks: short runs (the demo
// models take microseconds) come back without a thread wakeup. A session whose last run took
// longer than longRun blocks at once: a wakeup is small against such a run, and the core the
// polling would take is one the HTTP side needs meanwhile.
const (
	replySpin = 50 * time.Microsecond
	longRun   = 20 * replySpin
)

// arenaLimit bounds a session's shared memory: the worker's memory limit, or 64 GiB.
func (s *session) arenaLimit() int {
	if l := memoryLimit(s.host.opts); l > 0 {
		return int(l)
	}
	return 64 << 30
}

// open opens the session in worker p.
func (s *session) open(ctx context.Context, p proc) (*remote, error) {
	mine, theirs, err := p.sessionPair()
	if err != nil {
		return nil, err
	}
	defer theirs.release() // the worker holds its own copy once the open is sent
	a, err := newArena(s.host.opts.Name, s.arenaLimit())
	if err != nil {
		mine.close()
		return nil, err
	}
	d, err := p.call(ctx, kindOpen, []int{theirs.fd, a.fd}, true, func(e *encoder) {
		e.str(s.path)
		e.options(s.opts)
		e.uint(uint64(s.arenaLimit()))
	})
	if err != nil {
		mine.close()
		a.close()
		return nil, err
	}
	r := &remote{proc: p, id: d.uint(), conn: mine, arena: a, provider: d.str(), sig: d.signature()}
	if d.err != nil {
		r.close()
		return nil, frameError("open reply", d.err)
	}
	return r, nil
}

// reopen opens the session again in a new worker, after the old one died. A session that no
// longer opens (the file changed, the worker died again) keeps the error for its Runs.
func (s *session) reopen(ctx context.Context, p proc) {
	r, err := s.open(ctx, p)
	if err != nil {
		r = &remote{proc: p, broken: fmt.Errorf("opening %s again in a new worker: %w", s.path, err)}
	}
	s.mu.Lock()
	old := s.remote
	if s.closed {
		s.mu.Unlock()
		r.close()
		return
	}
	s.remote = r
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
}

func (s *session) Signature() engine.Signature { return s.sig }
func (s *session) Provider() string            { return s.provider }

// current returns the remote end to run on, waiting for a new worker if the last one died.
func (s *session) current(ctx context.Context) (*remote, error) {
	for {
		s.mu.Lock()
		r, closed := s.remote, s.closed
		s.mu.Unlock()
		if closed {
			return nil, engine.ErrClosed
		}
		if r.broken != nil {
			return nil, r.broken
		}
		if !exited(r.proc) {
			return r, nil
		}
		// Its worker is gone: wait for the host's next one, which the host sets only once it
		// has swapped this session's remote end.
		if _, err := s.host.process(ctx); err != nil {
			return nil, err
		}
	}
}

// Run sends the inputs to the worker through the arena and waits for the outputs. If ctx
// ends first, the worker is told to stop the run (ONNX Runtime's terminate flag); a worker
// that has not answered within the grace period is killed.
func (s *session) Run(ctx context.Context, inputs []tensor.Tensor, names []string) ([]tensor.Tensor, error) {
	s.run.Lock()
	defer s.run.Unlock()
	r, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	defer func() { s.last = time.Since(started) }()
	r.conn.spin = replySpin
	if s.last > longRun {
		r.conn.spin = 0
	}
	r.arena.dropRetired()
	s.in, err = pack(r.arena, 0, inputs, s.in, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", engine.ErrRun, err)
	}
	s.seq++
	seq := s.seq
	if err := r.conn.write(nil, func(e *encoder) {
		e.u8(kindRun)
		e.uint(seq)
		e.uint(uint64(len(r.arena.mem)))
		e.slots(s.in)
		e.uint(uint64(len(names)))
		for _, n := range names {
			e.str(n)
		}
	}); err != nil {
		return nil, died(r.proc, err)
	}
	var watch cancelWatch
	stop := context.AfterFunc(ctx, func() {
		// Read now: the caller may reuse ctx for its next run once this one returns.
		why := fmt.Sprintf("run did not stop within %s of its cancellation (%v)", s.host.iso.grace(), context.Cause(ctx))
		_ = r.proc.send(kindCancel, func(e *encoder) {
			e.uint(r.id)
			e.uint(seq)
		})
		watch.arm(s.host.iso.grace(), func() { r.proc.kill(why) })
	})
	outs, err := s.await(r, seq)
	stop()
	watch.finish()
	if err != nil && ctx.Err() != nil && !errors.Is(err, engine.ErrWorker) {
		return nil, fmt.Errorf("%w: %w", engine.ErrRun, context.Cause(ctx))
	}
	return outs, err
}

// cancelWatch kills a worker whose cancelled run has not answered within the grace period.
// The run may answer while its cancellation is still being sent: arming after finish does
// nothing, so that a watch armed late cannot kill the worker during a later run.
type cancelWatch struct {
	mu       sync.Mutex
	finished bool
	timer    *time.Timer
}

// arm calls kill after grace unless finish is called first (or was already).
func (w *cancelWatch) arm(grace time.Duration, kill func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.finished {
		return
	}
	w.timer = time.AfterFunc(grace, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.finished {
			kill()
		}
	})
}

// finish says the run answered.
func (w *cancelWatch) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.finished = true
	if w.timer != nil {
		w.timer.Stop()
	}
}

// await reads the reply to run seq.
func (s *session) await(r *remote, seq uint64) ([]tensor.Tensor, error) {
	for {
		p, fds, err := r.conn.read()
		closeFDs(fds)
		if errors.Is(err, io.EOF) {
			return nil, died(r.proc, err)
		}
		if err != nil {
			r.proc.kill("protocol error: " + err.Error())
			return nil, died(r.proc, err)
		}
		d := decoder{b: p}
		kind, got := d.u8(), d.uint()
		if kind != kindRunReply {
			r.proc.kill(fmt.Sprintf("protocol error: frame kind %d on a session socket", kind))
			return nil, died(r.proc, errFrame)
		}
		if got != seq {
			continue // the answer to a run abandoned earlier
		}
		if err := d.status(); err != nil {
			return nil, err
		}
		size := d.size()
		s.out = d.slots(s.out)
		if d.err != nil {
			r.proc.kill("protocol error: " + d.err.Error())
			return nil, died(r.proc, d.err)
		}
		if err := r.arena.atLeast(size); err != nil {
			return nil, fmt.Errorf("%w: %w", engine.ErrRun, err)
		}
		outs, err := unpack(r.arena, s.out, false)
		if err != nil {
			return nil, fmt.Errorf("%w: outputs: %w", engine.ErrRun, err)
		}
		return outs, nil
	}
}

// Close closes the session in the worker.
func (s *session) Close() error {
	s.mu.Lock()
	r, closed := s.remote, s.closed
	s.closed = true
	s.mu.Unlock()
	if closed {
		return nil
	}
	s.host.forget(s)
	s.run.Lock() // wait for a Run in progress
	defer s.run.Unlock()
	if r != nil && r.broken == nil {
		if !exited(r.proc) {
			ctx, cancel := context.WithTimeout(context.Background(), s.host.iso.grace())
			_, _ = r.proc.call(ctx, kindCloseSession, nil, false, func(e *encoder) { e.uint(r.id) })
			cancel()
		}
		r.close()
	}
	return nil
}

// markClosed fails the session's later Runs with ErrClosed, for a host that closes.
func (s *session) markClosed() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}
