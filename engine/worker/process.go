package worker

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/inferd/inferd/engine"
)

// process is one worker process and the daemon's end of its control socket. Its supervisor
// goroutine waits for it to exit; done is closed once exit says why.
type process struct {
	cmd     *exec.Cmd
	pid     int
	ctl     *conn
	started time.Time

	mu      sync.Mutex
	log     *slog.Logger // changes when a spare is taken
	pending map[uint64]chan reply
	nextID  uint64
	killed  string // why the daemon killed it; empty if it did not
	closing bool   // the daemon asked it to go: its exit is not a failure

	stderr     *tail
	stderrDone chan struct{}
	limit      int64 // its memory limit; 0 for none (guarded by mu, as log is)

	done chan struct{}
	exit exitInfo // set before done is closed
}

type reply struct {
	payload []byte
	err     error
}

// exitInfo is why a worker ended.
type exitInfo struct {
	reason string // "killed by SIGFPE", "out of memory at the 512 MiB limit", ...
	class  string // one of engine.ExitClasses
	uptime time.Duration
	asked  bool // the daemon closed it on purpose
}

// spawn starts a worker and waits for its greeting.
func (iso *Isolator) spawn(ctx context.Context, opts engine.HostOptions, log *slog.Logger) (*process, error) {
	mine, theirs, err := socketpair()
	if err != nil {
		return nil, err
	}
	limit := memoryLimit(opts)
	args := append(append([]string(nil), iso.Args...), "--memory-limit", strconv.FormatInt(limit, 10))
	cmd := exec.Command(iso.Path, args...)
	cmd.Env = iso.Env
	// fd 3 in the worker; the os.File owns the descriptor from here (closing it as theirs
	// too would close whatever reuses the number).
	control := os.NewFile(uintptr(theirs.fd), "control")
	defer control.Close()
	cmd.ExtraFiles = []*os.File{control}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The worker dies with the daemon even if nothing else notices (its control socket
		// closing is the other way it learns).
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		mine.close()
		return nil, fmt.Errorf("worker stderr: %w", err)
	}
	if err := cmd.Start(); err != nil {
		mine.close()
		return nil, fmt.Errorf("starting a worker for %s: %w", opts.Name, err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, ctl: mine, started: time.Now(), pending: map[uint64]chan reply{},
		stderr: newTail(8), stderrDone: make(chan struct{}), limit: limit, done: make(chan struct{})}
	p.log = log.With("worker_pid", p.pid)
	go p.relay(stderr)
	hello := make(chan error, 1)
	go p.readControl(hello)
	go p.wait()
	select {
	case err := <-hello:
		if err != nil {
			p.kill("")
			<-p.done
			return nil, fmt.Errorf("%w: worker for %s did not start: %s", engine.ErrWorker, opts.Name, p.exit.reason)
		}
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%w: worker for %s did not start: %s", engine.ErrWorker, opts.Name, p.exit.reason)
	case <-ctx.Done():
		p.kill("start: " + context.Cause(ctx).Error())
		<-p.done
		return nil, fmt.Errorf("%w: worker for %s did not start: %w", engine.ErrWorker, opts.Name, context.Cause(ctx))
	}
}

// memoryLimit is what the worker may allocate; none for a GPU worker (CUDA maps far more
// address space than it uses, which a data limit counts).
func memoryLimit(opts engine.HostOptions) int64 {
	if opts.GPU {
		return 0
	}
	return opts.MemoryLimit
}

// readControl delivers replies to their callers until the socket closes.
func (p *process) readControl(hello chan<- error) {
	first := true
	for {
		b, fds, err := p.ctl.read()
		closeFDs(fds)
		if err != nil {
			if first {
				hello <- err
			}
			p.failPending(err)
			return
		}
		d := decoder{b: b}
		kind := d.u8()
		if first {
			first = false
			if kind != kindHello {
				hello <- fmt.Errorf("%w: first frame of kind %d, want a greeting", errFrame, kind)
				p.failPending(errFrame)
				return
			}
			hello <- nil
			continue
		}
		id := d.uint()
		if kind != kindReply || d.err != nil {
			p.logger().Warn("worker sent a malformed frame; stopping it", "kind", kind, "err", d.err)
			p.kill("protocol error")
			p.failPending(errFrame)
			return
		}
		p.mu.Lock()
		ch := p.pending[id]
		delete(p.pending, id)
		p.mu.Unlock()
		if ch != nil {
			// The payload lives in the conn's buffer until the next read: hand over a copy.
			ch <- reply{payload: append([]byte(nil), d.b...)}
		}
	}
}

func (p *process) failPending(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, ch := range p.pending {
		ch <- reply{err: err}
		delete(p.pending, id)
	}
}

// call sends a request and waits for its reply. If ctx ends first and kill is set, the worker
// is killed with ctx's cause as the reason (a load cannot be interrupted inside the runtime);
// otherwise the reply is abandoned.
func (p *process) call(ctx context.Context, kind byte, fds []int, killOnCancel bool, build func(e *encoder)) (*decoder, error) {
	ch := make(chan reply, 1)
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	p.pending[id] = ch
	p.mu.Unlock()
	err := p.ctl.write(fds, func(e *encoder) {
		e.u8(kind)
		e.uint(id)
		build(e)
	})
	if err != nil {
		p.forget(id)
		return nil, died(p, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, died(p, r.err)
		}
		d := &decoder{b: r.payload}
		if err := d.status(); err != nil {
			return nil, err
		}
		return d, nil
	case <-ctx.Done():
		p.forget(id)
		cause := context.Cause(ctx)
		if killOnCancel {
			p.kill(cause.Error())
		}
		return nil, cause
	}
}

// send sends a one-way request (no reply comes).
func (p *process) send(kind byte, build func(e *encoder)) error {
	return p.ctl.write(nil, func(e *encoder) {
		e.u8(kind)
		e.uint(0)
		build(e)
	})
}

func (p *process) forget(id uint64) {
	p.mu.Lock()
	delete(p.pending, id)
	p.mu.Unlock()
}

// died turns a broken socket into the worker's exit reason, waiting a little for the exit: a
// socket closes when the process dies, a moment before wait reports it.
func died(p proc, err error) error {
	select {
	case <-p.ended():
		return fmt.Errorf("%w: %s", engine.ErrWorker, p.why().reason)
	case <-time.After(exitWait):
		return fmt.Errorf("%w: lost its socket (%v) and has not exited", engine.ErrWorker, err)
	}
}

// exitWait bounds how long a caller whose socket broke waits for the worker's exit status.
const exitWait = 5 * time.Second

// exited reports whether the worker has ended.
func exited(p proc) bool {
	select {
	case <-p.ended():
		return true
	default:
		return false
	}
}

func (p *process) processID() int                     { return p.pid }
func (p *process) ended() <-chan struct{}             { return p.done }
func (p *process) why() exitInfo                      { return p.exit }
func (p *process) sessionPair() (*conn, *conn, error) { return socketpair() }

// kill ends the worker with SIGKILL; reason, if set, becomes its exit reason (a deadline).
func (p *process) kill(reason string) {
	p.mu.Lock()
	if p.killed == "" && reason != "" {
		p.killed = reason
	}
	p.mu.Unlock()
	_ = unix.Kill(p.pid, unix.SIGKILL)
}

// stop asks the worker to go (its control socket closes, Serve returns) and kills it after
// grace; its exit is not a failure.
func (p *process) stop(grace time.Duration) {
	p.mu.Lock()
	p.closing = true
	p.mu.Unlock()
	p.ctl.shutdown()
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = unix.Kill(p.pid, unix.SIGKILL)
		<-p.done
	}
}

