package daemon

import (
	"cmp"
	"context"
	"crypto/x509"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/cluster"
	"github.com/inferd/inferd/cluster/policy"
	"github.com/inferd/inferd/cluster/rollout"
	"github.com/inferd/inferd/dashboard"
	"github.com/inferd/inferd/events"
	"github.com/inferd/inferd/hostinfo"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
	"github.com/inferd/inferd/status"
	"github.com/inferd/inferd/window"
)

// sampleInterval is how often the windowed statistics copy the scheduler's counters.
const sampleInterval = time.Second

// observer is what the status endpoint and the dashboard read beyond the repository and the
// scheduler: the recent events, the windowed statistics, each version's last load and the
// host's CPU utilization. The daemon's hooks feed it; it owns nothing else.
type observer struct {
	events  *events.Ring
	window  *window.Window
	started time.Time

	mu    sync.Mutex
	loads map[loadKey]status.Load
	cpu   hostinfo.CPUTimes // the previous reading
	util  *float64          // percent, over the last interval
}

type loadKey struct {
	model, version string
}

func newObserver() *observer {
	return &observer{events: events.New(events.DefaultSize, nil), window: window.New(window.Options{}),
		started: time.Now(), loads: map[loadKey]status.Load{}}
}

// modelLoaded records a load attempt of the repository (its OnEvent hook, under the loader's
// lock: it must not call back into the repository). A whole model that failed has no version.
func (o *observer) modelLoaded(e models.Event) {
	k := loadKey{e.Model, ""}
	if e.Version != 0 {
		k.version = strconv.FormatInt(e.Version, 10)
	}
	ld := status.Load{At: time.Now(), Result: "loaded"}
	ev := events.Event{Time: ld.At, Kind: events.KindLoad, Model: k.model, Version: k.version}
	o.mu.Lock()
	prev, seen := o.loads[k]
	if e.Err != nil {
		ld.Result, ld.Error = "failed", e.Err.Error()
		ev.Kind, ev.Level, ev.Message = events.KindLoadFailed, events.LevelError, "failed to load: "+ld.Error
	} else if seen && prev.Result != "failed" {
		ld.Result, ev.Message = "reloaded", "reloaded"
	} else {
		ev.Message = "loaded"
	}
	o.loads[k] = ld
	o.mu.Unlock()
	o.events.Add(ev)
}

func (o *observer) lastLoad(model, version string) *status.Load {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ld, ok := o.loads[loadKey{model, version}]; ok {
		return &ld
	}
	return nil
}

// configReloaded records a configuration reload's outcome ("unchanged" is not an event).
func (o *observer) configReloaded(file, result string, restart []string, err error) {
	switch {
	case err != nil:
		o.events.Add(events.Event{Kind: events.KindConfigFailed, Level: events.LevelError,
			Message: "configuration reload of " + file + " failed; the previous one stays in force: " + firstLine(err.Error())})
	case result != "unchanged":
		msg := "configuration reloaded from " + file
		if len(restart) > 0 {
			msg += "; a restart is needed for " + strings.Join(restart, ", ")
		}
		o.events.Add(events.Event{Kind: events.KindConfigReload, Message: msg})
	}
}

// run samples the scheduler's counters and the host's CPU times every sampleInterval until ctx
// ends.
func (o *observer) run(ctx context.Context, d *Daemon) {
	o.window.Run(ctx, sampleInterval, func() []scheduler.SeriesSnapshot {
		o.sampleCPU()
		return d.sched.Totals()
	})
}

func (o *observer) sampleCPU() {
	t, err := hostinfo.DetectCPUTimes()
	if err != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if u, ok := t.Utilization(o.cpu); ok && o.cpu.Total != 0 {
		pct := math.Round(u*1000) / 10
		o.util = &pct
	}
	o.cpu = t
}

func (o *observer) cpuUtilization() *float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.util
}

// statusSource is status.Source over the daemon.
type statusSource struct{ d *Daemon }

