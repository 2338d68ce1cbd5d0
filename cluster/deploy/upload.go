package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/inferd/inferd/cluster"
)

// Request is what an upload asks besides its files.
type Request struct {
	Model, Version string
	Deployer       string
	// Nodes limits the targets (empty: every member, also later ones).
	Nodes []string
	// Replicas, when set, picks that many targets: the members with the most memory available
	// that can admit the version (chooseReplicas).
	Replicas int
	// Wave is the size of the first wave (0: 1); the other targets form the second.
	Wave int
	// From, when set, is an HTTP(S) URL this node downloads the version's model.onnx from
	// instead of reading the request's body; SHA256 is the file's hash, checked before
	// anything is recorded.
	From, SHA256 string
}

// Result is an upload's outcome.
type Result struct {
	Deployment Deployment
	// Unchanged: the same content was deployed already; nothing was done.
	Unchanged bool
}

// Upload stores an upload's files (a tar stream), checks it against what the cluster holds
// (immutable versions), and records the deployment; the waves then run by themselves.
// declared is the upload's size as the client announced it (-1 unknown), checked against the
// free space before a byte is stored.
func (s *Service) Upload(ctx context.Context, body io.Reader, declared int64, req Request) (Result, error) {
	if err := ValidModel(req.Model); err != nil {
		return Result{}, err
	}
	if err := ValidVersion(req.Version); err != nil {
		return Result{}, err
	}
	if declared > s.cfg.MaxBytes {
		return Result{}, fmt.Errorf("%w: %d bytes, cluster.deploy_max_bytes is %d", ErrTooLarge, declared, s.cfg.MaxBytes)
	}
	if err := checkSpace(s.cfg.Store.Dir(), max(declared, 0), s.cfg.Reserve); err != nil {
		return Result{}, err
	}
	if _, _, err := s.plan(req, need{}); err != nil { // names checked before the bytes arrive
		return Result{}, err
	}
	var (
		m   Manifest
		err error
	)
	if req.From != "" {
		m, err = s.download(ctx, req)
	} else {
		m, err = s.cfg.Store.Ingest(body, req.Model, req.Version, req.Deployer, Limits{MaxBytes: s.cfg.MaxBytes, Reserve: s.cfg.Reserve}, time.Now())
	}
	if err != nil {
		return Result{}, err
	}
	plan, all, err := s.plan(req, needOf(s.cfg.Store, &m))
	if err != nil {
		return Result{}, err
	}
	d := Deployment{Manifest: m, Digest: m.Digest(), Origin: s.cfg.Node.Name(), AllNodes: all, Plan: plan, Released: 1, Phase: PhaseActive}
	key := deploymentKey(req.Model, req.Version)
	var gen uint64
	if cur, ok := s.deployments()[key]; ok {
		gen = cur.gen
		if cur.Phase != PhaseRemoved {
			if cur.Digest == d.Digest {
				return Result{Deployment: cur.Deployment, Unchanged: true}, nil
			}
			return Result{}, fmt.Errorf("%w: %s version %s is deployed with digest %s, this upload's is %s; versions are immutable: undeploy it first or deploy another version number",
				ErrImmutable, req.Model, req.Version, cur.Digest[:12], d.Digest[:12])
		}
	}
	if s.cfg.Store.installedDigest(req.Model, req.Version) == "" {
		if _, _, found := s.cfg.Loader.State(req.Model, req.Version); found {
			return Result{}, fmt.Errorf("%w: %s version %s is in this node's repository already, not installed by a deployment",
				ErrImmutable, req.Model, req.Version)
		}
	}
	data, err := json.Marshal(d)
	if err != nil {
		return Result{}, err
	}
	s.cfg.Node.PutRecord(cluster.Record{Kind: KindDeployment, Key: key, Generation: gen + 1, Data: data})
	s.log.Info("version deployed", "model", req.Model, "version", req.Version, "digest", d.Digest[:12],
		"bytes", m.Size(), "waves", plan, "deployer", req.Deployer)
	s.poke()
	return Result{Deployment: d}, nil
}

// download fetches req.From into the store as the version's model.onnx.
func (s *Service) download(ctx context.Context, req Request) (Manifest, error) {
	u, err := url.Parse(req.From)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Manifest{}, fmt.Errorf("%w: --from %q: want an http or https URL", ErrInvalid, req.From)
	}
	if !validHash(req.SHA256) {
		return Manifest{}, fmt.Errorf("%w: --sha256 %q: want 64 lower-case hex digits", ErrInvalid, req.SHA256)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, req.From, nil)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: --from: %v", ErrInvalid, err)
	}
	resp, err := s.cfg.Download.Do(hr)
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: downloading %s: %v", ErrSource, u.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Manifest{}, fmt.Errorf("%w: downloading %s: %s", ErrSource, u.Redacted(), resp.Status)
	}
	if resp.ContentLength > s.cfg.MaxBytes {
		return Manifest{}, fmt.Errorf("%w: %s is %d bytes, cluster.deploy_max_bytes is %d", ErrTooLarge, u.Redacted(), resp.ContentLength, s.cfg.MaxBytes)
	}
	if err := checkSpace(s.cfg.Store.Dir(), max(resp.ContentLength, 0), s.cfg.Reserve); err != nil {
		return Manifest{}, err
	}
	m, err := s.cfg.Store.IngestFile(resp.Body, req.SHA256, req.Model, req.Version, req.Deployer, s.cfg.MaxBytes, time.Now())
	if err != nil {
		return m, fmt.Errorf("downloading %s: %w", u.Redacted(), err)
	}
	return m, nil
}

