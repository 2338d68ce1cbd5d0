package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/inferd/inferd/engine"
)

// Isolator starts hosts whose sessions run in worker processes: an engine.Isolator.
type Isolator struct {
	// Path and Args start a worker: the daemon's own binary and its hidden `worker` command
	// with what the worker needs to open ONNX Runtime. The isolator appends --memory-limit;
	// the control socket is descriptor 3.
	Path string
	Args []string
	// Env is the worker's environment (nil: the daemon's).
	Env []string
	// Log receives a line per worker event and the worker's own stderr.
	Log *slog.Logger
	// Grace is how long a run that was cancelled, or a worker asked to exit, has before the
	// worker is killed (default 2s).
	Grace time.Duration
	// StartTimeout bounds a worker's start (exec to its greeting), default 10s: at the first
	// start one more worker is tried, at a restart it counts as a failure.
	StartTimeout time.Duration
	// MaxFailures within FailureWindow make a host give up (defaults 3 and 5 minutes).
	MaxFailures   int
	FailureWindow time.Duration
	// KeepSpare, if set, keeps a worker started ahead for the next Start, for this long
	// unused (spare.go).
	KeepSpare time.Duration

	mu     sync.Mutex
	spare  spares
	closed bool // Close ran: no more spares

	// launch, if set, starts a worker instead of spawn: the supervisor tests' fake.
	launch func(ctx context.Context, opts engine.HostOptions, log *slog.Logger) (proc, error)
}

// proc is a started worker as its host and sessions use it: *process, or the supervisor
// tests' fake, which needs neither a process nor a socket.
type proc interface {
	processID() int
	// ended is closed once the worker is gone; why then says how it ended.
	ended() <-chan struct{}
	why() exitInfo
	// call sends a request on the control socket and waits for its reply (see process.call).
	call(ctx context.Context, kind byte, fds []int, killOnCancel bool, build func(e *encoder)) (*decoder, error)
	// send sends a one-way request on the control socket.
	send(kind byte, build func(e *encoder)) error
	// kill ends the worker at once; reason, if set, becomes its exit reason.
	kill(reason string)
	// stop asks the worker to go and kills it after grace; its exit is not a failure.
	stop(grace time.Duration)
	// rss is its resident memory in bytes, 0 if unknown.
	rss() uint64
	// sessionPair returns a new session socket: the daemon's end and the worker's, which an
	// open hands over.
	sessionPair() (mine, theirs *conn, err error)
}

var _ proc = (*process)(nil)

// startWorker starts a worker and waits for its greeting.
func (iso *Isolator) startWorker(ctx context.Context, opts engine.HostOptions, log *slog.Logger) (proc, error) {
	if iso.launch != nil {
		return iso.launch(ctx, opts, log)
	}
	p, err := iso.spawn(ctx, opts, log)
	if err != nil {
		return nil, err // not a nil *process in a non-nil proc
	}
	return p, nil
}

var _ engine.Isolator = (*Isolator)(nil)

func (iso *Isolator) grace() time.Duration {
	if iso.Grace > 0 {
		return iso.Grace
	}
	return 2 * time.Second
}

// Start starts a worker for one model version and returns its host once the worker is up.
func (iso *Isolator) Start(ctx context.Context, opts engine.HostOptions) (engine.Host, error) {
	log := iso.logger()
	h := &host{iso: iso, opts: opts, log: log.With("host", opts.Name), sessions: map[*session]struct{}{},
		change: make(chan struct{}), failed: make(chan struct{}), closed: make(chan struct{})}
	h.failures = failureWindow{max: iso.MaxFailures, window: iso.FailureWindow}
	// A worker that has not greeted within the start timeout is tried once more: a start
	// costs tens of milliseconds, and one that hangs (seen rarely under the race detector)
	// should not fail the version's load.
	var p proc
	var err error
	for attempt := range 2 {
		sctx, cancel := context.WithTimeoutCause(ctx, iso.startTimeout(), fmt.Errorf("worker start exceeded %s", iso.startTimeout()))
		if attempt == 0 {
			p, err = iso.take(sctx, opts, h.log)
		} else {
			p, err = iso.startWorker(sctx, opts, h.log)
		}
		cancel()
		if err == nil || ctx.Err() != nil || attempt == 1 {
			break
		}
		h.log.Warn("model worker did not start; trying once more", "err", err)
	}
	if err != nil {
		return nil, err
	}
	h.setProcess(p) // not closed: nobody has the host yet
	return h, nil
}

