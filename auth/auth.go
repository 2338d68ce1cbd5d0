// Package auth guards the HTTP API with bearer tokens read from a file. Each token carries one
// scope: "infer" (inference, metadata, statistics, health details, cluster views) or "admin"
// (all of infer, plus repository load/unload, rollout control and other endpoints that change
// what the node serves). Tokens are kept only as SHA-256 hashes and compared in constant
// time; the file is re-read when it changes, and a file that fails to parse leaves the
// previous tokens in force.
//
// auth decides who may call what; it does not know the routes beyond the classification
// function it is given, and it does not terminate TLS.
package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/kserve"
)

// Scope is what a token, or an endpoint, is about.
type Scope int

// Scopes, from least to most privileged. A token of a scope may call every endpoint of that
// scope and below.
const (
	// Open endpoints need no token (liveness and readiness probes by default).
	Open Scope = iota
	// Infer is inference, model metadata, statistics and read-only views.
	Infer
	// Admin changes what the node serves: repository load/unload, rollout control.
	Admin
)

func (s Scope) String() string {
	switch s {
	case Open:
		return "open"
	case Infer:
		return "infer"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("scope(%d)", int(s))
}

// ParseScope reads a scope name as written in the token file and the configuration.
func ParseScope(s string) (Scope, error) {
	switch s {
	case "open":
		return Open, nil
	case "infer":
		return Infer, nil
	case "admin":
		return Admin, nil
	}
	return 0, fmt.Errorf("unknown scope %q (want open, infer or admin)", s)
}

// MinTokenLength is the shortest token the file may hold: shorter ones are guessable.
const MinTokenLength = 16

// ErrNoTokens is wrapped by LoadTokens for a file without any token.
var ErrNoTokens = errors.New("no tokens in file")

type entry struct {
	hash  [sha256.Size]byte
	scope Scope
}

// parseTokens reads a token file: one token per line as "<scope> <token>", where scope is
// infer or admin; blank lines and lines starting with # are ignored. Errors name the line but
// never echo a token.
func parseTokens(data []byte) ([]entry, error) {
	var out []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"<scope> <token>\", found %d fields", line, len(fields))
		}
		scope, err := ParseScope(fields[0])
		if err != nil || scope == Open {
			return nil, fmt.Errorf("line %d: scope %q: want infer or admin", line, fields[0])
		}
		if len(fields[1]) < MinTokenLength {
			return nil, fmt.Errorf("line %d: token shorter than %d characters", line, MinTokenLength)
		}
		out = append(out, entry{hash: sha256.Sum256([]byte(fields[1])), scope: scope})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading tokens: %w", err)
	}
	if len(out) == 0 {
		return nil, ErrNoTokens
	}
	return out, nil
}

// Tokens is the set of valid tokens, loaded from a file and reloaded when it changes.
type Tokens struct {
	path  string
	log   *slog.Logger
	now   func() time.Time
	every time.Duration

	mu      sync.Mutex
	entries []entry
	stamp   fileStamp
	checked time.Time
	lastErr error
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
}

// LoadTokens reads the token file at path. It fails if the file cannot be read, is readable
// by other users (mode wider than 0640), or holds no valid token.
func LoadTokens(path string, log *slog.Logger) (*Tokens, error) {
	t := &Tokens{path: path, log: log, now: time.Now, every: time.Second}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Err is the error of the last reload attempt, nil when the file in force is the newest.
func (t *Tokens) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

// Reload re-reads the file now. On failure the previous tokens stay in force.
func (t *Tokens) Reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reloadLocked()
}

func (t *Tokens) reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.reloadLocked()
}

func (t *Tokens) reloadLocked() error {
	st, err := stat(t.path)
	if err == nil && st.mode&0o007 != 0 {
		err = fmt.Errorf("token file %s is accessible to other users (mode %04o); chmod 0600 or 0640", t.path, st.mode)
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(t.path)
	}
	var entries []entry
	if err == nil {
		entries, err = parseTokens(data)
		if err != nil {
			err = fmt.Errorf("token file %s: %w", t.path, err)
		}
	}
	t.checked = t.now()
	if err != nil {
		t.lastErr = err
		return err
	}
	t.entries, t.stamp, t.lastErr = entries, st.fileStamp, nil
	return nil
}

// refreshLocked re-reads the file when its size, mtime or inode changed, at most once per
// t.every: cheap enough to run on requests, and rotation needs no restart or signal.
func (t *Tokens) refreshLocked() {
	now := t.now()
	if now.Sub(t.checked) < t.every {
		return
	}
	t.checked = now
	st, err := stat(t.path)
	if err == nil && st.fileStamp == t.stamp {
		return
	}
	if err := t.reloadLocked(); err != nil && t.log != nil {
		t.log.Error("token file not reloaded; the previous tokens stay in force", "err", err)
	} else if t.log != nil {
		t.log.Info("token file reloaded", "path", t.path, "tokens", len(t.entries))
	}
}

// Scope returns the scope of the token, or false when it is not a valid token. Every entry is
// compared, in constant time, so the answer's timing does not tell which one matched.
func (t *Tokens) Scope(token string) (Scope, bool) {
	h := sha256.Sum256([]byte(token))
	t.mu.Lock()
	t.refreshLocked()
	entries := t.entries
	t.mu.Unlock()
	best, found := Open, 0
	for _, e := range entries {
		eq := subtle.ConstantTimeCompare(h[:], e.hash[:])
		found |= eq
		if eq == 1 && e.scope > best {
			best = e.scope
		}
	}
	return best, found == 1
}

type fileInfo struct {
	fileStamp
	mode fs.FileMode
}

func stat(path string) (fileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileInfo{}, fmt.Errorf("token file: %w", err)
	}
	return fileInfo{fileStamp: fileStamp{size: fi.Size(), mtime: fi.ModTime(), ino: inode(fi)}, mode: fi.Mode().Perm()}, nil
}

// Classifier says which scope a request needs.
type Classifier func(r *http.Request) Scope

// Denied counts refusals for the metrics: reason is "missing" (no or malformed token, 401),
// "invalid" (unknown token, 401) or "scope" (valid token, scope too low, 403).
type Denied func(reason string)

// Middleware checks the bearer token of every request against the scope classify gives it.
func Middleware(next http.Handler, tokens *Tokens, classify Classifier, denied Denied) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := classify(r)
		if need == Open {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := ParseBearer(r.Header.Get("Authorization"))
		if !ok {
			refuse(w, denied, "missing", http.StatusUnauthorized, "this endpoint needs a bearer token (Authorization: Bearer <token>)")
			return
		}
		have, ok := tokens.Scope(token)
		if !ok {
			refuse(w, denied, "invalid", http.StatusUnauthorized, "the bearer token is not valid")
			return
		}
		if have < need {
			refuse(w, denied, "scope", http.StatusForbidden, fmt.Sprintf("this endpoint needs a token of scope %s; this token has scope %s", need, have))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ParseBearer returns the token of an Authorization value "Bearer <token>" (the scheme in any
// case), for every front end that takes bearer tokens: HTTP headers and gRPC metadata alike.
func ParseBearer(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(prefix):])
	return tok, tok != ""
}

func refuse(w http.ResponseWriter, denied Denied, reason string, status int, msg string) {
	if denied != nil {
		denied(reason)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="inferd"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(kserve.EncodeError(msg))
}
