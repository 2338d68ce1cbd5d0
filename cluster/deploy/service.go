package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inferd/inferd/cluster"
)

// Node is the gossip node deployments travel through (cluster.Node). Changes is closed on any
// change of members, catalogs or records.
type Node interface {
	Name() string
	Members() []cluster.Member
	PutRecord(r cluster.Record)
	Records(kind string) []cluster.Record
	Changes() <-chan struct{}
}

// Loader is the node's model repository as deploy needs it: Load reconciles one model with
// its files (a new version loads, a removed one drains and unloads) and returns when that is
// done; State reports a version's state in lower case ("ready", "loading", "unavailable") and
// its reason.
type Loader interface {
	Load(ctx context.Context, model string)
	State(model, version string) (state, reason string, found bool)
}

// Config is what a Service needs.
type Config struct {
	Node   Node
	Loader Loader
	Store  *Store
	// Repository is the model repository's directory (read at each install).
	Repository func() string
	// MaxBytes bounds a version (cluster.deploy_max_bytes); Reserve is the free space every
	// fetch and upload leaves on the disk (cluster.deploy_reserve_bytes).
	MaxBytes, Reserve int64
	// Bandwidth bounds this node's transfers to and from peers, each way, in bytes per second
	// (0: none); Transfers bounds its concurrent chunk fetches (0: 4).
	Bandwidth int64
	Transfers int
	// Peers is the HTTP client that reaches the members' listeners, with the cluster's TLS;
	// Scheme is "https" when that is on.
	Peers  *http.Client
	Scheme string
	// Memory reports the memory the process may still use (the repository's probe) and the free
	// memory of the GPU with the most of it (0 without GPUs), gossiped for --replicas; nil: not
	// reported.
	Memory func() (memory, gpu uint64, err error)
	// Download is the client --from URLs are fetched with (default: one whose response
	// headers must come within 30s).
	Download *http.Client
	Logger   *slog.Logger
}

// Stats are the node's deploy counters since it started.
type Stats struct {
	FetchedBytes  uint64 // chunk bytes received from peers (verified or not)
	ServedBytes   uint64 // chunk bytes sent to peers
	CorruptChunks uint64 // chunks whose hash did not match: fetched again elsewhere
	FailedFetches uint64 // chunk requests that failed (network, peer refused)
}

// Service runs deployments on one node: it stores uploads, fetches and installs what the
// cluster's deployment records release to this node, publishes its progress, and, where it
// coordinates a deployment, releases the next wave.
type Service struct {
	cfg     Config
	log     *slog.Logger
	in, out *limiter

	fetched, served, corrupt, failed atomic.Uint64

	cacheMu sync.Mutex
	cache   map[string]cachedDeployment // by record key

	mu      sync.Mutex
	local   map[string]*progress // by model/version: this node's part
	lastGen uint64               // generation of this node's last status or capacity record
	capAt   time.Time            // when the capacity record was last put
	kick    chan struct{}
}

// progress is this node's part in one deployment.
type progress struct {
	digest  string
	status  NodeStatus
	have    bitmap
	running bool // a worker fetches and installs
	sent    NodeStatus
	sentAt  time.Time
}

// New returns a Service; Run drives it.
func New(cfg Config) *Service {
	if cfg.Transfers <= 0 {
		cfg.Transfers = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Peers == nil {
		cfg.Peers = http.DefaultClient
	}
	if cfg.Download == nil {
		cfg.Download = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 30 * time.Second}}
	}
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
	}
	return &Service{cfg: cfg, log: cfg.Logger, in: newLimiter(cfg.Bandwidth), out: newLimiter(cfg.Bandwidth),
		local: map[string]*progress{}, cache: map[string]cachedDeployment{}, kick: make(chan struct{}, 1)}
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{FetchedBytes: s.fetched.Load(), ServedBytes: s.served.Load(), CorruptChunks: s.corrupt.Load(), FailedFetches: s.failed.Load()}
}

// statusInterval bounds how often fetching progress is gossiped.
const statusInterval = 100 * time.Millisecond

// Run reconciles on every change of the cluster's records and every tick, until ctx ends; it
// waits for its workers before it returns.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer s.cfg.Store.Close()
	defer wg.Wait()
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		changed := s.cfg.Node.Changes()
		s.reconcile(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-s.kick:
		case <-t.C:
		}
	}
}

