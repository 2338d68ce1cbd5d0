//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/daemontest"
	"github.com/inferd/inferd/internal/testmodels"
)

// TestHostileBodies starts the real binary with a 48 MiB budget for request bodies in flight
// and has 50 connections each announce a 16 MiB body, send 12 MiB of it and stall. The daemon
// must stay up with its RSS bounded by the budget (unbounded, the bodies alone would take
// 600 MiB), refuse what the budget cannot take with 503 and Retry-After while a small request
// still gets an answer (200, or 503 with Retry-After while the budget is full), and once the
// clients go, serve a full-size body again with nothing left behind (goroutines back to where
// they were).
func TestHostileBodies(t *testing.T) {
	const (
		clients   = 50
		announced = 16 << 20
		sent      = 12 << 20
		budget    = 48 << 20
	)
	root := t.TempDir()
	repo := filepath.Join(root, "models")
	if err := testmodels.WriteRepository(repo); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "inferd.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
[server]
max_request_bytes = %d
max_body_bytes_in_flight = %d
read_timeout = "120s"
[models]
repository = %q
`, announced, budget, repo)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := daemontest.Start(t, daemontest.Build(t, t.TempDir()), cfg)
	d.WaitReady(t)
	addr := strings.TrimPrefix(d.URL, "http://")

	const small = `{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
	infer := func(body string) (int, http.Header, string) {
		resp, err := http.Post(d.URL+"/v2/models/mlp/infer", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("a request to the daemon failed: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for range 20 {
		if code, _, b := infer(small); code != http.StatusOK {
			t.Fatalf("before the attack: %d %s", code, b)
		}
	}
	rss0, g0 := rssKiB(t, d.PID()), goroutines(t, d.URL)

	// Each client sends its headers and most of a body, and then holds the connection open.
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		conns    []net.Conn
		refused  int // connections the daemon answered (503) or closed before the body was sent
		answered = map[string]int{}
	)
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = ' '
	}
	for range clients {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			fmt.Fprintf(c, "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"inputs\":[", addr, announced)
			for n := 0; n < sent; n += len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					mu.Lock()
					refused++
					mu.Unlock()
					return
				}
			}
			// The whole part was taken: an answer now can only be a refusal that came after
			// the bytes were read (none is expected).
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				mu.Lock()
				answered[strings.TrimSpace(line)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	rss1 := rssKiB(t, d.PID())
	t.Logf("%d of %d clients stalled with 12 MiB sent, %d refused, answers to stalled ones %v; RSS %d KiB before, %d KiB while they stall",
		clients-refused, clients, refused, answered, rss0, rss1)
	if refused == 0 {
		t.Errorf("all %d clients' 12 MiB were taken under a budget of 48 MiB", clients)
	}
	if grew := rss1 - rss0; grew > 320<<10 {
		t.Errorf("RSS grew by %d KiB while the clients stall, more than 320 MiB (the budget is 48 MiB; unbounded it would be 600 MiB)", grew)
	}

	// A small request: the budget may be full now, but the answer must come and say so.
	code, h, b := infer(small)
	switch {
	case code == http.StatusOK:
	case code == http.StatusServiceUnavailable && h.Get("Retry-After") != "" && strings.Contains(b, "max_body_bytes_in_flight"):
	default:
		t.Errorf("small request while clients stall: %d %v %s, want 200 or 503 with Retry-After naming the budget", code, h, b)
	}
	if resp, err := http.Get(d.URL + "/v2/health/live"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("live while clients stall: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()

	// Once they are gone the budget is whole again: a small request, and then a body of
	// almost max_request_bytes, are served.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, b := infer(small)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("small request after the clients left: %d %s", code, b)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	large := `{"id":"` + strings.Repeat("x", announced-1024) + `",` + small[1:]
	if code, _, b := infer(large); code != http.StatusOK && code != http.StatusBadRequest {
		t.Errorf("a body of %d bytes after the clients left: %d %.200s", len(large), code, b)
	}
	for {
		g := goroutines(t, d.URL)
		if g <= g0+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %v after the clients left, %v before", g, g0)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	t.Logf("RSS %d KiB after the clients left", rssKiB(t, d.PID()))
}
