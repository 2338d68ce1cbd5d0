package logging_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/inferd/inferd/logging"
)

type entry struct {
	msg    string
	pri    journal.Priority
	fields map[string]string
}

// recorder stands in for journald.
type recorder struct {
	mu      sync.Mutex
	entries []entry
	err     error
}

func (r *recorder) send(msg string, pri journal.Priority, fields map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.entries = append(r.entries, entry{msg, pri, fields})
	return nil
}

func (r *recorder) last(t *testing.T) entry {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.entries) == 0 {
		t.Fatal("nothing sent to the journal")
	}
	return r.entries[len(r.entries)-1]
}

func TestJournalEntry(t *testing.T) {
	rec := &recorder{}
	log := slog.New(logging.NewJournalHandler(rec.send, slog.LevelDebug, nil)).With("component", "models")
	log.WithGroup("load").Warn("model failed to load", "model", "mlp", "version", 3,
		"err", errors.New("bad file\nsecond line"), slog.Group("gpu", "index", 0), "message", "shadow")

	e := rec.last(t)
	if e.pri != journal.PriWarning {
		t.Errorf("priority %d, want %d", e.pri, journal.PriWarning)
	}
	wantMsg := `model failed to load component=models load.model=mlp load.version=3 load.err="bad file\nsecond line" load.gpu.index=0 load.message=shadow`
	if e.msg != wantMsg {
		t.Errorf("MESSAGE\n got %s\nwant %s", e.msg, wantMsg)
	}
	want := map[string]string{
		"SYSLOG_IDENTIFIER": "inferd",
		"COMPONENT":         "models",
		"LOAD_MODEL":        "mlp",
		"LOAD_VERSION":      "3",
		"LOAD_ERR":          "bad file\nsecond line",
		"LOAD_GPU_INDEX":    "0",
		"LOAD_MESSAGE":      "shadow",
	}
	for k, v := range want {
		if got, ok := e.fields[k]; !ok || got != v {
			t.Errorf("field %s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	if !strings.HasSuffix(e.fields["CODE_FILE"], "journal_test.go") || e.fields["CODE_LINE"] == "" ||
		!strings.Contains(e.fields["CODE_FUNC"], "TestJournalEntry") {
		t.Errorf("code location %q:%q in %q", e.fields["CODE_FILE"], e.fields["CODE_LINE"], e.fields["CODE_FUNC"])
	}
	if _, ok := e.fields["MESSAGE"]; ok {
		t.Error("an attribute must not set MESSAGE")
	}
}

func TestReservedAndOddNames(t *testing.T) {
	tests := []struct {
		path []string
		want string
	}{
		{[]string{"model"}, "MODEL"},
		{[]string{"message"}, "ATTR_MESSAGE"},
		{[]string{"priority"}, "ATTR_PRIORITY"},
		{[]string{"_secret"}, "ATTR__SECRET"},
		{[]string{"2xx"}, "ATTR_2XX"},
		{[]string{"http.status-code"}, "HTTP_STATUS_CODE"},
		{[]string{"a", "b"}, "A_B"},
		{[]string{""}, "ATTR_"},
		{[]string{strings.Repeat("x", 80)}, strings.Repeat("X", 64)},
	}
	for _, tt := range tests {
		if got := logging.FieldName(tt.path); got != tt.want {
			t.Errorf("FieldName(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestPriorities(t *testing.T) {
	tests := []struct {
		level slog.Level
		want  journal.Priority
	}{
		{slog.LevelDebug, journal.PriDebug},
		{slog.LevelInfo, journal.PriInfo},
		{slog.LevelInfo + 2, journal.PriNotice},
		{slog.LevelWarn, journal.PriWarning},
		{slog.LevelError, journal.PriErr},
		{slog.LevelError + 4, journal.PriCrit},
	}
	for _, tt := range tests {
		if got := logging.Priority(tt.level); got != tt.want {
			t.Errorf("Priority(%s) = %d, want %d", tt.level, got, tt.want)
		}
	}
}

func TestLevelAndFallback(t *testing.T) {
	rec := &recorder{}
	level := new(slog.LevelVar)
	var fallback bytes.Buffer
	log := slog.New(logging.NewJournalHandler(rec.send, level, &fallback))
	log.Debug("hidden")
	if len(rec.entries) != 0 {
		t.Fatalf("debug record sent at info level: %+v", rec.entries)
	}
	level.Set(slog.LevelDebug)
	log.Debug("shown")
	if rec.last(t).msg != "shown" {
		t.Fatalf("got %q", rec.last(t).msg)
	}
	rec.err = errors.New("journald gone")
	log.Error("still logged", "model", "mlp")
	if got := fallback.String(); !strings.Contains(got, "ERROR still logged model=mlp (journal: journald gone)") {
		t.Errorf("fallback line %q", got)
	}
}

// TestSlogContract runs the standard library's conformance test of slog handlers. The record
// is rebuilt from MESSAGE (its key=value pairs keep the keys' case and group dots, which the
// journal field names fold); the time is journald's own reception stamp, as in the journal.
func TestSlogContract(t *testing.T) {
	rec := &recorder{}
	h := logging.NewJournalHandler(rec.send, slog.LevelDebug, nil)
	slogtest.Run(t, func(*testing.T) slog.Handler {
		rec.mu.Lock()
		rec.entries = nil
		rec.mu.Unlock()
		return h
	}, func(t *testing.T) map[string]any {
		e := rec.last(t)
		words := strings.Fields(e.msg)
		m := map[string]any{slog.MessageKey: words[0], slog.LevelKey: e.pri}
		if !strings.HasSuffix(t.Name(), "/zero-time") {
			m[slog.TimeKey] = "journald" // what a zero time means in the journal is its own stamp too
		}
		for _, kv := range words[1:] {
			k, v, _ := strings.Cut(kv, "=")
			parts := strings.Split(k, ".")
			cur := m
			for _, p := range parts[:len(parts)-1] {
				sub, ok := cur[p].(map[string]any)
				if !ok {
					sub = map[string]any{}
					cur[p] = sub
				}
				cur = sub
			}
			cur[parts[len(parts)-1]] = v
			if name := logging.FieldName(parts); e.fields[name] != v {
				t.Errorf("field %s = %q, MESSAGE says %q", name, e.fields[name], v)
			}
		}
		return m
	})
}