func (s *Service) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// deployments decodes every deployment record, by model/version, with its generation. A
// record is decoded once per generation (manifests are up to 64 KiB of JSON and this runs
// every tick); one that does not decode is logged once and ignored.
func (s *Service) deployments() map[string]heldDeployment {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	out := map[string]heldDeployment{}
	seen := map[string]bool{}
	for _, r := range s.cfg.Node.Records(KindDeployment) {
		seen[r.Key] = true
		c, ok := s.cache[r.Key]
		if !ok || c.gen != r.Generation || !bytes.Equal(c.data, r.Data) {
			d, err := decodeDeployment(r)
			c = cachedDeployment{gen: r.Generation, data: r.Data, d: heldDeployment{d, r.Generation}, err: err}
			s.cache[r.Key] = c
			if err != nil {
				s.log.Warn("deployment record ignored", "key", r.Key, "generation", r.Generation, "err", err)
			}
		}
		if c.err == nil {
			out[r.Key] = c.d
		}
	}
	for k := range s.cache {
		if !seen[k] {
			delete(s.cache, k)
		}
	}
	return out
}

// cachedDeployment is a decoded deployment record.
type cachedDeployment struct {
	gen  uint64
	data []byte
	d    heldDeployment
	err  error
}

type heldDeployment struct {
	Deployment
	gen uint64
}

// statuses returns, for one deployment, each node's status for its digest.
func (s *Service) statuses(model, version, digest string) map[string]NodeStatus {
	out := map[string]NodeStatus{}
	prefix := model + "/" + version + "/"
	for _, r := range s.cfg.Node.Records(KindNodeStatus) {
		if !strings.HasPrefix(r.Key, prefix) {
			continue
		}
		st, err := decodeStatus(r)
		if err != nil || st.Digest != digest {
			continue
		}
		out[st.Node] = st
	}
	return out
}

// capacityInterval is how often the node's capacity is gossiped.
const capacityInterval = 10 * time.Second

// publishCapacity gossips this node's memory available, every capacityInterval.
func (s *Service) publishCapacity() {
	if s.cfg.Memory == nil || time.Since(s.capAt) < capacityInterval {
		return
	}
	mem, gpu, err := s.cfg.Memory()
	if err != nil {
		return
	}
	self := s.cfg.Node.Name()
	data, _ := json.Marshal(Capacity{Node: self, MemoryAvailable: mem, GPUMemoryFree: gpu})
	s.mu.Lock()
	s.capAt = time.Now()
	s.lastGen = max(s.lastGen+1, uint64(time.Now().UnixNano()))
	gen := s.lastGen
	s.mu.Unlock()
	s.cfg.Node.PutRecord(cluster.Record{Kind: KindCapacity, Key: self, Generation: gen, Data: data})
}

func (s *Service) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	s.publishCapacity()
	self := s.cfg.Node.Name()
	members := s.cfg.Node.Members()
	removed := false
	for key, d := range s.deployments() {
		m := &d.Manifest
		if d.Phase == PhaseRemoved {
			removed = s.remove(ctx, key, &d.Deployment) || removed
			continue
		}
		p := s.part(key, &d.Deployment)
		switch {
		case d.releasedTo(self):
			s.startWorker(ctx, wg, key, d.Deployment, p)
		case slices.Contains(d.Targets(), self) || d.AllNodes:
			s.setState(key, StateWaiting, "", false)
		case d.Origin == self:
			s.setState(key, StateStored, "", false)
		}
		s.observeLoad(key, m)
		s.publish(key, false)
		if coordinates(&d.Deployment, self, members) {
			s.advance(d, members)
		}
	}
	if removed {
		s.gc()
	}
}

// part returns this node's progress on a deployment, starting it (with what the store holds
// already) when the digest is new here or the deployment came back after an undeploy.
func (s *Service) part(key string, d *Deployment) *progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.local[key]
	if p != nil && p.digest == d.Digest && p.status.State != StateRemoved {
		return p
	}
	if p != nil && p.running {
		return p // the old worker finishes first
	}
	p = &progress{digest: d.Digest, have: newBitmap(len(d.Manifest.Chunks()))}
	p.status = NodeStatus{Node: s.cfg.Node.Name(), Digest: d.Digest, Total: d.Manifest.Size()}
	for i, c := range d.Manifest.Chunks() {
		if s.cfg.Store.HasBlob(d.Manifest.Files[c.File].SHA256) {
			p.have.set(i)
			p.status.Done += c.Length
		}
	}
	s.local[key] = p
	return p
}