// withStatus serves the status endpoints in front of next.
func (d *Daemon) withStatus(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	srv := &status.Server{Source: statusSource{d}, Log: d.log.With("component", "status"), Scheme: "http",
		Client: &http.Client{}}
	if tc := d.sec.peerTLS(); tc != nil {
		srv.Scheme = "https"
		srv.Client.Transport = &http.Transport{TLSClientConfig: tc}
	}
	if c := d.cluster.Load(); c != nil {
		srv.Peers = func() []status.Peer { return peersOf(c.node.Members()) }
	}
	srv.Register(mux)
	dash := dashboard.Handler(func() bool { return d.config().Server.Dashboard })
	mux.Handle("GET "+dashboard.PagePath+"{$}", dash)
	mux.Handle("GET "+dashboard.AssetPrefix, dash)
	mux.Handle("/", next)
	return mux
}

func peersOf(members []cluster.Member) []status.Peer {
	out := make([]status.Peer, 0, len(members))
	for _, m := range members {
		out = append(out, status.Peer{Name: m.Name, Address: m.HTTPAddr, Local: m.Local, Liveness: string(m.Liveness),
			Gone: m.Liveness == cluster.LivenessDead || m.Liveness == cluster.LivenessLeft})
	}
	return out
}

func (s statusSource) Name() string { return s.d.nodeName() }

func (s statusSource) Events(since uint64, limit int) (uint64, []events.Event) {
	o := s.d.obs
	return o.events.Last(), o.events.Since(since, limit)
}

func (s statusSource) History() status.History {
	d := s.d
	h := status.History{Node: d.nodeName(), IntervalSeconds: sampleInterval.Seconds(), Series: []status.Series{}}
	for _, k := range d.obs.window.Series() {
		h.Series = append(h.Series, status.Series{Model: k[0], Version: k[1], Points: d.obs.window.History(k[0], k[1])})
	}
	return h
}

func (s statusSource) Status(ctx context.Context) status.Status {
	d := s.d
	st := status.Status{
		Node:          d.nodeStatus(),
		Hardware:      d.hardwareStatus(ctx),
		WindowSeconds: d.obs.window.Span().Seconds(),
		Events:        d.obs.events.Since(0, 20),
	}
	var weights func(model, version string) *float64
	rollouts := map[string]status.Rollout{}
	if c := d.cluster.Load(); c != nil {
		splits := policy.NewSplits(c.policy.Load, c.rollouts)
		weights = func(model, version string) *float64 { return weightOf(splits, model, version) }
		for _, r := range c.rollouts.Status() {
			st.Rollouts = append(st.Rollouts, status.Rollout{Model: r.Model, Phase: string(r.Phase), Step: r.Step,
				Stable: r.Stable, Canary: r.Canary, CanaryPercent: r.CanaryWeight, Reason: r.Reason})
			rollouts[r.Model] = st.Rollouts[len(st.Rollouts)-1]
		}
	}
	st.Models = d.modelRows(weights)
	for i := range st.Models {
		st.Models[i].Rollout = roleIn(rollouts, st.Models[i].Model, st.Models[i].Version)
	}
	if st.Node.Ready {
		if why := degraded(st.Models, d.reloadFailure(), st.Hardware.GPUs); why != "" {
			st.Node.State, st.Node.Reason = status.StateDegraded, why
		}
	}
	return st
}

func (d *Daemon) modelRows(weight func(model, version string) *float64) []status.Model {
	rows := []status.Model{}
	for _, e := range d.repo.Index() {
		row := status.Model{Model: e.Name, Version: e.Version, State: strings.ToLower(string(e.State)), Reason: e.Reason,
			LastLoad: d.obs.lastLoad(e.Name, e.Version)}
		if e.State == models.StateReady {
			if v, err := d.repo.Resolve(e.Name, e.Version); err == nil {
				row.Provider, row.Instances = v.Provider, len(v.Sessions)
			}
		}
		if r, ok := d.obs.window.Rates(e.Name, e.Version); ok {
			row.RequestsPerSecond, row.ErrorsPerSecond, row.Errors = round(r.RequestsPerSecond), round(r.ErrorsPerSecond), r.Errors
			row.QueueDepth, row.InFlight, row.BatchSize = r.QueueDepth, r.InFlight, round(r.BatchSize)
			if r.OK {
				row.P50Ms, row.P99Ms = millis(r.P50), millis(r.P99)
			}
		}
		if weight != nil && e.Version != "" {
			row.WeightPercent = weight(e.Name, e.Version)
		}
		rows = append(rows, row)
	}
	return rows
}

