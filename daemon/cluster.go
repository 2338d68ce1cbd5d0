package daemon

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/admin"
	"github.com/inferd/inferd/cluster/deploy"
	"github.com/inferd/inferd/cluster/policy"
	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/cluster/route"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// clustered is the daemon's part in a cluster: its gossip node, the router in front of the
// local API, the rollout controller and the routing policy in force.
type clustered struct {
	node     *cluster.Node
	router   *route.Router
	rollouts *rollout.Controller
	policy   atomic.Pointer[policy.Policy]
	// policyData is the routing.toml in force, to tell a changed file on reload; written at
	// start and then only under the daemon's reloadMu.
	policyData []byte
	deploy     *deploy.Service // nil without server.state_dir
	stop       context.CancelFunc
	done       sync.WaitGroup
}

// DefaultClusterKeyFile is the gossip key used when cluster.secret_key_file is empty and this
// file exists.
const DefaultClusterKeyFile = "/etc/inferd/cluster.key"

// catalogInterval is how often the node compares its repository index with the catalog it
// advertises; a change is gossiped at once.
const catalogInterval = 250 * time.Millisecond

// startCluster joins the cluster and puts the router in front of next. httpAddr is the
// listener's address, advertised to peers unless cluster.http_advertise says otherwise.
func (d *Daemon) startCluster(ctx context.Context, cfg *config.Config, httpAddr net.Addr, next http.Handler) (*clustered, http.Handler, error) {
	cc := cfg.Cluster
	name := cc.Name
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, nil, fmt.Errorf("cluster.name is empty and the host name is unknown: %w", err)
		}
		name = h
	}
	var key []byte
	keyFile := cc.SecretKeyFile
	if keyFile == "" {
		// Encrypted by default once the well-known key exists (inferd keygen writes it there).
		def := cmp.Or(d.opts.DefaultClusterKeyFile, DefaultClusterKeyFile)
		if _, err := os.Stat(def); err == nil {
			keyFile = def
		}
	}
	if keyFile != "" {
		var err error
		if key, err = cluster.LoadKeyFile(keyFile); err != nil {
			return nil, nil, fmt.Errorf("cluster.secret_key_file %s: %w", keyFile, err)
		}
	}
	advertiseHTTP, err := httpAdvertise(cc, httpAddr)
	if err != nil {
		return nil, nil, err
	}
	pol, polData, err := loadPolicy(cc.PolicyFile)
	if err != nil {
		return nil, nil, err
	}
	log := d.log.With("component", "cluster")
	node, err := cluster.Start(ctx, cluster.Options{
		Name: name, Bind: cc.Bind, Advertise: cc.Advertise, Join: cc.Join, SecretKey: key,
		Label: cc.Label, AllowedCIDRs: cc.AllowedCIDRs, HTTPAddr: advertiseHTTP,
		Class: d.hardwareClass(), Logger: log,
	})
	if err != nil && !errors.Is(err, cluster.ErrJoin) {
		return nil, nil, fmt.Errorf("cluster: %w", err)
	}
	if err != nil {
		// The seeds may simply not be up yet: the re-join loop keeps trying.
		log.Warn("no seed answered yet; serving alone until one does", "join", cc.Join, "err", err)
	}
	c := &clustered{node: node, policyData: polData}
	c.policy.Store(pol)
	c.rollouts, err = rollout.New(rollout.Config{
		Node: name, Store: node, Counters: counters{d.sched}, Leader: rollout.MembersLeader(node.Members),
		Logger: log.With("part", "rollout"),
	})
	if err != nil {
		_ = node.Shutdown()
		return nil, nil, fmt.Errorf("rollouts: %w", err)
	}
	if err := c.rollouts.SetDefinitions(pol.Rollouts); err != nil {
		_ = node.Shutdown()
		return nil, nil, fmt.Errorf("rollouts: %w", err)
	}
	clientTLS := d.sec.peerTLS()
	c.router = route.New(next, node, policy.NewSplits(c.policy.Load, c.rollouts), route.Options{
		Node: name, MaxBodyBytes: d.maxRequestBytes, BodyBudget: d.bodies, PerTryTimeout: cc.PerTryTimeout,
		MaxRetries: retries(cc.MaxRetries), TLS: clientTLS,
	}, log.With("part", "route"))

	deployH, deploySvc, err := d.startDeploy(cfg, c, advertiseHTTP, clientTLS, log)
	if err != nil {
		_ = node.Shutdown()
		return nil, nil, fmt.Errorf("deploy: %w", err)
	}
	c.deploy = deploySvc

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	if deploySvc != nil {
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			_ = deploySvc.Run(runCtx)
		}()
	}
	c.done.Add(3)
	go func() {
		defer c.done.Done()
		_ = c.rollouts.Run(runCtx)
	}()
	go func() {
		defer c.done.Done()
		// A rollout record from another node (an abort, a promotion) steers routing here as
		// soon as gossip delivers it, not at the controller's next tick.
		for {
			changed := node.Changes()
			c.rollouts.Refresh()
			select {
			case <-runCtx.Done():
				return
			case <-changed:
			}
		}
	}()
	go func() {
		defer c.done.Done()
		d.publishCatalog(runCtx, node)
	}()
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		d.clusterEvents(runCtx, c)
	}()

	mux := http.NewServeMux()
	deployH.Register(mux)
	admin.Server{Node: node, Router: c.router, Rollouts: c.rollouts}.Register(mux)
	mux.Handle("/", c.router)
	log.Info("cluster node started", "name", name, "gossip", node.GossipAddr(), "http", advertiseHTTP, "encrypted", key != nil)
	return c, mux, nil
}