// setState moves this node's state on a deployment; sticky states (fetching onwards) are kept
// by a plain waiting/stored unless force.
func (s *Service) setState(key, state, reason string, force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.local[key]
	if p == nil {
		return
	}
	if !force && p.status.State != "" && p.status.State != StateWaiting && p.status.State != StateStored {
		return
	}
	p.status.State, p.status.Reason = state, truncate(reason)
}

func truncate(s string) string {
	if len(s) > maxReasonLength {
		return s[:maxReasonLength] + "…"
	}
	return s
}

// observeLoad follows an installed version's state in the repository: READY, or failed with
// the repository's reason.
func (s *Service) observeLoad(key string, m *Manifest) {
	s.mu.Lock()
	p := s.local[key]
	installed := p != nil && !p.running && (p.status.State == StateInstalled || p.status.State == StateReady)
	s.mu.Unlock()
	if !installed {
		return
	}
	state, reason, ok := s.cfg.Loader.State(m.Model, m.Version)
	switch {
	case !ok:
		s.setState(key, StateInstalled, "not in the repository index yet", true)
	case state == "ready":
		s.setState(key, StateReady, "", true)
	case state == "unavailable":
		s.setState(key, StateFailed, "load failed: "+reason, true)
	default:
		s.setState(key, StateInstalled, state, true)
	}
}

// publish gossips this node's status on a deployment when it changed (fetch progress at most
// every statusInterval unless now).
func (s *Service) publish(key string, now bool) {
	s.mu.Lock()
	p := s.local[key]
	if p == nil || p.status.State == "" {
		s.mu.Unlock()
		return
	}
	st := p.status
	st.Have = p.have.encode()
	if st == p.sent || !now && st.State == p.sent.State && time.Since(p.sentAt) < statusInterval {
		s.mu.Unlock()
		return
	}
	p.sent, p.sentAt = st, time.Now()
	s.lastGen = max(s.lastGen+1, uint64(time.Now().UnixNano()))
	gen := s.lastGen
	s.mu.Unlock()
	data, _ := json.Marshal(st)
	m, v, _ := strings.Cut(key, "/")
	s.cfg.Node.PutRecord(cluster.Record{Kind: KindNodeStatus, Key: statusKey(m, v, st.Node), Generation: gen, Data: data})
}

// startWorker fetches, installs and loads the version here, once.
func (s *Service) startWorker(ctx context.Context, wg *sync.WaitGroup, key string, d Deployment, p *progress) {
	s.mu.Lock()
	if p.running || p.status.State == StateInstalled || p.status.State == StateReady || p.status.State == StateFailed {
		s.mu.Unlock()
		return
	}
	if s.cfg.Store.installedDigest(d.Manifest.Model, d.Manifest.Version) == d.Digest {
		p.status.State, p.status.Done = StateInstalled, p.status.Total // installed before a restart
		s.mu.Unlock()
		return
	}
	p.running = true
	p.status.State, p.status.Reason = StateFetching, ""
	s.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.work(ctx, key, &d, p)
		s.mu.Lock()
		p.running = false
		switch {
		case ctx.Err() != nil:
		case err != nil:
			p.status.State, p.status.Reason = StateFailed, truncate(err.Error())
		default:
			p.status.State = StateInstalled
		}
		s.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("deployment failed on this node", "model", d.Manifest.Model, "version", d.Manifest.Version, "err", err)
		}
		s.poke()
	}()
}

// work is one node's deployment of a version: space check, fetch, verify, install, load.
func (s *Service) work(ctx context.Context, key string, d *Deployment, p *progress) error {
	m := &d.Manifest
	if m.Size() > s.cfg.MaxBytes {
		return fmt.Errorf("%w: %d bytes, this node's cluster.deploy_max_bytes is %d", ErrTooLarge, m.Size(), s.cfg.MaxBytes)
	}
	var need int64
	for _, f := range m.Files {
		if !s.cfg.Store.HasBlob(f.SHA256) {
			need += f.Size - s.cfg.Store.heldBytes(f, m.ChunkSize)
		}
	}
	if err := checkSpace(s.cfg.Store.Dir(), need, s.cfg.Reserve); err != nil {
		return err
	}
	start := time.Now()
	if err := s.fetch(ctx, key, d, p); err != nil {
		return err
	}
	if need > 0 {
		s.log.Info("version fetched", "model", m.Model, "version", m.Version, "bytes", need, "in", time.Since(start).Round(time.Millisecond))
	}
	repo := s.cfg.Repository()
	if err := s.cfg.Store.install(repo, m, d.Digest); err != nil {
		return err
	}
	s.log.Info("version installed", "model", m.Model, "version", m.Version, "digest", d.Digest[:12])
	s.setState(key, StateInstalled, "", true)
	s.publish(key, true)
	s.cfg.Loader.Load(ctx, m.Model)
	return nil
}

