// Package events keeps the daemon's recent events (model loads and failed loads, configuration
// reloads, rollout steps and aborts, cluster members joining and leaving) in a bounded
// in-memory ring, for `inferd status` and the dashboard. It only stores: the code where an
// event happens logs it as it always has, and the ring forgets the oldest events once it is
// full. It knows nothing of where events come from.
package events

import (
	"sync"
	"time"
)

// Kinds of events. The JSON carries them as written here.
const (
	KindLoad         = "load"          // a model version loaded, or reloaded from changed files
	KindLoadFailed   = "load_failed"   // a model version (or a whole model) failed to load
	KindConfigReload = "config_reload" // the configuration file was reloaded
	KindConfigFailed = "config_failed" // a configuration reload failed; the old one serves
	KindRollout      = "rollout"       // a rollout moved to another step or phase
	KindRolloutAbort = "rollout_abort" // a rollout was aborted: all traffic is back on stable
	KindMemberJoin   = "member_join"   // a cluster member joined or came back
	KindMemberLeave  = "member_leave"  // a cluster member left, failed or stopped answering
)

// Levels of events.
const (
	LevelInfo    = "info"
	LevelWarning = "warning"
	LevelError   = "error"
)

// Event is one thing that happened.
type Event struct {
	// Seq numbers the events of one daemon from 1, without gaps; a client asks for those
	// after the last it saw.
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	Level string    `json:"level"`
	// Model and Version name the model version it is about, if any; Node a cluster member.
	Model   string `json:"model,omitempty"`
	Version string `json:"version,omitempty"`
	Node    string `json:"node,omitempty"`
	// Message says what happened, for people ("failed to load: ...").
	Message string `json:"message"`
}

// DefaultSize is the number of events a ring keeps unless told otherwise.
const DefaultSize = 256

// Ring is a bounded list of the most recent events. It is safe for concurrent use; Add never
// blocks on readers for longer than a copy.
type Ring struct {
	mu   sync.Mutex
	buf  []Event // circular once full; next is the slot of the next event
	next int
	full bool
	seq  uint64
	now  func() time.Time
}

// New returns a ring of size events (DefaultSize when size < 1); now stamps events that come
// without a time (time.Now when nil).
func New(size int, now func() time.Time) *Ring {
	if size < 1 {
		size = DefaultSize
	}
	if now == nil {
		now = time.Now
	}
	return &Ring{buf: make([]Event, size), now: now}
}

// Add records e, numbering it (its Seq is overwritten) and stamping it with the current time
// when it has none; it returns the number given.
func (r *Ring) Add(e Event) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	e.Seq = r.seq
	if e.Time.IsZero() {
		e.Time = r.now()
	}
	if e.Level == "" {
		e.Level = LevelInfo
	}
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	return e.Seq
}

// Since returns the events numbered above seq that the ring still holds, oldest first, at
// most limit of them (the newest ones; every one when limit < 1).
func (r *Ring) Since(seq uint64, limit int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ordered []Event
	if r.full {
		ordered = append(ordered, r.buf[r.next:]...)
	}
	ordered = append(ordered, r.buf[:r.next]...)
	out := make([]Event, 0, len(ordered))
	for _, e := range ordered {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// Last returns the sequence number of the newest event (0 before the first).
func (r *Ring) Last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}