func (iso *Isolator) logger() *slog.Logger {
	if iso.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return iso.Log
}

func (iso *Isolator) startTimeout() time.Duration {
	if iso.StartTimeout > 0 {
		return iso.StartTimeout
	}
	return 10 * time.Second
}

// host supervises the worker of one model version: it starts it again when it dies, opens the
// sessions again in the new worker, and gives up after repeated failures.
type host struct {
	iso  *Isolator
	opts engine.HostOptions
	log  *slog.Logger

	mu       sync.Mutex
	proc     proc          // nil while a new worker is starting
	change   chan struct{} // closed and replaced whenever proc changes
	sessions map[*session]struct{}
	restarts int
	lastExit string
	failures failureWindow
	err      error // why it gave up
	// cancelRestart stops a restart in progress when the host closes.
	cancelRestart context.CancelFunc

	failed    chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ engine.Host = (*host)(nil)

// setProcess makes p the host's worker and supervises it. It reports false, leaving p to the
// caller, if the host has closed: checked under mu, so that Close either sees p or is seen.
func (h *host) setProcess(p proc) bool {
	h.mu.Lock()
	select {
	case <-h.closed:
		h.mu.Unlock()
		return false
	default:
	}
	h.proc = p
	h.changedLocked()
	h.mu.Unlock()
	h.log.Info("model worker started", "worker_pid", p.processID())
	h.event(engine.HostEvent{Kind: engine.WorkerStarted, PID: p.processID()})
	h.wg.Add(1)
	go h.supervise(p)
	return true
}

// changedLocked wakes whoever waits for the worker to change.
func (h *host) changedLocked() {
	if h.change != nil {
		close(h.change)
	}
	h.change = make(chan struct{})
}

func (h *host) event(e engine.HostEvent) {
	if h.opts.OnEvent != nil {
		h.opts.OnEvent(e)
	}
}

// supervise waits for the worker to end and, unless the host is closing, counts the failure
// and starts a new worker or gives up.
func (h *host) supervise(p proc) {
	defer h.wg.Done()
	<-p.ended()
	select {
	case <-h.closed:
		return
	default:
	}
	pid, exit := p.processID(), p.why()
	if exit.asked {
		return
	}
	h.log.Warn("model worker exited", "worker_pid", pid, "reason", exit.reason, "class", exit.class,
		"uptime", exit.uptime.Round(time.Millisecond))
	h.event(engine.HostEvent{Kind: engine.WorkerExited, PID: pid, Reason: exit.reason, Class: exit.class, Uptime: exit.uptime})
	h.mu.Lock()
	h.proc = nil
	h.changedLocked()
	h.mu.Unlock()
	if !h.failure(pid, exit.reason, exit.class) {
		h.restart()
	}
}

// failure records a worker failure and reports whether the host gave up on it.
func (h *host) failure(pid int, reason, class string) bool {
	h.mu.Lock()
	h.lastExit = reason
	giveUp := h.failures.add(time.Now())
	if giveUp {
		h.err = fmt.Errorf("%w: %d failures within %s, the last: %s", engine.ErrWorker, h.failures.limit(), h.failures.span(), reason)
	}
	h.mu.Unlock()
	if giveUp {
		h.log.Error("model worker given up", "reason", h.err)
		h.event(engine.HostEvent{Kind: engine.HostFailed, PID: pid, Reason: h.err.Error(), Class: class})
		close(h.failed)
	}
	return giveUp
}

// restart starts a new worker and opens every session again in it.
func (h *host) restart() {
	start := h.iso.startTimeout()
	ctx, cancel := context.WithTimeoutCause(context.Background(), start, fmt.Errorf("worker start exceeded %s", start))
	defer cancel()
	h.mu.Lock()
	h.cancelRestart = cancel
	h.mu.Unlock()
	select {
	case <-h.closed: // Close may have run before cancelRestart was set
		return
	default:
	}
	p, err := h.iso.take(ctx, h.opts, h.log)
	if err != nil {
		select {
		case <-h.closed:
			return
		default:
		}
		// A worker that cannot even start is a failure like one that dies.
		h.log.Warn("model worker did not start again", "err", err)
		if !h.failure(0, err.Error(), engine.ExitError) {
			h.restart()
		}
		return
	}
	h.mu.Lock()
	h.restarts++
	sessions := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	for _, s := range sessions {
		s.reopen(ctx, p)
	}
	if !h.setProcess(p) {
		p.stop(h.iso.grace()) // Close ran meanwhile
	}
}

// process returns the running worker, waiting while a new one starts.
func (h *host) process(ctx context.Context) (proc, error) {
	for {
		h.mu.Lock()
		p, change, err := h.proc, h.change, h.err
		h.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-h.closed:
			return nil, engine.ErrClosed
		default:
		}
		if p != nil && !exited(p) {
			return p, nil
		}
		select {
		case <-change:
		case <-h.failed:
		case <-h.closed:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Inspect reads a model's signature inside the worker.
func (h *host) Inspect(ctx context.Context, path string) (engine.Signature, error) {
	p, err := h.process(ctx)
	if err != nil {
		return engine.Signature{}, err
	}
	d, err := p.call(ctx, kindInspect, nil, true, func(e *encoder) { e.str(path) })
	if err != nil {
		return engine.Signature{}, err
	}
	sig := d.signature()
	if d.err != nil {
		return engine.Signature{}, frameError("signature", d.err)
	}
	return sig, nil
}

// Open loads a model into a new session inside the worker.
func (h *host) Open(ctx context.Context, path string, opts engine.Options) (engine.Session, error) {
	p, err := h.process(ctx)
	if err != nil {
		return nil, err
	}
	s := &session{host: h, path: path, opts: opts}
	r, err := s.open(ctx, p)
	if err != nil {
		return nil, err
	}
	s.remote = r
	s.sig, s.provider = r.sig, r.provider
	h.mu.Lock()
	h.sessions[s] = struct{}{}
	h.mu.Unlock()
	return s, nil
}

// Status reports the worker as it is now.
func (h *host) Status() engine.HostStatus {
	h.mu.Lock()
	p := h.proc
	st := engine.HostStatus{Restarts: h.restarts, LastExit: h.lastExit}
	h.mu.Unlock()
	if p != nil {
		st.PID = p.processID()
		st.RSSBytes = p.rss()
	}
	return st
}

func (h *host) Failed() <-chan struct{} { return h.failed }

func (h *host) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Close ends the worker: asked to exit, killed after the grace period.
func (h *host) Close() error {
	h.closeOnce.Do(func() {
		close(h.closed)
		h.mu.Lock()
		if h.cancelRestart != nil {
			h.cancelRestart()
		}
		p := h.proc
		sessions := h.sessions
		h.sessions = map[*session]struct{}{}
		h.mu.Unlock()
		for s := range sessions {
			s.markClosed()
		}
		if p != nil {
			p.stop(h.iso.grace())
		}
		h.wg.Wait()
	})
	return nil
}

func (h *host) forget(s *session) {
	h.mu.Lock()
	delete(h.sessions, s)
	h.mu.Unlock()
}

// failureWindow counts worker failures over a sliding window.
type failureWindow struct {
	max    int
	window time.Duration
	at     []time.Time
}

func (f *failureWindow) limit() int {
	if f.max > 0 {
		return f.max
	}
	return 3
}

func (f *failureWindow) span() time.Duration {
	if f.window > 0 {
		return f.window
	}
	return 5 * time.Minute
}

// add records a failure at now and reports whether the limit is reached.
func (f *failureWindow) add(now time.Time) bool {
	keep := f.at[:0]
	for _, t := range f.at {
		if now.Sub(t) < f.span() {
			keep = append(keep, t)
		}
	}
	f.at = append(keep, now)
	return len(f.at) >= f.limit()
}
