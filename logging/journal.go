// Package logging holds inferd's slog handler for systemd's journal: under systemd (stderr is
// the journal's stream, JOURNAL_STREAM), records go to journald over its native protocol with
// every attribute as a journal field of its own (MODEL=mlp, COMPONENT=models, ERR=...), so
// `journalctl -u inferd MODEL=mlp` filters on them and priorities map onto syslog levels. It
// only formats and sends records; choosing a handler is the caller's (cmd's) business.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/journal"
)

// Send delivers one journal entry (go-systemd's journal.Send has this shape).
type Send func(message string, priority journal.Priority, fields map[string]string) error

// Identifier is the SYSLOG_IDENTIFIER of inferd's entries.
const Identifier = "inferd"

// UnderJournal reports whether stderr is connected to the journal (systemd set JOURNAL_STREAM
// to stderr's device and inode) and journald's native socket answers: then NewJournalHandler
// should be used instead of writing lines to stderr.
func UnderJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok && journal.Enabled()
}

// JournalHandler is a slog.Handler that sends each record as one journal entry. MESSAGE is the
// record's message followed by its attributes as key=value (what `journalctl` shows); PRIORITY
// follows the level; each attribute is also a field named by its key in upper case, with
// groups joined by "_" and every character outside [A-Z0-9_] replaced by "_". CODE_FILE,
// CODE_LINE and CODE_FUNC say where the record was logged. A record the journal refuses is
// written to the fallback writer instead, as a plain line.
type JournalHandler struct {
	send     Send
	level    slog.Leveler
	fallback io.Writer
	fbMu     *sync.Mutex
	attrs    []field // from WithAttrs, already prefixed
	groups   []string
}

// field is one attribute, flattened: key is the attribute's dotted path as slog's text handler
// writes it, name its journal field name.
type field struct {
	key, name, value string
}

// NewJournalHandler returns a handler that sends records at level or above with send (nil:
// journal.Send); records that cannot be sent are written to fallback (nil: dropped).
func NewJournalHandler(send Send, level slog.Leveler, fallback io.Writer) *JournalHandler {
	if send == nil {
		send = journal.Send
	}
	if level == nil {
		level = slog.LevelInfo
	}
	if fallback == nil {
		fallback = io.Discard
	}
	return &JournalHandler{send: send, level: level, fallback: fallback, fbMu: new(sync.Mutex)}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	out := *h
	out.attrs = slices.Clip(h.attrs)
	for _, a := range as {
		out.attrs = appendAttr(out.attrs, h.groups, a)
	}
	return &out
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	out := *h
	out.groups = append(slices.Clip(h.groups), name)
	return &out
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	fs := slices.Clip(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		fs = appendAttr(fs, h.groups, a)
		return true
	})
	var msg strings.Builder
	msg.WriteString(r.Message)
	vars := make(map[string]string, len(fs)+5)
	for _, f := range fs {
		msg.WriteByte(' ')
		msg.WriteString(f.key)
		msg.WriteByte('=')
		msg.WriteString(quote(f.value))
		vars[f.name] = f.value
	}
	vars["SYSLOG_IDENTIFIER"] = Identifier
	if r.PC != 0 {
		frame, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		vars["CODE_FILE"] = frame.File
		vars["CODE_LINE"] = strconv.Itoa(frame.Line)
		vars["CODE_FUNC"] = frame.Function
	}
	err := h.send(msg.String(), Priority(r.Level), vars)
	if err != nil {
		h.fbMu.Lock()
		defer h.fbMu.Unlock()
		_, werr := fmt.Fprintf(h.fallback, "%s %s %s (journal: %v)\n", r.Time.Format(time.RFC3339Nano), r.Level, msg.String(), err)
		if werr != nil {
			return fmt.Errorf("journal: %w", err)
		}
	}
	return nil
}

// Priority maps a slog level onto a syslog priority: debug 7, info 6, warn 4, error 3 (and
// levels in between onto the next more severe one).
func Priority(l slog.Level) journal.Priority {
	switch {
	case l < slog.LevelInfo:
		return journal.PriDebug
	case l == slog.LevelInfo:
		return journal.PriInfo
	case l < slog.LevelWarn:
		return journal.PriNotice
	case l < slog.LevelError:
		return journal.PriWarning
	case l == slog.LevelError:
		return journal.PriErr
	default:
		return journal.PriCrit
	}
}

// reserved are the fields the handler sets itself or that journald gives a meaning to; an
// attribute of that name is sent as ATTR_<name> instead.
var reserved = map[string]bool{
	"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "SYSLOG_IDENTIFIER": true,
	"SYSLOG_FACILITY": true, "SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true, "SYSLOG_RAW": true,
	"CODE_FILE": true, "CODE_LINE": true, "CODE_FUNC": true, "ERRNO": true,
	"INVOCATION_ID": true, "USER_INVOCATION_ID": true, "DOCUMENTATION": true, "TID": true,
}

// appendAttr flattens a (groups of) attribute(s) onto fs.
func appendAttr(fs []field, groups []string, a slog.Attr) []field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fs
	}
	if a.Value.Kind() == slog.KindGroup {
		sub := a.Value.Group()
		if a.Key != "" {
			groups = append(slices.Clip(groups), a.Key)
		}
		for _, s := range sub {
			fs = appendAttr(fs, groups, s)
		}
		return fs
	}
	path := append(slices.Clip(groups), a.Key)
	return append(fs, field{key: strings.Join(path, "."), name: FieldName(path), value: valueString(a.Value)})
}

// FieldName is the journal field name of an attribute path: upper case, "_" between groups
// and for every character outside [A-Z0-9_]; one that would start with "_" or a digit (which
// journald refuses or reserves) or that names a field of journald's own gets "ATTR_" in front.
func FieldName(path []string) string {
	var b strings.Builder
	for i, p := range path {
		if i > 0 {
			b.WriteByte('_')
		}
		for _, c := range p {
			switch {
			case c >= 'a' && c <= 'z':
				b.WriteRune(c - 'a' + 'A')
			case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
				b.WriteRune(c)
			default:
				b.WriteByte('_')
			}
		}
	}
	name := b.String()
	if name == "" || name[0] == '_' || (name[0] >= '0' && name[0] <= '9') || reserved[name] {
		name = "ATTR_" + name
	}
	// journald limits field names to 64 characters.
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok && err != nil {
			return err.Error()
		}
	}
	return v.String()
}

// quote writes a value as slog's text handler would: bare when it is a plain word, quoted
// otherwise.
func quote(s string) string {
	if s == "" || !utf8.ValidString(s) || strings.ContainsFunc(s, func(c rune) bool {
		return c <= ' ' || c == '=' || c == '"' || c == 0x7f || !strconv.IsPrint(c)
	}) {
		return strconv.Quote(s)
	}
	return s
}
