package dashboard_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/inferd/inferd/dashboard"
)

func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServesThePageAndItsAssets(t *testing.T) {
	var on atomic.Bool
	on.Store(true)
	h := dashboard.Handler(on.Load)
	for _, c := range []struct{ path, ctype, has string }{
		{"/", "text/html; charset=utf-8", `<script src="/ui/app.js"></script>`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "/v2/status?cluster=1"},
		{"/ui/style.css", "text/css; charset=utf-8", "#charts"},
	} {
		resp, body := get(t, h, http.MethodGet, c.path)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != c.ctype || !strings.Contains(body, c.has) {
			t.Errorf("%s: %d %s, body has %q: %v", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.has, strings.Contains(body, c.has))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("%s: CSP %q", c.path, csp)
		}
	}
	if resp, body := get(t, h, http.MethodHead, "/"); resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD /: %d %q", resp.StatusCode, body)
	}
	for _, p := range []string{"/ui/", "/ui/index.html", "/ui/nope.js", "/ui/../dashboard.go", "/ui/%2e%2e/dashboard.go"} {
		if resp, body := get(t, h, http.MethodGet, p); resp.StatusCode != 404 || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s, want a 404 error body", p, resp.StatusCode, body)
		}
	}
	on.Store(false)
	if resp, body := get(t, h, http.MethodGet, "/"); resp.StatusCode != 404 || !strings.Contains(body, "dashboard = false") {
		t.Errorf("turned off: %d %s", resp.StatusCode, body)
	}
}

// The page loads nothing from anywhere but its own origin: no absolute URL, protocol-relative
// URL, CSS import or url() in any file.
func TestNoExternalResources(t *testing.T) {
	h := dashboard.Handler(func() bool { return true })
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(|<iframe|<object|<embed`)
	for _, p := range []string{"/", "/ui/app.js", "/ui/style.css"} {
		_, body := get(t, h, http.MethodGet, p)
		if m := external.FindString(body); m != "" {
			t.Errorf("%s refers to %q", p, m)
		}
	}
}
