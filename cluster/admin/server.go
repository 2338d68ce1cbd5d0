package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/cluster/route"
	"github.com/inferd/inferd/kserve"
)

// Node is the gossip node whose view the members endpoint serves (cluster.Node).
type Node interface {
	Name() string
	Members() []cluster.Member
}

// Router is where the members endpoint reads the routing counters (route.Router).
type Router interface {
	Stats() route.Stats
}

// Controller is the rollout controller the rollout endpoints read and steer
// (rollout.Controller). The actions return rollout.ErrNoDefinition or rollout.ErrNoRollout
// for a model they know nothing of; any other error is a conflict with the rollout's phase.
type Controller interface {
	Status() []rollout.State
	Start(model string) error
	Promote(model string) error
	PromoteFull(model string) error
	Abort(model, reason string) error
}

// Server serves the endpoints from a node, its router and its rollout controller.
type Server struct {
	Node     Node
	Router   Router
	Rollouts Controller
}

// Register mounts the endpoints on mux, and a 404 for every other path under /v2/cluster/.
func (s Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathMembers, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.members())
	})
	mux.HandleFunc("GET "+PathRollouts, func(w http.ResponseWriter, r *http.Request) {
		v := Rollouts{Node: s.Node.Name(), Rollouts: s.Rollouts.Status()}
		if v.Rollouts == nil {
			v.Rollouts = []rollout.State{} // [] rather than null
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("POST "+PathRollouts+"/{model}/{action}", s.act)
	mux.HandleFunc("/v2/cluster/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no cluster endpoint "+r.Method+" "+r.URL.Path)
	})
}

func (s Server) members() Members {
	v := Members{Node: s.Node.Name(), Members: []Member{}, Routing: s.Router.Stats()}
	for _, m := range s.Node.Members() {
		v.Members = append(v.Members, Member{
			Name: m.Name, Local: m.Local, Liveness: m.Liveness, Serving: m.Serving, Routable: m.Routable(),
			HTTPAddr: m.HTTPAddr, GossipAddr: m.GossipAddr, Class: m.Class, Since: m.Since,
			CatalogGeneration: m.Catalog.Generation, CatalogStale: m.Catalog.Generation < m.MetaGeneration,
			Models: append([]cluster.CatalogVersion{}, m.Catalog.Models...),
		})
	}
	return v
}

// act is POST /v2/cluster/rollouts/{model}/{action}: 404 for an unknown action or a model
// without rollout, 409 for an action the rollout's phase refuses, else the rollout's state.
func (s Server) act(w http.ResponseWriter, r *http.Request) {
	model, action := r.PathValue("model"), r.PathValue("action")
	var err error
	switch action {
	case ActionStart:
		err = s.Rollouts.Start(model)
	case ActionPromote:
		err = s.Rollouts.Promote(model)
	case ActionPromoteFull:
		err = s.Rollouts.PromoteFull(model)
	case ActionAbort:
		reason, rerr := abortReason(w, r)
		if rerr != nil {
			writeError(w, http.StatusBadRequest, rerr.Error())
			return
		}
		err = s.Rollouts.Abort(model, reason)
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown rollout action %q (%s, %s, %s, %s)",
			action, ActionStart, ActionPromote, ActionPromoteFull, ActionAbort))
		return
	}
	if err != nil {
		status := http.StatusConflict
		if errors.Is(err, rollout.ErrNoDefinition) || errors.Is(err, rollout.ErrNoRollout) {
			status = http.StatusNotFound
		}
		writeError(w, status, err.Error())
		return
	}
	for _, st := range s.Rollouts.Status() {
		if st.Model == model {
			writeJSON(w, http.StatusOK, st)
			return
		}
	}
	writeJSON(w, http.StatusOK, rollout.State{Model: model})
}

// maxAbortBody bounds the optional {"reason": "..."} of an abort.
const maxAbortBody = 4 << 10

// abortReason reads the optional JSON body of an abort; no body means the default reason.
func abortReason(w http.ResponseWriter, r *http.Request) (string, error) {
	const byOperator = "aborted by an operator"
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAbortBody))
	if err != nil {
		return "", fmt.Errorf("abort body: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return byOperator, nil
	}
	var body abortBody
	if err := json.Unmarshal(data, &body); err != nil {
		return "", fmt.Errorf(`abort body: want {"reason": "..."}: %w`, err)
	}
	if body.Reason == "" {
		return byOperator, nil
	}
	return byOperator + ": " + body.Reason, nil
}

// writeJSON and writeError answer as the rest of the API does (package api): a JSON body, and
// errors as KServe's {"error": "..."}.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, kserve.EncodeError("encoding response: "+err.Error())
	}
	write(w, status, body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	write(w, status, kserve.EncodeError(msg))
}

func write(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
