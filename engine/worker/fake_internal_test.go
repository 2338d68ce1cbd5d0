package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/engine"
)

// The supervisor tests run the real host and session code against fake workers in a synctest
// bubble: no process, no socket, no system call that blocks (a goroutine blocked in one is not
// durably blocked, and would stall the bubble's clock). Session sockets are in-memory pipes
// behind the real conn, so the session's framing and its Run, cancel and kill logic are the
// real ones.

// memPipe is one end of an in-memory stream; its peer's sends arrive at its recv.
type memPipe struct {
	in, out chan []byte
	pending []byte // the rest of a chunk a recv did not take; read by one reader at a time
	shut    *memShut
}

// memShut is shared by both ends: shutting either down shuts the pair, as SHUT_RDWR on a
// socket makes both ends read EOF.
type memShut struct {
	once sync.Once
	ch   chan struct{}
}

var _ pipe = (*memPipe)(nil)

// memPair returns two conns connected by an in-memory pipe.
func memPair() (*conn, *conn) {
	ab, ba := make(chan []byte, 64), make(chan []byte, 64)
	shut := &memShut{ch: make(chan struct{})}
	a := &memPipe{in: ba, out: ab, shut: shut}
	b := &memPipe{in: ab, out: ba, shut: shut}
	return &conn{fd: -1, rbuf: make([]byte, 64<<10), mem: a}, &conn{fd: -1, rbuf: make([]byte, 64<<10), mem: b}
}

func (p *memPipe) recv(b []byte) (int, error) {
	if len(p.pending) == 0 {
		select {
		case p.pending = <-p.in:
		case <-p.shut.ch:
			select { // what was sent before the shutdown is still read
			case p.pending = <-p.in:
			default:
				return 0, nil
			}
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

func (p *memPipe) send(b []byte) error {
	select {
	case <-p.shut.ch:
		return fmt.Errorf("send: %w", unix.EPIPE)
	default:
	}
	select {
	case p.out <- append([]byte(nil), b...):
		return nil
	case <-p.shut.ch:
		return fmt.Errorf("send: %w", unix.EPIPE)
	}
}

func (p *memPipe) shutdown() { p.shut.once.Do(func() { close(p.shut.ch) }) }

// workerPlan is how one fake worker behaves.
type workerPlan struct {
	greetAfter time.Duration // how long its start takes
	hangs      bool          // it never greets
	openHangs  bool          // its opens never answer
	run        runPlan
	stopAfter  time.Duration // runStopsOnCancel: how long the run takes to stop
	lingers    bool          // asked to go, it stays until it is killed
}

// runPlan is how a fake worker answers a run.
type runPlan int

const (
	runAnswers       runPlan = iota // at once, with no outputs
	runCrashes                      // the worker dies of SIGSEGV
	runIgnoresCancel                // never, whatever the daemon sends
	runStopsOnCancel                // with the cancellation's error, stopAfter after the cancel frame
)

// fakeLauncher starts fake workers for Isolator.launch, the nth start by plans[n] (past the
// end: the zero plan, a worker that greets at once and answers everything).
type fakeLauncher struct {
	plans []workerPlan

	mu      sync.Mutex
	workers []*fakeWorker
}

// launch does what spawn does, with a fake worker: it waits for the greeting, and kills a
// worker that has not greeted when ctx ends.
func (l *fakeLauncher) launch(ctx context.Context, opts engine.HostOptions, _ *slog.Logger) (proc, error) {
	l.mu.Lock()
	n := len(l.workers)
	var plan workerPlan
	if n < len(l.plans) {
		plan = l.plans[n]
	}
	w := &fakeWorker{pid: 100 + n, plan: plan, started: time.Now(), done: make(chan struct{}),
		pairs: map[int]*conn{}, sessions: map[uint64]*fakeSession{}}
	l.workers = append(l.workers, w)
	l.mu.Unlock()
	if !plan.hangs && plan.greetAfter == 0 {
		return w, nil
	}
	var greeted <-chan time.Time // never, for a start that hangs
	if !plan.hangs {
		greeted = time.After(plan.greetAfter)
	}
	select {
	case <-greeted:
		return w, nil
	case <-ctx.Done():
		w.kill("start: " + context.Cause(ctx).Error())
		<-w.done
		return nil, fmt.Errorf("%w: worker for %s did not start: %w", engine.ErrWorker, opts.Name, context.Cause(ctx))
	}
}

func (l *fakeLauncher) worker(n int) *fakeWorker {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n >= len(l.workers) {
		panic(fmt.Sprintf("fake worker %d of %d", n, len(l.workers)))
	}
	return l.workers[n]
}

func (l *fakeLauncher) started() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.workers)
}

// alive returns the pids of the workers that have not ended.
func (l *fakeLauncher) alive() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var pids []int
	for _, w := range l.workers {
		if !exited(w) {
			pids = append(pids, w.pid)
		}
	}
	return pids
}

