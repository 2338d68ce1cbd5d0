package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/kserve"
)

// PathDeployments answers GET with a View; PathDeployments/{model}/{version} takes a POST
// (an upload: a tar stream of the version's files) and a DELETE (an undeploy).
const PathDeployments = "/v2/cluster/deployments"

// View is GET /v2/cluster/deployments: every deployment the answering node knows, with each
// node's progress.
type View struct {
	Node        string           `json:"node"`
	Deployments []DeploymentView `json:"deployments"`
}

// DeploymentView is one deployment as the CLI shows it.
type DeploymentView struct {
	Model    string       `json:"model"`
	Version  string       `json:"version"`
	Digest   string       `json:"digest"`
	Bytes    int64        `json:"bytes"`
	Files    int          `json:"files"`
	Deployer string       `json:"deployer,omitempty"`
	Time     time.Time    `json:"time"`
	Origin   string       `json:"origin"`
	AllNodes bool         `json:"all_nodes,omitempty"`
	Waves    [][]string   `json:"waves"`
	Released int          `json:"released"`
	Phase    string       `json:"phase"`
	Reason   string       `json:"reason,omitempty"`
	Nodes    []NodeStatus `json:"nodes"`
	// Unchanged is set on an upload's answer when the same content was deployed already.
	Unchanged bool `json:"unchanged,omitempty"`
}

// Guard says whether a version may be removed now: "" if so, else why not (a rollout or a
// split still sends it traffic, or it is the model's only serving version and force is off).
type Guard func(model, version string, force bool) string

// Handler serves the deploy endpoints; a nil Service answers 503 with why deploy is off.
type Handler struct {
	Service *Service
	// Off says why Service is nil ("server.state_dir is not set").
	Off   string
	Guard Guard
}

// Register mounts the endpoints on mux.
func (h Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathDeployments, h.list)
	mux.HandleFunc("POST "+PathDeployments+"/{model}/{version}", h.upload)
	mux.HandleFunc("DELETE "+PathDeployments+"/{model}/{version}", h.undeploy)
	mux.HandleFunc("GET "+PathPeer+"{hash}", h.chunk)
}

func (h Handler) off(w http.ResponseWriter) bool {
	if h.Service == nil {
		writeError(w, http.StatusServiceUnavailable, "deploy is off on this node: "+h.Off)
		return true
	}
	return false
}

func (h Handler) list(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	writeJSON(w, http.StatusOK, h.Service.View(r.URL.Query().Get("model")))
}

// View lists the deployments (of one model, if model is set) with every node's status.
func (s *Service) View(model string) View {
	v := View{Node: s.cfg.Node.Name(), Deployments: []DeploymentView{}}
	for _, d := range s.deployments() {
		m := &d.Manifest
		if model != "" && m.Model != model {
			continue
		}
		v.Deployments = append(v.Deployments, s.view(&d.Deployment))
	}
	slices.SortFunc(v.Deployments, func(a, b DeploymentView) int {
		return strings.Compare(a.Model+"/"+a.Version, b.Model+"/"+b.Version)
	})
	return v
}

func (s *Service) view(d *Deployment) DeploymentView {
	m := &d.Manifest
	dv := DeploymentView{Model: m.Model, Version: m.Version, Digest: d.Digest, Bytes: m.Size(), Files: len(m.Files),
		Deployer: m.Deployer, Time: m.Time, Origin: d.Origin, AllNodes: d.AllNodes, Waves: d.Plan, Released: d.Released,
		Phase: d.Phase, Reason: d.Reason, Nodes: []NodeStatus{}}
	st := s.statuses(m.Model, m.Version, d.Digest)
	seen := map[string]bool{}
	for _, n := range d.Targets() {
		ns, ok := st[n]
		if !ok {
			ns = NodeStatus{Node: n, Digest: d.Digest, State: StateWaiting, Total: m.Size()}
		}
		ns.Have = ""
		dv.Nodes = append(dv.Nodes, ns)
		seen[n] = true
	}
	for _, n := range slicesSorted(st) {
		if !seen[n] {
			ns := st[n]
			ns.Have = ""
			dv.Nodes = append(dv.Nodes, ns)
		}
	}
	return dv
}

func slicesSorted(m map[string]NodeStatus) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// HeaderBytes carries an upload's total file bytes, so that the node checks its disk and
// cluster.deploy_max_bytes before it stores a byte (the body is checked as it arrives too).
const HeaderBytes = "Inferd-Deploy-Bytes"

// maxWave bounds ?wave=.
const maxWave = 4096