// weightOf is a version's share of its model's traffic where the policy or a rollout splits
// it by version; nil otherwise.
func weightOf(splits *policy.Splits, model, version string) *float64 {
	sp, ok := splits.Split(model)
	if !ok {
		return nil
	}
	var w float64
	named := false
	for _, t := range sp.Targets {
		if t.Version != "" {
			named = true
		}
		if t.Version == version {
			w += t.Weight
		}
	}
	if !named {
		return nil
	}
	return &w
}

// roleIn is a version's part in its model's rollout, or nil.
func roleIn(rollouts map[string]status.Rollout, model, version string) *status.VersionRollout {
	r, ok := rollouts[model]
	if !ok || version == "" {
		return nil
	}
	role := ""
	switch version {
	case r.Stable:
		role = "stable"
	case r.Canary:
		role = "canary"
	default:
		return nil
	}
	return &status.VersionRollout{Role: role, Phase: r.Phase, Step: r.Step}
}

func round(x float64) float64 { return math.Round(x*100) / 100 }

func millis(d time.Duration) *float64 {
	v := math.Round(float64(d)/float64(time.Microsecond)) / 1000
	return &v
}

// degraded says what keeps a ready node from being fully healthy; "" when nothing does.
func degraded(rows []status.Model, reloadErr string, gpus []status.GPU) string {
	var why []string
	for _, r := range rows {
		if r.State == strings.ToLower(string(models.StateReady)) {
			continue
		}
		name := r.Model
		if r.Version != "" {
			name += " version " + r.Version
		}
		why = append(why, fmt.Sprintf("%s %s: %s", name, r.State, cmp.Or(firstLine(r.Reason), "no reason given")))
	}
	if reloadErr != "" {
		why = append(why, "configuration reload failed: "+firstLine(reloadErr))
	}
	for _, g := range gpus {
		if g.Problem != "" {
			why = append(why, fmt.Sprintf("GPU %d: %s", g.Index, g.Problem))
		}
	}
	return strings.Join(why, "; ")
}

func (d *Daemon) reloadFailure() string {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	if d.reload.Result == "failed" {
		return d.reload.Error
	}
	return ""
}

func (d *Daemon) nodeStatus() status.Node {
	n := status.Node{Name: d.nodeName(), Version: d.opts.Version, UptimeSeconds: math.Round(time.Since(d.obs.started).Seconds()),
		Clustered: d.cluster.Load() != nil}
	switch phase := d.api.Phase(); {
	case phase == api.PhaseStopping:
		n.State, n.Reason = status.StateStopping, "shutting down: draining in-flight requests"
	case phase == api.PhaseStarting || !d.repo.Ready():
		n.State, n.Reason = status.StateStarting, "starting: the first load of the model repository has not finished"
	default:
		n.Ready, n.State = true, status.StateReady
	}
	return n
}

