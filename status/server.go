package status

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/inferd/inferd/events"
	"github.com/inferd/inferd/kserve/kservehttp"
)

// Source is the daemon as the endpoints read it. Its methods answer from memory (GPU
// telemetry within its own timeout) and are called concurrently.
type Source interface {
	// Name is the node's name.
	Name() string
	Status(ctx context.Context) Status
	Events(since uint64, limit int) (last uint64, evs []events.Event)
	History() History
}

// Peer is a cluster member the cluster view asks.
type Peer struct {
	Name     string
	Address  string // host:port of its HTTP listener
	Local    bool
	Liveness string
	// Gone: gossip holds it dead or left, so it is not asked.
	Gone bool
}

// DefaultMemberTimeout bounds the wait for one member's answer in the cluster view.
const DefaultMemberTimeout = 2 * time.Second

// Server serves the endpoints.
type Server struct {
	Source Source
	// Peers lists the cluster's members; nil outside a cluster, where ?cluster=1 answers with
	// this node alone.
	Peers func() []Peer
	// Client asks the members (its transport carries the cluster's TLS); Scheme is "http" or
	// "https" accordingly.
	Client *http.Client
	Scheme string
	// MemberTimeout bounds each member's answer (DefaultMemberTimeout when zero).
	MemberTimeout time.Duration
	Log           *slog.Logger
}

// maxEvents is the most events one answer carries.
const maxEvents = 1000

// statusEvents is how many recent events a Status carries.
const statusEvents = 20

// Register mounts the endpoints on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+Path, s.status)
	mux.HandleFunc("GET "+PathEvents, s.events)
	mux.HandleFunc("GET "+PathHistory, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Source.History())
	})
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("cluster")
	switch q {
	case "", "0", "false":
		writeJSON(w, http.StatusOK, s.Source.Status(r.Context()))
	case "1", "true":
		writeJSON(w, http.StatusOK, s.cluster(r))
	default:
		kservehttp.WriteError(w, http.StatusBadRequest, fmt.Sprintf("cluster=%q: want 1 or 0", q))
	}
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	var since uint64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			kservehttp.WriteError(w, http.StatusBadRequest, fmt.Sprintf("since=%q: want the sequence number of an event", v))
			return
		}
		since = n
	}
	last, evs := s.Source.Events(since, maxEvents)
	if evs == nil {
		evs = []events.Event{}
	}
	writeJSON(w, http.StatusOK, Events{Node: s.Source.Name(), Last: last, Events: evs})
}

// cluster asks every member at once, each within the member timeout, and lists them in the
// order Peers gives; this node answers from its Source.
func (s *Server) cluster(r *http.Request) Cluster {
	local := s.Source.Status(r.Context())
	out := Cluster{Node: local.Node.Name}
	if s.Peers == nil {
		out.Nodes = []Member{{Name: local.Node.Name, Local: true, Reachable: true, Status: &local}}
		return out
	}
	peers := s.Peers()
	out.Nodes = make([]Member, len(peers))
	timeout := s.MemberTimeout
	if timeout <= 0 {
		timeout = DefaultMemberTimeout
	}
	var wg sync.WaitGroup
	for i, p := range peers {
		m := Member{Name: p.Name, Address: p.Address, Local: p.Local, Liveness: p.Liveness}
		switch {
		case p.Local:
			m.Reachable, m.Status = true, &local
		case p.Gone:
			m.Error = "not asked: gossip holds it " + p.Liveness
		case p.Address == "":
			m.Error = "it advertises no HTTP address"
		default:
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(r.Context(), timeout)
				defer cancel()
				c := Client{URL: s.Scheme + "://" + p.Address, Authorization: r.Header.Get("Authorization"), HTTP: s.Client}
				st, err := c.Status(ctx)
				if err != nil {
					m.Error = err.Error()
					if ctx.Err() != nil {
						m.Error = fmt.Sprintf("no answer within %s", timeout)
					}
					if s.Log != nil {
						s.Log.Warn("cluster status: member unreachable", "peer", p.Name, "addr", p.Address, "err", m.Error)
					}
				} else {
					m.Reachable, m.Status = true, &st
				}
				out.Nodes[i] = m
			})
			continue
		}
		out.Nodes[i] = m
	}
	wg.Wait()
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		kservehttp.WriteError(w, http.StatusInternalServerError, "encoding the status: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
