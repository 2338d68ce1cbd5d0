package daemon

import (
	"cmp"
	"context"
	"os"
	"time"

	"github.com/inferd/inferd/api"
	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/tracing"
)

// setupTracing builds the daemon's tracing from [tracing] and registers its counters; with
// no endpoint, tracing is off and costs the request path one atomic load.
func (d *Daemon) setupTracing(cfg *config.Config) error {
	d.tracing = tracing.New(d.log.With("component", "tracing"), tracing.Options{})
	cnt := d.tracing.Counters()
	d.metrics.Registry.MustRegister(metrics.NewTracing(func() metrics.TracingStats {
		return metrics.TracingStats{
			Exported:            cnt.Exported.Load(),
			DroppedQueueFull:    cnt.DroppedQueueFull.Load(),
			DroppedExportFailed: cnt.DroppedExportFailed.Load(),
			DroppedShutdown:     cnt.DroppedShutdown.Load(),
		}
	}))
	return d.tracing.Apply(d.tracingSettings(cfg))
}

// tracingSettings are cfg's [tracing] with the node's name (cluster.name, else the host name)
// and inferd's version.
func (d *Daemon) tracingSettings(cfg *config.Config) tracing.Settings {
	t := cfg.Tracing
	host, _ := os.Hostname()
	return tracing.Settings{
		Endpoint: t.Endpoint, Protocol: t.Protocol, SamplingRatio: t.SamplingRatio,
		ServiceName: t.ServiceName, ResourceAttributes: t.ResourceAttributes,
		Node: cmp.Or(cfg.Cluster.Name, host), Version: d.opts.Version,
	}
}

// tracingComponent is /health's view of tracing: off, or where spans go, how many were
// exported and dropped, and whether exports fail now. A collector that is down costs traces,
// not inference: the component stays "ok" (a degraded /health would read as a node in
// trouble), and detail.failing says so.
func (d *Daemon) tracingComponent() api.Component {
	st, on := d.tracing.State()
	if !on {
		return api.Component{State: "none"}
	}
	return api.Component{State: "ok", Detail: st}
}

// closeTracingTimeout bounds the last flush at shutdown, which comes after the drain (whose
// context may have run out already): a collector that answers takes milliseconds, and one that
// does not must not hold the stop up.
const closeTracingTimeout = 2 * time.Second

// closeTracing exports what is queued, within closeTracingTimeout, and stops the exporter.
func (d *Daemon) closeTracing(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTracingTimeout)
	defer cancel()
	if err := d.tracing.Close(ctx); err != nil {
		d.log.Warn("tracing did not shut down cleanly", "err", err)
	}
}