// nodeName is the cluster member name, else cluster.name as configured, else the host name.
func (d *Daemon) nodeName() string {
	if c := d.cluster.Load(); c != nil {
		return c.node.Name()
	}
	if n := d.config().Cluster.Name; n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

func (d *Daemon) hardwareStatus(ctx context.Context) status.Hardware {
	hw := status.Hardware{GPUs: []status.GPU{}}
	if d.hw.hostErr == nil {
		c := d.hw.host.CPU
		hw.CPU = status.CPU{Model: c.Model, Threads: c.Threads, Cores: c.Cores, Features: c.Features}
	}
	hw.CPU.UtilizationPercent = d.obs.cpuUtilization()
	if mem, err := hostinfo.DetectMemory(); err == nil {
		hw.Memory = status.Memory{TotalBytes: mem.UsableTotal, AvailableBytes: mem.UsableAvailable}
	}
	if d.opts.GPU == nil {
		hw.GPUNote = "GPU discovery is off"
		return hw
	}
	if st := d.opts.GPU.Status(); !st.Available {
		hw.GPUNote = cmp.Or(st.Reason, "no GPU")
		return hw
	}
	ctx, cancel := context.WithTimeout(ctx, d.config().GPU.TelemetryTimeout)
	defer cancel()
	snap, err := d.opts.GPU.Snapshot(ctx)
	if err != nil {
		hw.GPUNote = "reading the GPUs failed: " + err.Error()
		return hw
	}
	for _, dev := range snap.Devices {
		hw.GPUs = append(hw.GPUs, status.GPU{Index: dev.Index, Name: dev.Name, MemoryUsedBytes: dev.MemoryUsed,
			MemoryTotalBytes: dev.MemoryTotal, UtilizationPercent: math.Round(dev.Utilization * 100), Problem: dev.Problem})
	}
	return hw
}

// clusterEvents records members joining and leaving and rollout changes, as gossip brings
// them, until ctx ends.
func (d *Daemon) clusterEvents(ctx context.Context, c *clustered) {
	liveness := map[string]cluster.Liveness{}
	generations := map[string]uint64{}
	first := true
	for {
		changed := c.node.Changes()
		for _, m := range c.node.Members() {
			if m.Local {
				continue
			}
			was, known := liveness[m.Name]
			liveness[m.Name] = m.Liveness
			if was == m.Liveness || (first && m.Liveness == cluster.LivenessAlive) {
				continue
			}
			e := events.Event{Node: m.Name}
			switch {
			case m.Liveness == cluster.LivenessAlive:
				e.Kind, e.Message = events.KindMemberJoin, "joined at "+m.HTTPAddr
				if known {
					e.Message = "is back (was " + string(was) + ")"
				}
			case m.Liveness == cluster.LivenessSuspect:
				e.Kind, e.Level, e.Message = events.KindMemberLeave, events.LevelWarning, "stopped answering probes (suspect)"
			default:
				e.Kind, e.Level, e.Message = events.KindMemberLeave, events.LevelWarning, string(m.Liveness)
			}
			d.obs.events.Add(e)
		}
		for _, r := range c.rollouts.Status() {
			if generations[r.Model] == r.Generation {
				continue
			}
			generations[r.Model] = r.Generation
			d.obs.events.Add(rolloutEvent(r))
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func rolloutEvent(r rollout.State) events.Event {
	e := events.Event{Kind: events.KindRollout, Model: r.Model,
		Message: fmt.Sprintf("%s at step %d: canary %s has %s%%", r.Phase, r.Step, r.Canary, strconv.FormatFloat(r.CanaryWeight, 'f', -1, 64))}
	if r.Phase == rollout.PhaseAborted {
		e.Kind, e.Level = events.KindRolloutAbort, events.LevelWarning
	}
	if r.Reason != "" {
		e.Message += ": " + r.Reason
	}
	return e
}

// startObserver samples for the windowed statistics until ctx ends or the returned function
// is called.
func (d *Daemon) startObserver(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.obs.run(ctx, d) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// nodeSample is what inferd_ready, inferd_cluster_members, inferd_rollout_* and the
// certificate's expiry report.
func (d *Daemon) nodeSample() metrics.NodeSample {
	s := metrics.NodeSample{Ready: d.nodeStatus().Ready}
	if c := d.cluster.Load(); c != nil {
		s.Members = map[string]int{}
		for _, m := range c.node.Members() {
			s.Members[string(m.Liveness)]++
		}
		for _, r := range c.rollouts.Status() {
			s.Rollouts = append(s.Rollouts, metrics.RolloutSample{Model: r.Model, Phase: string(r.Phase), CanaryWeight: r.CanaryWeight})
		}
	}
	if d.sec.tls != nil {
		if cert := d.sec.tls.Certificate(); cert != nil && len(cert.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
				s.CertificateNotAfter = leaf.NotAfter
			}
		}
	}
	return s
}
