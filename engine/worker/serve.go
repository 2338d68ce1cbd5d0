package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/tensor"
)

// Serve answers the daemon on the control socket fd with rt until the daemon closes it (or
// dies: the socket closes with it), then returns nil. Each session opened gets its own socket
// and arena and is served by a goroutine of its own, so the sessions of a version run in
// parallel as they would in the daemon.
func Serve(ctx context.Context, fd int, rt engine.Runtime, log *slog.Logger) error {
	s := &server{ctl: newConn(fd), rt: rt, log: log, sessions: map[uint64]*served{}}
	defer s.closeAll()
	if err := s.ctl.write(nil, func(e *encoder) {
		e.u8(kindHello)
		e.uint(uint64(os.Getpid()))
	}); err != nil {
		return fmt.Errorf("worker: greeting the daemon: %w", err)
	}
	for {
		p, fds, err := s.ctl.read()
		if errors.Is(err, io.EOF) {
			s.log.Debug("worker: the daemon closed the control socket")
			return nil
		}
		if err != nil {
			closeFDs(fds)
			return fmt.Errorf("worker: reading the control socket: %w", err)
		}
		if err := s.dispatch(ctx, p, fds); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	}
}

type server struct {
	ctl *conn
	rt  engine.Runtime
	log *slog.Logger

	mu       sync.Mutex
	sessions map[uint64]*served
	nextID   uint64
	wg       sync.WaitGroup
}

// requestSpin is how long a session polls for the next request before it blocks: under load
// the next batch is there within it and comes without a thread wakeup.
const requestSpin = 200 * time.Microsecond

// served is one session in the worker.
type served struct {
	id    uint64
	sess  engine.Session
	conn  *conn
	arena *arena

	mu     sync.Mutex
	seq    uint64             // the run in progress, or the last one
	cancel context.CancelFunc // of the run in progress; nil between runs
	// early is a run cancelled before it started here: its cancel travels on the control
	// socket and can overtake the run on the session socket.
	early uint64
}

// dispatch handles one control frame. Loads and inspections run in goroutines of their own so
// that a cancellation (or another version's load in the same worker) is never queued behind a
// load that takes minutes.
func (s *server) dispatch(ctx context.Context, p []byte, fds []int) error {
	d := decoder{b: p}
	kind, id := d.u8(), d.uint()
	switch kind {
	case kindInspect:
		path := d.str()
		if d.err != nil {
			return frameError("inspect", d.err)
		}
		s.goReply(id, func(e *encoder) error {
			sig, err := s.rt.Inspect(ctx, path)
			if err == nil {
				e.signature(sig)
			}
			return err
		})
	case kindOpen:
		path, opts, limit := d.str(), d.options(), d.size()
		if d.err == nil && len(fds) != 2 {
			d.err = fmt.Errorf("%w: %d descriptors, want 2", errFrame, len(fds))
		}
		if d.err != nil {
			closeFDs(fds)
			return frameError("open", d.err)
		}
		s.goReply(id, func(e *encoder) error { return s.open(ctx, e, path, opts, fds[0], fds[1], limit) })
	case kindLimit:
		limit := d.uint()
		if d.err == nil && limit > math.MaxInt64 {
			d.err = fmt.Errorf("%w: memory limit %d", errFrame, limit)
		}
		if d.err != nil {
			return frameError("limit", d.err)
		}
		return s.reply(id, func(*encoder) error { return Limit(int64(limit)) })
	case kindCloseSession:
		sid := d.uint()
		s.mu.Lock()
		ss := s.sessions[sid]
		delete(s.sessions, sid)
		s.mu.Unlock()
		if ss != nil {
			ss.conn.shutdown() // its goroutine ends and closes the session
		}
		return s.reply(id, func(*encoder) error { return nil })
	case kindCancel:
		sid, seq := d.uint(), d.uint()
		s.mu.Lock()
		ss := s.sessions[sid]
		s.mu.Unlock()
		if ss != nil {
			ss.mu.Lock()
			switch {
			case ss.seq == seq && ss.cancel != nil:
				ss.cancel()
			case seq > ss.seq:
				ss.early = seq
			}
			ss.mu.Unlock()
		}
	default:
		closeFDs(fds)
		return fmt.Errorf("%w: unknown frame kind %d", errFrame, kind)
	}
	return nil
}

