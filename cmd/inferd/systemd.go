package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sdaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/inferd/inferd/logging"
)

// debugHooksEnv enables test hooks that a production daemon must not have: with
// INFERD_DEBUG_HOOKS=1, SIGUSR2 stops the watchdog heartbeat (as a hung daemon would), which
// is how the systemd suite proves that the watchdog restarts inferd.
const debugHooksEnv = "INFERD_DEBUG_HOOKS"

// journalLogger returns a logger that writes to the journal over its native protocol when w is
// stderr and stderr is the journal's stream (running under systemd); ok is false otherwise.
func journalLogger(w io.Writer, level *slog.LevelVar) (log *slog.Logger, ok bool) {
	if w != io.Writer(os.Stderr) || !logging.UnderJournal() {
		return nil, false
	}
	return slog.New(logging.NewJournalHandler(nil, level, os.Stderr)), true
}

// serviceManager is what systemd hands the daemon besides sd_notify.
type serviceManager struct {
	// listener is the socket of inferd.socket (socket activation); nil: listen as configured.
	listener net.Listener
	// watchdog is WatchdogSec= (WATCHDOG_USEC); 0: none.
	watchdog time.Duration
	// stopHeartbeat yields on SIGUSR2 when the debug hooks are on; nil otherwise.
	stopHeartbeat <-chan struct{}
	// close releases the signal handler.
	close func()
}

func fromServiceManager(getenv func(string) string, log *slog.Logger) (*serviceManager, error) {
	sm := &serviceManager{close: func() {}}
	lns, err := activation.Listeners()
	if err != nil {
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	for _, ln := range lns {
		switch {
		case ln == nil:
		case sm.listener == nil:
			sm.listener = ln
			log.Info("socket activation: serving on the socket systemd passed; [server] listen is not used", "addr", ln.Addr().String())
		default:
			log.Warn("socket activation: more than one socket passed; serving on the first only", "ignored", ln.Addr().String())
			ln.Close()
		}
	}
	if len(lns) > 0 && sm.listener == nil {
		return nil, fmt.Errorf("socket activation: none of the %d file descriptors passed is a stream socket", len(lns))
	}
	if sm.watchdog, err = sdaemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("ignoring the service manager's watchdog setting", "err", err)
		sm.watchdog = 0
	}
	if getenv(debugHooksEnv) == "1" {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR2)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			select {
			case <-sig:
				log.Warn("debug hook: SIGUSR2 received; the watchdog heartbeat stops now")
				close(stop)
			case <-done:
			}
		}()
		sm.stopHeartbeat = stop
		sm.close = func() { signal.Stop(sig); close(done) }
		log.Warn("debug hooks are on (" + debugHooksEnv + "=1): SIGUSR2 stops the watchdog heartbeat")
	}
	return sm, nil
}
