package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/engine"
	"github.com/inferd/inferd/metrics"
	"github.com/inferd/inferd/models"
	"github.com/inferd/inferd/scheduler"
)

// registerCollectors adds the collectors that read the scheduler's statistics and the model
// repository's states at scrape time. The returned collector also counts the requests the API
// refuses before the scheduler sees them.
func registerCollectors(m *metrics.Metrics, repo *models.Repository, sched *scheduler.Scheduler) *metrics.Inference {
	inference := metrics.NewInference(scheduler.OutcomeNames(), func() []metrics.InferenceStats { return inferenceStats(sched.Totals()) })
	var states []string
	for _, s := range []models.State{models.StateLoading, models.StateReady, models.StateUnavailable, models.StateUnloading} {
		states = append(states, strings.ToLower(string(s)))
	}
	m.Registry.MustRegister(inference, metrics.NewModelStates(states, func() []metrics.ModelState {
		index := repo.Index()
		out := make([]metrics.ModelState, len(index))
		for i, e := range index {
			out[i] = metrics.ModelState{Model: e.Name, Version: e.Version, State: strings.ToLower(string(e.State))}
		}
		return out
	}), metrics.NewWorkers(func() []metrics.WorkerState {
		var out []metrics.WorkerState
		for _, e := range repo.Index() {
			if e.Worker.PID != 0 {
				out = append(out, metrics.WorkerState{Model: e.Name, Version: e.Version, RSS: e.Worker.RSSBytes})
			}
		}
		return out
	}), metrics.NewTuning(func() []metrics.TuningState {
		var out []metrics.TuningState
		for _, e := range repo.Index() {
			if e.State != models.StateReady {
				continue
			}
			v, err := repo.Resolve(e.Name, e.Version)
			if err != nil {
				continue // replaced since the index was read
			}
			snap := sched.Stats(v) // a queue not started yet has the instances the version loaded with
			out = append(out, metrics.TuningState{Model: e.Name, Version: e.Version, Instances: cmp.Or(snap.Instances, len(v.Sessions)),
				IntraOpThreads: v.Tuning.IntraOpThreads, BatchTarget: snap.BatchTarget})
		}
		return out
	}))
	repo.OnHostEvent(func(e models.HostEvent) {
		if e.Kind == engine.WorkerExited {
			m.WorkerRestarts.WithLabelValues(e.Model, strconv.FormatInt(e.Version, 10), e.Class).Inc()
		}
	})
	return inference
}

// inferenceStats converts the scheduler's totals into what the metrics collector exports.
func inferenceStats(totals []scheduler.SeriesSnapshot) []metrics.InferenceStats {
	bounds := scheduler.LatencyBuckets()
	out := make([]metrics.InferenceStats, len(totals))
	for i, t := range totals {
		st := metrics.InferenceStats{
			Model:           t.Model,
			Version:         t.Version,
			Outcomes:        make(map[string]uint64, scheduler.NumOutcomes),
			RequestDuration: histogram(t.RequestDuration, bounds),
			QueueDuration:   histogram(t.QueueDuration, bounds),
			ComputeDuration: histogram(t.ComputeDuration, bounds),
			BatchSizes:      make(map[int]uint64, len(t.Batches)),
			Pending:         t.Pending,
			InFlight:        t.InFlight,
		}
		for o := range scheduler.NumOutcomes {
			st.Outcomes[o.String()] = t.Outcomes[o]
		}
		for _, b := range t.Batches {
			st.BatchSizes[b.BatchSize] = b.ComputeInfer.Count // one per execution of that size
		}
		out[i] = st
	}
	return out
}

// histogram turns per-bucket counts into Prometheus' cumulative buckets, in seconds.
func histogram(h scheduler.Histogram, bounds []time.Duration) metrics.Histogram {
	out := metrics.Histogram{Count: h.Count, Sum: h.Sum.Seconds(), Buckets: make(map[float64]uint64, len(bounds))}
	var cum uint64
	for i, b := range bounds {
		cum += h.Counts[i]
		out.Buckets[b.Seconds()] = cum
	}
	return out
}

// separateMetrics reports whether /metrics has a listener of its own instead of the API's.
func (d *Daemon) separateMetrics(cfg *config.Config) bool {
	return d.opts.MetricsListener != nil || cfg.Metrics.Listen != ""
}

// metricsOnAPI is the /metrics handler of the API's listener: none when metrics have their own.
func (d *Daemon) metricsOnAPI() http.Handler {
	if d.separateMetrics(d.config()) {
		return nil
	}
	return d.metrics.Handler()
}

// serveMetrics starts the separate metrics listener, if the configuration asks for one; stop
// closes it (after the API has drained, so that the drain itself can be scraped).
func (d *Daemon) serveMetrics(cfg *config.Config) (stop func(), err error) {
	if !d.separateMetrics(cfg) {
		return func() {}, nil
	}
	ln := d.opts.MetricsListener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.Metrics.Listen, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "this listener serves GET /metrics only", http.StatusNotFound)
	})
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		ReadTimeout:       cfg.Server.ReadTimeout,
		WriteTimeout:      cfg.Server.WriteTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	d.log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		// A scrape takes milliseconds; one in progress gets a moment to finish.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			_ = hs.Close()
		}
		<-done
	}, nil
}
