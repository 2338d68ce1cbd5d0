package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Deadlines of a server's life cycle.
const (
	startTimeout = 2 * time.Minute  // from exec to answering its readiness check
	stopTimeout  = 45 * time.Second // from SIGTERM to exit (inferd drains, bounded by 30s)
	pollEvery    = 50 * time.Millisecond
)

// server is a running server process: inferd, the Node.js baseline or the floor.
type server struct {
	name    string
	url     string // http://HOST:PORT
	grpc    string // HOST:PORT of inferd's gRPC listener, "" for none
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error         // valid after exited
	logDone chan struct{} // closed when its output is all in the log file
}

// addrFunc extracts the listening address from one line of a server's output.
type addrFunc func(line string) (string, bool)

// inferdAddr reads inferd's JSON log line {"msg":"listening","addr":"HOST:PORT"}.
func inferdAddr(line string) (string, bool) {
	var rec struct{ Msg, Addr string }
	if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "listening" || rec.Addr == "" {
		return "", false
	}
	return rec.Addr, true
}

// listeningAddr reads the "listening HOST:PORT" line of the Node.js server and the floor.
func listeningAddr(line string) (string, bool) {
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	return addr, ok && addr != ""
}

// start runs argv with env, copies its stdout and stderr to logPath, waits for the line that
// gives its address, then polls readyPath until it answers 200; all within startTimeout. On
// failure the process is stopped and the error names the log.
func start(ctx context.Context, name string, argv, env []string, logPath string, addrOf addrFunc, readyPath string) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, pw, pw
	if err := cmd.Start(); err != nil {
		logf.Close()
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	pw.Close()
	s := &server{name: name, cmd: cmd, exited: make(chan struct{}), logDone: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		defer close(s.logDone)
		defer logf.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if !found {
				if addr, ok := addrOf(line); ok {
					found = true
					addrc <- addr
				}
			}
		}
		_, _ = io.Copy(logf, pr) // a line over the scanner's limit: keep the rest verbatim
	}()
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	fail := func(err error) (*server, error) {
		s.stop()
		return nil, fmt.Errorf("%s: %w (log: %s)", name, err, logPath)
	}
	select {
	case addr := <-addrc:
		s.url = "http://" + addr
	case <-s.exited:
		return fail(fmt.Errorf("exited before listening: %v", s.waitErr))
	case <-ctx.Done():
		return fail(fmt.Errorf("no listening address within %s: %w", startTimeout, ctx.Err()))
	}
	if err := s.pollReady(ctx, readyPath); err != nil {
		return fail(err)
	}
	return s, nil
}

// pollReady asks GET url+path until it answers 200, the process exits or ctx ends.
func (s *server) pollReady(ctx context.Context, path string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	last := errors.New("not asked yet")
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err != nil {
			last = err
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		select {
		case <-tick.C:
		case <-s.exited:
			return fmt.Errorf("exited before ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last answer: %v)", ctx.Err(), last)
		}
	}
}

// stop sends SIGTERM and waits for the exit, with SIGKILL after stopTimeout. It returns an
// error when the process did not exit cleanly (a benchmark note, not a failure).
func (s *server) stop() error {
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(stopTimeout)
		select {
		case <-s.exited:
			timer.Stop()
		case <-timer.C:
			_ = s.cmd.Process.Kill()
			<-s.exited
			<-s.logDone
			return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", s.name, stopTimeout)
		}
	}
	<-s.logDone
	var exit *exec.ExitError
	if errors.As(s.waitErr, &exit) && !exit.Success() {
		return fmt.Errorf("%s exited with %v", s.name, s.waitErr)
	}
	return s.waitErr
}