func (h Handler) upload(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	// A large version takes longer than server.read_timeout allows a request.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	q := r.URL.Query()
	req := Request{Model: r.PathValue("model"), Version: r.PathValue("version"), Deployer: q.Get("deployer"),
		From: q.Get("from"), SHA256: q.Get("sha256")}
	if s := q.Get("wave"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxWave {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("wave %q: a number from 1 to %d", s, maxWave))
			return
		}
		req.Wave = n
	}
	if s := q.Get("nodes"); s != "" {
		req.Nodes = strings.Split(s, ",")
	}
	if s := q.Get("replicas"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxWave {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("replicas %q: a number from 1 to %d", s, maxWave))
			return
		}
		req.Replicas = n
	}
	if len(req.Deployer) > maxNameLen {
		req.Deployer = req.Deployer[:maxNameLen]
	}
	declared := int64(-1)
	if n, err := strconv.ParseInt(r.Header.Get(HeaderBytes), 10, 64); err == nil && n >= 0 {
		declared = n
	}
	res, err := h.Service.Upload(r.Context(), r.Body, declared, req)
	if err != nil {
		h.Service.log.Warn("upload refused", "model", req.Model, "version", req.Version, "remote", r.RemoteAddr, "err", err)
		writeError(w, statusOf(err), err.Error())
		return
	}
	dv := h.Service.view(&res.Deployment)
	dv.Unchanged = res.Unchanged
	status := http.StatusAccepted
	if res.Unchanged {
		status = http.StatusOK
	}
	writeJSON(w, status, dv)
}

func (h Handler) undeploy(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	force := r.URL.Query().Get("force") == "true"
	model, version := r.PathValue("model"), r.PathValue("version")
	d, err := h.Service.Undeploy(model, version, func() string {
		if h.Guard == nil {
			return ""
		}
		return h.Guard(model, version, force)
	})
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, h.Service.view(&d))
}

// Removed lists the model's versions that are undeployed (their nodes may still be removing
// them), which no longer count as serving.
func (s *Service) Removed(model string) map[string]bool {
	out := map[string]bool{}
	for _, d := range s.deployments() {
		if d.Manifest.Model == model && d.Phase == PhaseRemoved {
			out[d.Manifest.Version] = true
		}
	}
	return out
}

// Undeploy marks a deployed version removed, unless guard says why it may not be: every node
// then removes it and collects the files no other deployment needs.
func (s *Service) Undeploy(model, version string, guard func() string) (Deployment, error) {
	key := deploymentKey(model, version)
	cur, ok := s.deployments()[key]
	if !ok || cur.Phase == PhaseRemoved {
		return Deployment{}, fmt.Errorf("%w: %s version %s", ErrNotFound, model, version)
	}
	if why := guard(); why != "" {
		return Deployment{}, fmt.Errorf("%w: %s", ErrConflict, why)
	}
	cur.Phase, cur.Reason = PhaseRemoved, "undeployed"
	s.putDeployment(cur)
	s.log.Info("version undeployed by an operator", "model", model, "version", version)
	return cur.Deployment, nil
}

// chunk serves one chunk to a member. Only members may ask (by the source address of the
// connection, against the members' advertised HTTP hosts); over TLS when the cluster has it.
func (h Handler) chunk(w http.ResponseWriter, r *http.Request) {
	if h.off(w) {
		return
	}
	s := h.Service
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !s.isMember(host) {
		s.log.Warn("chunk request refused: not from a member", "remote", r.RemoteAddr)
		writeError(w, http.StatusForbidden, "chunk transfers are for cluster members only")
		return
	}
	q := r.URL.Query()
	size, err1 := strconv.ParseInt(q.Get("size"), 10, 64)
	cs, err2 := strconv.ParseInt(q.Get("chunk_size"), 10, 64)
	i, err3 := strconv.Atoi(q.Get("i"))
	hash := r.PathValue("hash")
	if err := errors.Join(err1, err2, err3); err != nil || !validHash(hash) || cs < minChunkSize || cs > 1<<30 || size < 0 {
		writeError(w, http.StatusBadRequest, "want "+PathPeer+"{sha256}?size=&chunk_size=&i=")
		return
	}
	data, err := s.cfg.Store.readChunk(hash, size, cs, i)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, fs.ErrNotExist) {
			status = http.StatusNotFound
		} else if errors.Is(err, ErrInvalid) {
			status = http.StatusBadRequest
		}
		writeError(w, status, err.Error())
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	n, _ := copyPaced(r.Context(), w, bytes.NewReader(data), s.out)
	s.served.Add(uint64(n))
}

// isMember reports whether host is the HTTP host an alive peer advertises.
func (s *Service) isMember(host string) bool {
	for _, m := range s.cfg.Node.Members() {
		if m.Local || m.Liveness != cluster.LivenessAlive {
			continue
		}
		if h, _, err := net.SplitHostPort(m.HTTPAddr); err == nil && h == host {
			return true
		}
	}
	return false
}

// statusOf maps the package's errors onto HTTP statuses.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrNoSpace):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrImmutable), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrCorrupt):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrSource):
		return http.StatusBadGateway
	case errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, kserve.EncodeError("encoding response: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(kserve.EncodeError(msg))
}