func (p *process) wait() {
	<-p.stderrDone // Wait closes the pipe: read it to the end first
	err := p.cmd.Wait()
	p.ctl.close()
	p.mu.Lock()
	killed, asked, limit := p.killed, p.closing, p.limit
	p.mu.Unlock()
	p.exit = classify(p.cmd.ProcessState, err, killed, p.stderr.lines(), p.stderr.headlines(), limit)
	p.exit.asked = asked && killed == ""
	p.exit.uptime = time.Since(p.started)
	close(p.done)
}

func (p *process) logger() *slog.Logger {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log
}

// adopt makes a spare worker a version's: its memory limit (already set in the worker) and its
// log.
func (p *process) adopt(limit int64, log *slog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limit = limit
	p.log = log.With("worker_pid", p.pid)
}

// relay logs the worker's stderr line by line and keeps the last lines for the exit reason.
func (p *process) relay(r io.Reader) {
	defer close(p.stderrDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	logged := 0
	for sc.Scan() {
		line := sc.Text()
		p.stderr.add(line)
		// A crash report runs to pages of stack traces: the log gets its head.
		if logged < maxLoggedLines {
			p.logger().Warn("worker: " + line)
		} else if logged == maxLoggedLines {
			p.logger().Warn("worker: further output not logged")
		}
		logged++
	}
	_, _ = io.Copy(io.Discard, r) // a line over the scanner's buffer: drain to the end
}

// maxLoggedLines bounds the lines of a worker's stderr that reach the daemon's log.
const maxLoggedLines = 24

// rss is the worker's resident memory in bytes, 0 if unknown.
func (p *process) rss() uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// tail keeps the last n lines written to it, and the first few headlines of a crash report
// (the Go runtime's "fatal error:" and "[signal SIGFPE: ...]", C++'s terminate message), which
// come before pages of stack traces.
type tail struct {
	mu    sync.Mutex
	n     int
	l     []string
	heads []string
}

func isHeadline(line string) bool {
	for _, p := range []string{"fatal error:", "[signal ", "SIG", "panic:", "terminate called", "runtime: out of memory", "runtime/cgo: pthread_create failed"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(line) > 512 {
		line = line[:512] + "…"
	}
	if isHeadline(line) && len(t.heads) < 4 {
		t.heads = append(t.heads, line)
	}
	t.l = append(t.l, line)
	if len(t.l) > t.n {
		t.l = t.l[len(t.l)-t.n:]
	}
}

// lines returns the headlines, then the last lines.
func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append(append([]string(nil), t.heads...), t.l...)
}

// headlines returns the crash report's headlines.
func (t *tail) headlines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.heads...)
}