// fakeWorker stands in for a worker process: a proc that answers opens and runs as its plan
// says, and ends when the test crashes it, the daemon kills it or asks it to go.
type fakeWorker struct {
	pid     int
	plan    workerPlan
	started time.Time
	done    chan struct{}
	exit    exitInfo // set before done is closed

	mu       sync.Mutex
	gone     bool
	killed   string // why the daemon killed it
	closing  bool   // the daemon asked it to go
	nextFD   int
	pairs    map[int]*conn // the worker's ends of session sockets not yet opened, by made-up descriptor
	nextSID  uint64
	sessions map[uint64]*fakeSession
	opened   []string      // the paths of the opens it was sent
	cancels  []cancelFrame // the cancel frames it was sent
	runs     int           // the runs it was sent
}

var _ proc = (*fakeWorker)(nil)

type fakeSession struct {
	id     uint64
	conn   *conn
	cancel chan uint64 // the run sequence numbers of cancel frames for it
}

type cancelFrame struct {
	session, seq uint64
	at           time.Time
}

func (w *fakeWorker) processID() int         { return w.pid }
func (w *fakeWorker) ended() <-chan struct{} { return w.done }
func (w *fakeWorker) why() exitInfo          { return w.exit }
func (w *fakeWorker) rss() uint64            { return 0 }

// crash ends the worker as a SIGSEGV would.
func (w *fakeWorker) crash() { w.die("killed by SIGSEGV", engine.ExitSignal) }

// die ends the worker once: its sockets close, then its exit is known, as with a process.
func (w *fakeWorker) die(reason, class string) {
	w.mu.Lock()
	if w.gone {
		w.mu.Unlock()
		return
	}
	w.gone = true
	exit := exitInfo{reason: reason, class: class, asked: w.closing && w.killed == ""}
	if w.killed != "" {
		exit.reason, exit.class = w.killed, engine.ExitDeadline
	}
	var conns []*conn
	for _, s := range w.sessions {
		conns = append(conns, s.conn)
	}
	for _, c := range w.pairs {
		conns = append(conns, c)
	}
	w.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	exit.uptime = time.Since(w.started)
	w.exit = exit
	close(w.done)
}

func (w *fakeWorker) kill(reason string) {
	w.mu.Lock()
	if w.killed == "" && reason != "" {
		w.killed = reason
	}
	w.mu.Unlock()
	w.die("killed by SIGKILL", engine.ExitSignal)
}

func (w *fakeWorker) stop(grace time.Duration) {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	if !w.plan.lingers {
		w.die("exited with status 0", engine.ExitError)
	}
	select {
	case <-w.done:
	case <-time.After(grace):
		w.kill("")
		<-w.done
	}
}

func (w *fakeWorker) sessionPair() (*conn, *conn, error) {
	mine, theirs := memPair()
	w.mu.Lock()
	w.nextFD--
	theirs.fd = w.nextFD // made up, and negative: nothing closes it as a descriptor
	w.pairs[theirs.fd] = theirs
	w.mu.Unlock()
	return mine, theirs, nil
}

