package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/deploy"
	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/hostinfo"
	"github.com/inferd/inferd/metrics"
)

// startDeploy opens the node's deploy store under server.state_dir and returns the deploy
// endpoints' handler and the service to run (nil, with the handler saying why, without a
// state directory).
func (d *Daemon) startDeploy(cfg *config.Config, c *clustered, advertiseHTTP string, peerTLS *tls.Config, log *slog.Logger) (deploy.Handler, *deploy.Service, error) {
	h := deploy.Handler{Guard: c.undeployGuard}
	if cfg.Server.StateDir == "" {
		h.Off = "server.state_dir is not set (deployments are stored under it)"
		return h, nil, nil
	}
	store, err := deploy.OpenStore(filepath.Join(cfg.Server.StateDir, "deploy"))
	if err != nil {
		return h, nil, err
	}
	scheme := "http"
	if peerTLS != nil {
		scheme = "https"
	}
	cc := cfg.Cluster
	svc := deploy.New(deploy.Config{
		Node: c.node, Loader: deployLoader{d}, Store: store,
		Repository: func() string { return d.config().Models.Repository },
		MaxBytes:   cc.DeployMaxBytes, Reserve: cc.DeployReserveBytes, Bandwidth: cc.DeployBandwidth, Transfers: cc.DeployTransfers,
		Peers: peerClient(advertiseHTTP, peerTLS), Scheme: scheme, Logger: log.With("part", "deploy"),
		Memory: d.deployCapacity,
	})
	h.Service = svc
	d.metrics.Registry.MustRegister(metrics.NewDeploy(func() metrics.DeployStats {
		st := svc.Stats()
		return metrics.DeployStats{FetchedBytes: st.FetchedBytes, ServedBytes: st.ServedBytes,
			CorruptChunks: st.CorruptChunks, FailedFetches: st.FailedFetches}
	}))
	return h, svc, nil
}

// deployCapacity is the memory this node may still use and the free memory of its GPU with
// the most of it (0 without GPUs), for inferd deploy --replicas.
func (d *Daemon) deployCapacity() (uint64, uint64, error) {
	m, err := hostinfo.DetectMemory()
	if err != nil {
		return 0, 0, err
	}
	var gpu uint64
	if d.opts.GPU != nil {
		if st := d.opts.GPU.Status(); st.Available {
			for _, dev := range st.Devices {
				gpu = max(gpu, dev.MemoryFree)
			}
		}
	}
	return m.UsableAvailable, gpu, nil
}

// peerClient reaches the members' listeners from this node's advertised address, which is
// what a member's chunk endpoint admits (a multi-homed host, or loopback, would otherwise pick
// another source address).
func peerClient(advertiseHTTP string, peerTLS *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if host, _, err := net.SplitHostPort(advertiseHTTP); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			dialer.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return &http.Client{
		// A chunk (1 MiB and up) paced by deploy_bandwidth may take long; a stuck peer is cut
		// off by the response header timeout and the next holder is tried.
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: peerTLS,
			ResponseHeaderTimeout: 30 * time.Second, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second},
	}
}

// deployLoader is the repository as deploy needs it.
type deployLoader struct{ d *Daemon }

func (l deployLoader) Load(ctx context.Context, model string) {
	l.d.repo.SyncModels(ctx, []string{model})
}

func (l deployLoader) State(model, version string) (string, string, bool) {
	for _, e := range l.d.repo.Index() {
		if e.Name == model && e.Version == version {
			return strings.ToLower(string(e.State)), e.Reason, true
		}
	}
	return "", "", false
}

// undeployGuard says why a version may not be removed now: a rollout or a split still sends
// it traffic, or it is ready somewhere and the model's only version ready on any node (unless
// force).
func (c *clustered) undeployGuard(model, version string, force bool) string {
	for _, st := range c.rollouts.Status() {
		if st.Model != model {
			continue
		}
		switch {
		case !st.Phase.Terminal() && (st.Stable == version || st.Canary == version):
			return fmt.Sprintf("the rollout of %s (%s → %s) is %s: promote or abort it first", model, st.Stable, st.Canary, st.Phase)
		case st.Phase == rollout.PhaseAborted && st.Stable == version:
			return fmt.Sprintf("the aborted rollout of %s sends its traffic to version %s", model, version)
		case (st.Phase == rollout.PhasePromoted || st.Phase == rollout.PhaseCompleted) && st.Canary == version:
			return fmt.Sprintf("the promoted rollout of %s sends its traffic to version %s", model, version)
		}
	}
	if split, ok := c.policy.Load().Splits[model]; ok {
		for _, t := range split.Targets {
			if t.Version == version && t.Weight > 0 {
				return fmt.Sprintf("routing.toml splits %v%% of %s to version %s: change the split first", t.Weight, model, version)
			}
		}
	}
	if force {
		return ""
	}
	removed := map[string]bool{}
	if c.deploy != nil {
		removed = c.deploy.Removed(model) // being removed: not serving for long
	}
	servesIt := false
	for _, m := range c.node.Members() {
		if m.Liveness != cluster.LivenessAlive {
			continue
		}
		for _, v := range m.Catalog.ReadyVersions(model) {
			if v != version && !removed[v] {
				return ""
			}
			servesIt = servesIt || v == version
		}
	}
	if !servesIt {
		return "" // ready nowhere (a deploy that failed): nothing serves it to protect
	}
	return fmt.Sprintf("version %s is the only version of %s ready on any node: undeploy --force removes it anyway", version, model)
}