// retries maps the config's "0 = none" onto route's "negative = none, 0 = default".
func retries(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// httpAdvertise is the address peers forward requests to.
func httpAdvertise(cc config.Cluster, listen net.Addr) (string, error) {
	if cc.HTTPAdvertise != "" {
		return cc.HTTPAdvertise, nil
	}
	host, port, err := net.SplitHostPort(listen.String())
	if err != nil {
		return "", fmt.Errorf("listener address %s: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		// Listening everywhere: the gossip advertise (or bind) host is the one peers use.
		ghost := cc.Advertise
		if ghost == "" {
			ghost = cc.Bind
		}
		gh, _, err := net.SplitHostPort(ghost)
		if err != nil || gh == "" || net.ParseIP(gh).IsUnspecified() {
			return "", errors.New("server.listen is on all interfaces: set cluster.http_advertise (or cluster.advertise) to the address peers should use")
		}
		host = gh
	}
	return net.JoinHostPort(host, port), nil
}

// publishCatalog keeps the node's advertised catalog equal to the repository's index.
func (d *Daemon) publishCatalog(ctx context.Context, node *cluster.Node) {
	var last []cluster.CatalogVersion
	t := time.NewTicker(catalogInterval)
	defer t.Stop()
	for {
		cur := d.catalog()
		if !slices.Equal(cur, last) {
			if err := node.SetCatalog(cluster.Catalog{Models: cur}); err != nil {
				d.log.Warn("catalog not published", "err", err)
			} else {
				last = cur
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// catalog is the repository's index as peers need it: each version, its state and provider.
func (d *Daemon) catalog() []cluster.CatalogVersion {
	idx := d.repo.Index()
	out := make([]cluster.CatalogVersion, 0, len(idx))
	for _, e := range idx {
		// The catalog speaks the cluster's lower-case state names ("ready", ...), which
		// cluster.Catalog.Ready and the routers of every node match; the repository's are the
		// KServe index's upper-case ones.
		cv := cluster.CatalogVersion{Model: e.Name, Version: e.Version, State: strings.ToLower(string(e.State))}
		if e.State == models.StateReady {
			if v, err := d.repo.Resolve(e.Name, e.Version); err == nil {
				cv.Provider = v.Provider
			}
		}
		out = append(out, cv)
	}
	return out
}

// leave advertises draining, waits for peers to hear it, and is called before the HTTP
// listener stops; close leaves and shuts gossip down after the drain.
func (c *clustered) leave(ctx context.Context, wait time.Duration) {
	if err := c.node.SetServing(cluster.ServingDraining); err != nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (c *clustered) close(ctx context.Context) {
	c.stop()
	c.done.Wait()
	c.router.Close()
	_ = c.node.Leave(ctx)
	_ = c.node.Shutdown()
}

// loadPolicy reads and checks a routing policy file and returns it with its bytes; no file
// is the empty policy.
func loadPolicy(path string) (*policy.Policy, []byte, error) {
	if path == "" {
		return &policy.Policy{Splits: map[string]route.Split{}}, nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("routing policy: %w", err)
	}
	pol, err := policy.Parse(path, data)
	if err != nil {
		return nil, nil, err
	}
	return pol, data, nil
}

// policyChanged reports whether the routing policy at path differs from the one in force
// (an unreadable file counts as changed, so that the reload reports why). Called under the
// daemon's reloadMu.
func (c *clustered) policyChanged(path string) bool {
	if path == "" {
		return c.policyData != nil
	}
	data, err := os.ReadFile(path)
	return err != nil || !bytes.Equal(data, c.policyData)
}

// prepare reads and checks a routing policy; the func it returns puts it in force. Both are
// called under the daemon's reloadMu.
func (c *clustered) prepare(path string) (func(), error) {
	pol, data, err := loadPolicy(path)
	if err != nil {
		return nil, err
	}
	if err := rollout.ValidateDefinitions(pol.Rollouts); err != nil {
		return nil, err
	}
	return func() {
		if err := c.rollouts.SetDefinitions(pol.Rollouts); err != nil {
			return // validated above
		}
		c.policy.Store(pol)
		c.policyData = data
	}, nil
}

// counters gives rollout analysis this node's request counters of a model version.
type counters struct{ s *scheduler.Scheduler }

func (c counters) Snapshot(model, version string) (rollout.Counts, bool) {
	for _, t := range c.s.Totals() {
		if t.Model != model || t.Version != version {
			continue
		}
		o := t.Outcomes
		errs := o[scheduler.OutcomeServerError] + o[scheduler.OutcomeTimeout] + o[scheduler.OutcomeQueueFull]
		out := rollout.Counts{
			Requests: o[scheduler.OutcomeSuccess] + errs, Errors: errs,
			LatencyCount: t.RequestDuration.Count, LatencySum: t.RequestDuration.Sum,
		}
		var cum uint64
		for i, b := range scheduler.LatencyBuckets() {
			cum += t.RequestDuration.Counts[i]
			out.Buckets = append(out.Buckets, rollout.Bucket{UpperBound: b, Count: cum})
		}
		return out, true
	}
	return rollout.Counts{}, false
}

// hardwareClass is what the node advertises to peers: "cpu", or "gpu:<count>x<name>" by the
// first GPU NVML found.
func (d *Daemon) hardwareClass() string {
	if d.opts.GPU == nil {
		return "cpu"
	}
	st := d.opts.GPU.Status()
	if !st.Available || len(st.Devices) == 0 {
		return "cpu"
	}
	return fmt.Sprintf("gpu:%dx%s", len(st.Devices), st.Devices[0].Name)
}
