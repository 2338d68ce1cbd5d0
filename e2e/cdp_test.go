//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/inferd/inferd/internal/testutil"
)

// A small client of the Chrome DevTools Protocol (JSON messages over a websocket), enough to
// drive headless Chromium from a test: commands with their answers, and events.

// browser is a headless Chromium process.
type browser struct {
	devtools string // http://127.0.0.1:PORT
	cmd      *exec.Cmd
}

var devtoolsListening = regexp.MustCompile(`DevTools listening on ws://([^/]+)/`)

// startChromium runs Debian's chromium headless, with a fresh profile and its own background
// traffic turned off, or skips without it (unless INFERD_REQUIRE_CHROMIUM says it must be
// there).
func startChromium(t *testing.T) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("INFERD_REQUIRE_CHROMIUM") != "" {
			t.Fatal("INFERD_REQUIRE_CHROMIUM is set but chromium is not installed (Debian package chromium)")
		}
		t.Skip("chromium not found: install Debian's chromium package to test the dashboard (.ci/run does)")
	}
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
		"--remote-debugging-address=127.0.0.1", "--remote-allow-origins=*", "--user-data-dir="+t.TempDir(),
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-extensions", "--disable-default-apps", "--metrics-recording-only",
		"--window-size=1400,1100", "about:blank")
	// its own process group: the cleanup ends every process chromium started (renderers,
	// zygotes, the crash handler), which otherwise keep writing the profile directory while
	// the test's TempDir is removed
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait()
		// the others are not this process's children: wait until the group is empty
		testutil.WaitFor(t, 10*time.Second, "chromium's processes gone", func() bool {
			return syscall.Kill(-pgid, 0) != nil
		})
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsListening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return &browser{devtools: "http://" + a, cmd: cmd}
	case <-time.After(60 * time.Second):
		t.Fatal("chromium did not say where DevTools listen")
	}
	return nil
}

// page connects to the browser's first page target.
func (b *browser) page(t *testing.T) *cdp {
	t.Helper()
	resp, err := http.Get(b.devtools + "/json/list")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var targets []struct {
		Type string `json:"type"`
		WS   string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
		t.Fatal(err)
	}
	for _, tg := range targets {
		if tg.Type == "page" {
			ws, err := websocket.Dial(tg.WS, "", b.devtools)
			if err != nil {
				t.Fatal(err)
			}
			ws.MaxPayloadBytes = 64 << 20
			c := &cdp{ws: ws, pending: map[int]chan cdpMessage{}, done: make(chan struct{})}
			go c.read()
			t.Cleanup(func() { ws.Close(); <-c.done })
			return c
		}
	}
	t.Fatalf("no page target in %+v", targets)
	return nil
}

// cdp is one DevTools session.
type cdp struct {
	ws   *websocket.Conn
	done chan struct{}

	mu      sync.Mutex
	next    int
	pending map[int]chan cdpMessage
	events  []cdpMessage
}

type cdpMessage struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

func (c *cdp) read() {
	defer close(c.done)
	for {
		var m cdpMessage
		if err := websocket.JSON.Receive(c.ws, &m); err != nil {
			if err != io.EOF {
				c.mu.Lock()
				for id, ch := range c.pending {
					close(ch)
					delete(c.pending, id)
				}
				c.mu.Unlock()
			}
			return
		}
		c.mu.Lock()
		if m.ID != 0 {
			if ch := c.pending[m.ID]; ch != nil {
				ch <- m
				delete(c.pending, m.ID)
			}
		} else {
			c.events = append(c.events, m)
		}
		c.mu.Unlock()
	}
}

// call sends a command and decodes its result into out (nil: ignore it).
func (c *cdp) call(ctx context.Context, method string, params, out any) error {
	c.mu.Lock()
	c.next++
	id := c.next
	ch := make(chan cdpMessage, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	if err := websocket.JSON.Send(c.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: the connection closed", method)
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value into out.
func (c *cdp) eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := c.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("%s: %s", expr, r.Exception.Text)
	}
	return json.Unmarshal(r.Result.Value, out)
}

// requested lists the URL of every request the page made (Network.requestWillBeSent).
func (c *cdp) requested() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.events {
		if e.Method != "Network.requestWillBeSent" {
			continue
		}
		var p struct {
			Request struct {
				URL string `json:"url"`
			} `json:"request"`
		}
		if json.Unmarshal(e.Params, &p) == nil {
			out = append(out, p.Request.URL)
		}
	}
	return out
}

// consoleErrors lists the page's uncaught exceptions and console errors.
func (c *cdp) consoleErrors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.events {
		switch e.Method {
		case "Runtime.exceptionThrown":
			out = append(out, string(e.Params))
		case "Runtime.consoleAPICalled":
			if strings.Contains(string(e.Params), `"type":"error"`) {
				out = append(out, string(e.Params))
			}
		}
	}
	return out
}