// call answers opens and session closes; like process.call it fails once the worker is gone
// and, if ctx ends first, kills it when killOnCancel is set.
func (w *fakeWorker) call(ctx context.Context, kind byte, fds []int, killOnCancel bool, build func(e *encoder)) (*decoder, error) {
	var req encoder
	build(&req)
	d := decoder{b: req.b}
	reply := make(chan *encoder, 1)
	switch kind {
	case kindOpen:
		path := d.str()
		if len(fds) != 2 {
			return nil, fmt.Errorf("fake worker: an open with %d descriptors", len(fds))
		}
		w.open(path, fds[0], reply)
	case kindCloseSession:
		w.closeSession(d.uint())
		reply <- &encoder{b: []byte{codeOK}}
	default:
		return nil, fmt.Errorf("fake worker: request kind %d", kind)
	}
	select {
	case e := <-reply:
		rd := &decoder{b: e.b}
		if err := rd.status(); err != nil {
			return nil, err
		}
		return rd, nil
	case <-w.done:
		return nil, died(w, io.EOF)
	case <-ctx.Done():
		cause := context.Cause(ctx)
		if killOnCancel {
			w.kill(cause.Error())
		}
		return nil, cause
	}
}

func (w *fakeWorker) open(path string, fd int, reply chan<- *encoder) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.opened = append(w.opened, path)
	c := w.pairs[fd]
	if w.gone || w.plan.openHangs || c == nil {
		return
	}
	delete(w.pairs, fd)
	w.nextSID++
	s := &fakeSession{id: w.nextSID, conn: c, cancel: make(chan uint64, 8)}
	w.sessions[s.id] = s
	go w.serve(s)
	var e encoder
	e.status(nil)
	e.uint(s.id)
	e.str(engine.ProviderCPU)
	e.signature(engine.Signature{})
	reply <- &e
}

func (w *fakeWorker) closeSession(id uint64) {
	w.mu.Lock()
	s := w.sessions[id]
	delete(w.sessions, id)
	w.mu.Unlock()
	if s != nil {
		s.conn.shutdown()
	}
}

// send takes the one-way frames: cancels.
func (w *fakeWorker) send(kind byte, build func(e *encoder)) error {
	var e encoder
	build(&e)
	d := decoder{b: e.b}
	if kind != kindCancel {
		return fmt.Errorf("fake worker: one-way frame of kind %d", kind)
	}
	sid, seq := d.uint(), d.uint()
	w.mu.Lock()
	if w.gone {
		w.mu.Unlock()
		return fmt.Errorf("send: %w", unix.EPIPE)
	}
	w.cancels = append(w.cancels, cancelFrame{session: sid, seq: seq, at: time.Now()})
	s := w.sessions[sid]
	w.mu.Unlock()
	if s != nil {
		select {
		case s.cancel <- seq:
		case <-w.done:
		}
	}
	return nil
}

// serve answers a session's runs until its socket closes.
func (w *fakeWorker) serve(s *fakeSession) {
	for {
		p, _, err := s.conn.read()
		if err != nil {
			return
		}
		d := decoder{b: p}
		kind, seq := d.u8(), d.uint()
		if kind != kindRun || d.err != nil {
			w.kill(fmt.Sprintf("fake worker: frame kind %d on a session socket", kind))
			return
		}
		w.mu.Lock()
		w.runs++
		w.mu.Unlock()
		var runErr error
		switch w.plan.run {
		case runCrashes:
			w.crash()
			return
		case runIgnoresCancel:
			<-w.done
			return
		case runStopsOnCancel:
			if !w.awaitCancel(s, seq) {
				return
			}
			runErr = fmt.Errorf("%w: %w", engine.ErrRun, context.Canceled)
		}
		if err := s.conn.write(nil, func(e *encoder) {
			e.u8(kindRunReply)
			e.uint(seq)
			e.status(runErr)
			e.uint(0)
			if runErr == nil {
				e.slots(nil)
			}
		}); err != nil {
			return
		}
	}
}

// awaitCancel waits for the cancel of run seq and then stopAfter; false if the worker ended.
func (w *fakeWorker) awaitCancel(s *fakeSession, seq uint64) bool {
	for {
		select {
		case got := <-s.cancel:
			if got != seq {
				continue
			}
			select {
			case <-time.After(w.plan.stopAfter):
				return true
			case <-w.done:
				return false
			}
		case <-w.done:
			return false
		}
	}
}

func (w *fakeWorker) openedPaths() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.opened...)
}

func (w *fakeWorker) cancelFrames() []cancelFrame {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]cancelFrame(nil), w.cancels...)
}

func (w *fakeWorker) runCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.runs
}