// coordinates reports whether this node releases the deployment's waves: its origin while
// that is alive, else the leader of the routable members (rollout's rule).
func coordinates(d *Deployment, self string, members []cluster.Member) bool {
	if d.Origin == self {
		return true
	}
	for _, m := range members {
		if m.Name == d.Origin && m.Liveness == cluster.LivenessAlive {
			return false
		}
	}
	return lowestRoutable(members) == self
}

func lowestRoutable(members []cluster.Member) string {
	lowest := ""
	for _, m := range members {
		if m.Routable() && (lowest == "" || m.Name < lowest) {
			lowest = m.Name
		}
	}
	return lowest
}

// advance releases the next wave once every alive node of the released ones is READY, and
// stops the deployment at the first failure. A node that is down does not hold the waves
// back: it catches up when it returns.
func (s *Service) advance(d heldDeployment, members []cluster.Member) {
	if d.Phase != PhaseActive {
		return
	}
	alive := map[string]bool{}
	for _, m := range members {
		alive[m.Name] = m.Liveness == cluster.LivenessAlive
	}
	st := s.statuses(d.Manifest.Model, d.Manifest.Version, d.Digest)
	for _, w := range d.Plan[:min(d.Released, len(d.Plan))] {
		for _, n := range w {
			ns := st[n]
			if ns.State == StateFailed {
				d.Phase, d.Reason = PhaseFailed, fmt.Sprintf("node %s: %s", n, ns.Reason)
				s.log.Warn("deployment stopped", "model", d.Manifest.Model, "version", d.Manifest.Version, "reason", d.Reason)
				s.putDeployment(d)
				return
			}
			if alive[n] && ns.State != StateReady {
				return
			}
		}
	}
	if d.Released < len(d.Plan) {
		d.Released++
	} else {
		d.Phase = PhaseComplete
	}
	s.putDeployment(d)
}

func (s *Service) putDeployment(d heldDeployment) {
	data, err := json.Marshal(d.Deployment)
	if err != nil {
		return
	}
	s.cfg.Node.PutRecord(cluster.Record{Kind: KindDeployment, Key: deploymentKey(d.Manifest.Model, d.Manifest.Version),
		Generation: d.gen + 1, Data: data})
	s.poke()
}

// remove takes an undeployed version out of this node's repository; it reports whether
// anything was removed.
func (s *Service) remove(ctx context.Context, key string, d *Deployment) bool {
	s.mu.Lock()
	p := s.local[key]
	if p != nil && p.running {
		s.mu.Unlock()
		return false // its worker ends first (its context is the node's)
	}
	s.mu.Unlock()
	m := &d.Manifest
	if s.cfg.Store.installedDigest(m.Model, m.Version) == "" {
		if p != nil && p.status.State != StateRemoved {
			s.setState(key, StateRemoved, "", true)
			s.publish(key, true)
			return true
		}
		return false
	}
	if err := s.cfg.Store.uninstall(s.cfg.Repository(), m.Model, m.Version); err != nil {
		s.log.Warn("undeploy: version not removed", "model", m.Model, "version", m.Version, "err", err)
		return false
	}
	s.cfg.Loader.Load(ctx, m.Model)
	s.log.Info("version undeployed", "model", m.Model, "version", m.Version)
	if p == nil {
		p = s.part(key, d)
	}
	s.setState(key, StateRemoved, "", true)
	s.publish(key, true)
	return true
}

// gc drops every blob that no deployment still in force needs.
func (s *Service) gc() {
	keep := map[string]bool{}
	for _, d := range s.deployments() {
		if d.Phase == PhaseRemoved {
			continue
		}
		for _, f := range d.Manifest.Files {
			keep[f.SHA256] = true
		}
	}
	freed, err := s.cfg.Store.GC(keep)
	if err != nil {
		s.log.Warn("deploy store: collection incomplete", "err", err)
	}
	if freed > 0 {
		s.log.Info("deploy store: unused files removed", "bytes", freed)
	}
}

// errNoHolder: no member holds a chunk right now.
var errNoHolder = errors.New("no member holds the chunk")
