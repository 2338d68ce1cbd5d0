// Package dashboard serves inferd's built-in dashboard: one page of plain HTML, CSS and
// JavaScript embedded in the binary (no build step, no external fonts, scripts or CDNs, so it
// works on an offline LAN). The page reads the status endpoints (package status) with the
// browser's token; the package serves only the files and knows nothing of the data. It must
// not serve anything but its embedded files.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"path"

	"github.com/inferd/inferd/kserve/kservehttp"
)

//go:embed ui
var files embed.FS

// Paths the dashboard serves: the page, and its assets under AssetPrefix.
const (
	PagePath    = "/"
	AssetPrefix = "/ui/"
)

// csp keeps the page to its own origin: no script, style, font, image or connection anywhere
// else, no inline script, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page at / and its assets under /ui/ while enabled returns true, and 404
// otherwise (enabled is asked on every request, so a configuration reload turns it on or off).
func Handler(enabled func() bool) http.Handler {
	ui, err := fs.Sub(files, "ui")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !enabled() {
			kservehttp.WriteError(w, http.StatusNotFound, "the dashboard is off ([server] dashboard = false)")
			return
		}
		name := "index.html"
		if r.URL.Path != PagePath {
			name = path.Clean(r.URL.Path[len(AssetPrefix):])
		}
		data, err := fs.ReadFile(ui, name)
		if err != nil || name == "index.html" && r.URL.Path != PagePath {
			kservehttp.WriteError(w, http.StatusNotFound, "no dashboard file "+r.URL.Path)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", contentType(name))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(data)
		}
	})
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	}
	return "application/octet-stream"
}