func (s *server) goReply(id uint64, answer func(e *encoder) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.reply(id, answer); err != nil {
			s.log.Warn("worker: replying to the daemon", "err", err)
		}
	}()
}

// reply sends the answer to request id: the fields answer writes, or the error it returns.
func (s *server) reply(id uint64, answer func(e *encoder) error) error {
	var body encoder
	err := answer(&body)
	return s.ctl.write(nil, func(e *encoder) {
		e.u8(kindReply)
		e.uint(id)
		e.status(err)
		if err == nil {
			e.b = append(e.b, body.b...)
		}
	})
}

func (s *server) open(ctx context.Context, e *encoder, path string, opts engine.Options, sock, arenaFD, limit int) error {
	a, err := openArena(arenaFD, limit)
	if err != nil {
		closeFDs([]int{sock})
		return err
	}
	sess, err := s.rt.Open(ctx, path, opts)
	if err != nil {
		a.close()
		closeFDs([]int{sock})
		return err
	}
	s.mu.Lock()
	s.nextID++
	ss := &served{id: s.nextID, sess: sess, conn: newConn(sock), arena: a}
	ss.conn.spin = requestSpin
	s.sessions[ss.id] = ss
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveSession(ctx, ss)
	}()
	e.uint(ss.id)
	e.str(sess.Provider())
	e.signature(sess.Signature())
	return nil
}

// serveSession runs one session's requests until its socket closes.
func (s *server) serveSession(ctx context.Context, ss *served) {
	defer func() {
		_ = ss.sess.Close()
		ss.conn.close()
		ss.arena.close()
	}()
	var in, out []slot
	var names []string
	var pl outputPlace
	for {
		p, fds, err := ss.conn.read()
		closeFDs(fds)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Warn("worker: session socket", "err", err)
			}
			return
		}
		d := decoder{b: p}
		kind, seq, size := d.u8(), d.uint(), d.size()
		in = d.slots(in)
		names = names[:0]
		for range d.count() {
			names = append(names, d.str())
		}
		if d.err == nil && kind != kindRun {
			d.err = fmt.Errorf("%w: frame kind %d on a session socket", errFrame, kind)
		}
		if d.err != nil {
			s.log.Warn("worker: session frame", "err", d.err)
			return
		}
		pl = outputPlace{a: ss.arena, next: alignUp(slotsEnd(in)), placed: pl.placed[:0]}
		outs, err := s.run(ctx, ss, seq, size, in, names, &pl)
		if err == nil {
			out, err = pack(ss.arena, pl.next, outs, out, pl.placed)
		}
		if werr := ss.conn.write(nil, func(e *encoder) {
			e.u8(kindRunReply)
			e.uint(seq)
			e.status(err)
			e.uint(uint64(len(ss.arena.mem)))
			if err == nil {
				e.slots(out)
			}
		}); werr != nil {
			return
		}
	}
}

func (s *server) run(ctx context.Context, ss *served, seq uint64, size int, in []slot, names []string, pl *outputPlace) ([]tensor.Tensor, error) {
	ss.arena.dropRetired()
	if err := ss.arena.atLeast(size); err != nil {
		return nil, err
	}
	inputs, err := unpack(ss.arena, in, true)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ss.mu.Lock()
	ss.seq, ss.cancel = seq, cancel
	if ss.early == seq {
		cancel()
	}
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		ss.cancel = nil
		ss.mu.Unlock()
	}()
	if r, ok := ss.sess.(intoRunner); ok {
		return r.RunInto(runCtx, inputs, names, pl.place)
	}
	return ss.sess.Run(runCtx, inputs, names)
}

// intoRunner is a session that writes outputs into memory it is given (ort.Session).
type intoRunner interface {
	RunInto(ctx context.Context, inputs []tensor.Tensor, names []string, place func(output string, n int) []byte) ([]tensor.Tensor, error)
}

func slotsEnd(ss []slot) int {
	end := 0
	for _, s := range ss {
		end = max(end, s.off+s.len)
	}
	return end
}

func (s *server) closeAll() {
	s.mu.Lock()
	for id, ss := range s.sessions {
		ss.conn.shutdown()
		delete(s.sessions, id)
	}
	s.mu.Unlock()
	s.ctl.close()
	s.wg.Wait()
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			closeFD(fd)
		}
	}
}