// need is what a version asks of a node's memory: the model file's bytes, and whether its
// model.toml puts it on a GPU ([instance] device = "gpu").
type need struct {
	bytes int64
	gpu   bool
}

func needOf(s *Store, m *Manifest) need {
	var n need
	for _, f := range m.Files {
		switch f.Path {
		case ModelFile:
			n.bytes = f.Size
		case ConfigFile:
			var cfg struct {
				Instance struct {
					Device string `toml:"device"`
				} `toml:"instance"`
			}
			if data, err := os.ReadFile(s.blobPath(f.SHA256)); err == nil && toml.Unmarshal(data, &cfg) == nil {
				n.gpu = cfg.Instance.Device == "gpu"
			}
		}
	}
	return n
}

// chooseReplicas picks n nodes among those whose capacity is known: the ones with the most
// memory available (GPU memory for a GPU model), names breaking ties, of those that can admit
// the model under the repository's rule (one copy of the weights per instance plus one while
// loading: twice the file for the default single instance; on a GPU, the weights on the GPU
// with the most free memory, twice for the arena). It says why when fewer than n can.
func chooseReplicas(caps []Capacity, n int, nd need) ([]string, error) {
	want := 2 * uint64(nd.bytes)
	room := func(c Capacity) uint64 { return c.MemoryAvailable }
	what := "memory available"
	if nd.gpu {
		room, what = func(c Capacity) uint64 { return c.GPUMemoryFree }, "free GPU memory"
	}
	var fit []Capacity
	for _, c := range caps {
		if room(c) >= want && room(c) > 0 {
			fit = append(fit, c)
		}
	}
	slices.SortFunc(fit, func(a, b Capacity) int {
		if room(a) != room(b) {
			return cmp.Compare(room(b), room(a))
		}
		return strings.Compare(a.Node, b.Node)
	})
	if len(fit) < n {
		return nil, fmt.Errorf("%w: --replicas %d, but only %d of %d nodes report the %d bytes of %s that the model needs",
			ErrInvalid, n, len(fit), len(caps), want, what)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fit[i].Node
	}
	return out, nil
}

// capacities reads the alive members' capacity records.
func (s *Service) capacities() []Capacity {
	alive := map[string]bool{}
	for _, m := range s.cfg.Node.Members() {
		alive[m.Name] = m.Local || m.Liveness == cluster.LivenessAlive
	}
	var out []Capacity
	for _, r := range s.cfg.Node.Records(KindCapacity) {
		var c Capacity
		if json.Unmarshal(r.Data, &c) != nil || c.Node != r.Key || !alive[c.Node] {
			continue
		}
		out = append(out, c)
	}
	return out
}

// plan orders the targets into waves: this node first when it is a target (it holds the files,
// so the first wave costs no transfer), then by name; the first wave has req.Wave nodes, the
// second the rest.
func (s *Service) plan(req Request, nd need) ([][]string, bool, error) {
	self := s.cfg.Node.Name()
	alive := map[string]bool{}
	for _, m := range s.cfg.Node.Members() {
		if m.Liveness == cluster.LivenessAlive || m.Local {
			alive[m.Name] = true
		}
	}
	if req.Replicas < 0 || req.Replicas > 0 && len(req.Nodes) > 0 {
		return nil, false, fmt.Errorf("%w: --replicas and --nodes exclude each other", ErrInvalid)
	}
	targets := slices.Clone(req.Nodes)
	if req.Replicas > 0 {
		var err error
		if targets, err = chooseReplicas(s.capacities(), req.Replicas, nd); err != nil {
			return nil, false, err
		}
	}
	all := len(targets) == 0
	if all {
		for n := range alive {
			targets = append(targets, n)
		}
	}
	slices.Sort(targets)
	targets = slices.Compact(targets)
	for _, n := range targets {
		if _, ok := alive[n]; !ok {
			return nil, false, fmt.Errorf("%w: node %q is not an alive member", ErrInvalid, n)
		}
	}
	sort.SliceStable(targets, func(a, b int) bool { return targets[a] == self && targets[b] != self })
	wave := max(req.Wave, 1)
	if wave >= len(targets) {
		return [][]string{targets}, all, nil
	}
	return [][]string{targets[:wave], targets[wave:]}, all, nil
}
