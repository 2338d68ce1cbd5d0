package auth

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	inferTok = "infer-token-0123456789"
	adminTok = "admin-token-0123456789"
)

func writeTokens(t *testing.T, dir, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, "tokens")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTokens(t *testing.T) {
	cases := []struct {
		name, body, err string
		n               int
	}{
		{"two scopes with comments", "# ops\ninfer " + inferTok + "\n\nadmin " + adminTok + "\n", "", 2},
		{"empty", "# nothing\n", "no tokens", 0},
		{"one field", "infer\n", "line 1: want", 0},
		{"three fields", "infer a b\n", "found 3 fields", 0},
		{"unknown scope", "root " + inferTok + "\n", `line 1: scope "root"`, 0},
		{"open is not a token scope", "open " + inferTok + "\n", `scope "open"`, 0},
		{"short token", "infer short\n", "shorter than 16", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseTokens([]byte(c.body))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want it to contain %q", err, c.err)
				}
				if strings.Contains(err.Error(), inferTok) {
					t.Fatalf("error echoes the token: %v", err)
				}
				return
			}
			if err != nil || len(got) != c.n {
				t.Fatalf("got %d entries, err %v; want %d", len(got), err, c.n)
			}
		})
	}
}

func TestLoadTokensRefusesWorldReadableFile(t *testing.T) {
	p := writeTokens(t, t.TempDir(), "infer "+inferTok+"\n", 0o644)
	if _, err := LoadTokens(p, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "other users") {
		t.Fatalf("err = %v, want a mode complaint", err)
	}
}

// fakeClock lets the reload interval pass without waiting.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestTokensReloadOnChangeAndKeepOldOnError(t *testing.T) {
	dir := t.TempDir()
	p := writeTokens(t, dir, "infer "+inferTok+"\n", 0o600)
	tok, err := LoadTokens(p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Now()}
	tok.now = clock.now

	if s, ok := tok.Scope(inferTok); !ok || s != Infer {
		t.Fatalf("Scope(infer) = %v, %v", s, ok)
	}
	if _, ok := tok.Scope(adminTok); ok {
		t.Fatal("an unknown token was accepted")
	}

	// Rotation: the new file replaces the old by rename.
	writeTokens(t, dir, "admin "+adminTok+"\n", 0o600)
	if _, ok := tok.Scope(adminTok); ok {
		t.Fatal("the file was re-read before the check interval passed")
	}
	clock.add(2 * time.Second)
	if s, ok := tok.Scope(adminTok); !ok || s != Admin {
		t.Fatalf("after rotation Scope(admin) = %v, %v", s, ok)
	}
	if _, ok := tok.Scope(inferTok); ok {
		t.Fatal("a rotated-out token is still accepted")
	}

	// A broken file leaves the tokens in force and says why.
	writeTokens(t, dir, "admin short\n", 0o600)
	clock.add(2 * time.Second)
	if s, ok := tok.Scope(adminTok); !ok || s != Admin {
		t.Fatalf("after a bad edit Scope(admin) = %v, %v; the previous tokens must stay", s, ok)
	}
	if tok.Err() == nil {
		t.Fatal("Err() is nil after a failed reload")
	}
}

func TestMiddleware(t *testing.T) {
	p := writeTokens(t, t.TempDir(), "infer "+inferTok+"\nadmin "+adminTok+"\n", 0o600)
	tok, err := LoadTokens(p, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	denials := map[string]int{}
	var mu sync.Mutex
	h := Middleware(ok, tok, Classify(Policy{Metrics: Infer}), func(reason string) {
		mu.Lock()
		denials[reason]++
		mu.Unlock()
	})

	cases := []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/v2/health/ready", "", http.StatusTeapot},
		{"GET", "/health", "", http.StatusTeapot},
		{"GET", "/ready", "", http.StatusTeapot},
		{"GET", "/metrics", "", http.StatusUnauthorized},
		{"GET", "/metrics", "Bearer " + inferTok, http.StatusTeapot},
		{"POST", "/v2/models/mlp/infer", "", http.StatusUnauthorized},
		{"POST", "/v2/models/mlp/infer", "Basic " + inferTok, http.StatusUnauthorized},
		{"POST", "/v2/models/mlp/infer", "Bearer ", http.StatusUnauthorized},
		{"POST", "/v2/models/mlp/infer", "Bearer not-a-valid-token-at-all", http.StatusUnauthorized},
		{"POST", "/v2/models/mlp/infer", "Bearer " + inferTok, http.StatusTeapot},
		{"POST", "/v2/models/mlp/infer", "bearer " + adminTok, http.StatusTeapot},
		{"GET", "/v2/models/mlp", "Bearer " + inferTok, http.StatusTeapot},
		{"POST", "/v2/repository/index", "Bearer " + inferTok, http.StatusTeapot},
		{"POST", "/v2/repository/models/mlp/unload", "Bearer " + inferTok, http.StatusForbidden},
		{"POST", "/v2/repository/models/mlp/load", "Bearer " + adminTok, http.StatusTeapot},
		{"GET", "/v2/cluster/members", "Bearer " + inferTok, http.StatusTeapot},
		{"POST", "/v2/cluster/rollouts/mlp/abort", "Bearer " + inferTok, http.StatusForbidden},
		{"POST", "/v2/cluster/rollouts/mlp/abort", "Bearer " + adminTok, http.StatusTeapot},
		{"POST", "/v2/cluster/deployments/mlp/2", "Bearer " + inferTok, http.StatusForbidden},
		{"POST", "/v2/cluster/deployments/mlp/2", "Bearer " + adminTok, http.StatusTeapot},
		{"DELETE", "/v2/cluster/deployments/mlp/2", "Bearer " + inferTok, http.StatusForbidden},
		{"GET", "/v2/cluster/deployments", "", http.StatusUnauthorized},
		{"GET", "/v2/cluster/deploy/peer/00", "", http.StatusTeapot},
		{"POST", "/v2/cluster/deploy/peer/00", "", http.StatusUnauthorized},
	}
	for _, c := range cases {
		req := httptest.NewRequest(c.method, c.path, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s %s with %q: status %d, want %d", c.method, c.path, c.auth, rec.Code, c.want)
			continue
		}
		if c.want == http.StatusTeapot {
			continue
		}
		var body struct{ Error string }
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error == "" {
			t.Errorf("%s %s: body %q is not a KServe error", c.method, c.path, rec.Body)
		}
		if strings.Contains(rec.Body.String(), inferTok) || strings.Contains(rec.Body.String(), adminTok) {
			t.Errorf("%s %s: the error echoes a token", c.method, c.path)
		}
		if c.want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", c.method, c.path)
		}
	}
	if denials["missing"] != 6 || denials["invalid"] != 1 || denials["scope"] != 4 {
		t.Errorf("denials = %v, want missing 6, invalid 1, scope 4", denials)
	}
}

func TestProtectedProbes(t *testing.T) {
	c := Classify(Policy{ProtectProbes: true})
	for _, path := range []string{"/health", "/ready", "/v2/health/live"} {
		if got := c(httptest.NewRequest("GET", path, nil)); got != Infer {
			t.Errorf("%s: scope %v, want infer", path, got)
		}
	}
	if got := Classify(Policy{})(httptest.NewRequest("GET", "/metrics", nil)); got != Open {
		t.Errorf("/metrics by default: %v, want open", got)
	}
}
