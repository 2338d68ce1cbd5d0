package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// scope is the instrumentation scope of every span inferd makes.
const scope = "github.com/inferd/inferd"

// Settings are what a Tracing is configured with: the [tracing] table, and the node.
type Settings struct {
	// Endpoint is the collector's OTLP base URL (http://collector:4318 for OTLP/HTTP,
	// http://collector:4317 for gRPC); empty: tracing is off.
	Endpoint string
	// Protocol is "http" (OTLP/HTTP protobuf, the default) or "grpc".
	Protocol string
	// SamplingRatio is the share of requests without a sampled parent that are traced (0 to
	// 1); a request whose traceparent says sampled is always traced (parent-based).
	SamplingRatio float64
	// ServiceName is service.name; empty: OTEL_SERVICE_NAME, else "inferd".
	ServiceName string
	// ResourceAttributes are extra "key=value" resource attributes; they override
	// OTEL_RESOURCE_ATTRIBUTES.
	ResourceAttributes []string
	// Node and Version are the node's name (inferd.node, host.name) and inferd's version
	// (service.version); always set by inferd.
	Node, Version string
}

func (s Settings) equal(o Settings) bool {
	return s.Endpoint == o.Endpoint && s.Protocol == o.Protocol && s.SamplingRatio == o.SamplingRatio &&
		s.ServiceName == o.ServiceName && slices.Equal(s.ResourceAttributes, o.ResourceAttributes) &&
		s.Node == o.Node && s.Version == o.Version
}

// Defaults of the export queue, which OTEL_BSP_* override (docs/tracing.md).
const (
	defaultQueueSize     = 2048
	defaultBatchSize     = 512
	defaultScheduleDelay = 5 * time.Second
	defaultExportTimeout = 10 * time.Second
	// retireGrace bounds how long a replaced generation waits for the requests it still
	// traces before it is shut down anyway.
	retireGrace = time.Minute
)

// Tracing owns the daemon's tracer provider: one generation per configuration, swapped on
// reload (Install) while the requests the old one traces finish on it. Its zero value is not
// usable; New returns one with tracing off.
type Tracing struct {
	log    *slog.Logger
	getenv func(string) string
	export func(Settings) (sdktrace.SpanExporter, error)
	cnt    Counters

	mu      sync.Mutex // serialises Build+Install and Close
	applied Settings   // the settings of cur, under mu
	cur     atomic.Pointer[generation]
}

// Options are a Tracing's dependencies.
type Options struct {
	// Getenv reads the OTEL_* variables; nil: os.Getenv. The OTLP exporters read their own
	// OTEL_EXPORTER_OTLP_* variables from the process environment.
	Getenv func(string) string
	// Exporter, when set, makes the exporter of each generation instead of OTLP (tests
	// export to memory); the endpoint must still be set for tracing to be on.
	Exporter func(Settings) (sdktrace.SpanExporter, error)
}

// New returns a Tracing with tracing off.
func New(log *slog.Logger, opts Options) *Tracing {
	t := &Tracing{log: log, getenv: opts.Getenv, export: opts.Exporter}
	if t.getenv == nil {
		t.getenv = os.Getenv
	}
	if t.export == nil {
		t.export = newExporter
	}
	return t
}

// Counters are the span counts of every generation so far.
func (t *Tracing) Counters() *Counters { return &t.cnt }

// Enabled reports whether requests are traced now.
func (t *Tracing) Enabled() bool { return t.cur.Load() != nil }

// State is what /health shows of tracing.
type State struct {
	Endpoint      string  `json:"endpoint,omitempty"`
	Protocol      string  `json:"protocol,omitempty"`
	SamplingRatio float64 `json:"sampling_ratio"`
	ServiceName   string  `json:"service_name,omitempty"`
	// ResourceAttributes are tracing.resource_attributes as configured.
	ResourceAttributes []string `json:"resource_attributes,omitempty"`
	Exported           uint64   `json:"spans_exported"`
	Dropped            uint64   `json:"spans_dropped"`
	// Failing is true while the last export failed.
	Failing bool `json:"failing,omitempty"`
}

// State reports the tracing in force; ok is false when it is off.
func (t *Tracing) State() (st State, ok bool) {
	g := t.cur.Load()
	if g == nil {
		return State{}, false
	}
	return State{
		Endpoint: g.settings.Endpoint, Protocol: g.settings.Protocol, SamplingRatio: g.settings.SamplingRatio,
		ServiceName: g.service, ResourceAttributes: g.settings.ResourceAttributes, Exported: t.cnt.Exported.Load(),
		Dropped: t.cnt.DroppedQueueFull.Load() + t.cnt.DroppedExportFailed.Load() + t.cnt.DroppedShutdown.Load(),
		Failing: g.proc.failing.Load(),
	}, true
}

// Apply builds and installs s at once (Build then Install); at start and in tests.
func (t *Tracing) Apply(s Settings) error {
	p, err := t.Build(s)
	if err != nil {
		return err
	}
	t.Install(p)
	return nil
}

// Prepared is a generation built for settings and not yet in force; Install puts it in force
// and Discard drops it.
type Prepared struct {
	s       Settings
	gen     *generation // nil: tracing off
	changed bool
}

// Discard drops a prepared generation that will not be installed.
func (p *Prepared) Discard() {
	if p != nil && p.gen != nil {
		p.gen.shutdown(context.Background())
	}
}

// Build prepares the generation s asks for without putting it in force, so that a
// configuration reload fails before anything changes when s cannot be applied. Settings equal
// to those in force prepare nothing to change.
func (t *Tracing) Build(s Settings) (*Prepared, error) {
	t.mu.Lock()
	same := s.equal(t.applied)
	t.mu.Unlock()
	if same {
		return &Prepared{s: s}, nil
	}
	p := &Prepared{s: s, changed: true}
	if s.Endpoint == "" {
		return p, nil
	}
	if off, _ := strconv.ParseBool(t.getenv("OTEL_SDK_DISABLED")); off {
		t.log.Warn("tracing.endpoint is set but OTEL_SDK_DISABLED is true: not tracing")
		return p, nil
	}
	g, err := t.newGeneration(s)
	if err != nil {
		return nil, err
	}
	p.gen = g
	return p, nil
}

// Install puts a prepared generation in force. The one it replaces goes on tracing the
// requests that started on it and is shut down (its queue flushed) once they have ended.
func (t *Tracing) Install(p *Prepared) {
	if !p.changed {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applied = p.s
	old := t.cur.Swap(p.gen)
	if p.gen != nil {
		t.log.Info("tracing on", "endpoint", p.s.Endpoint, "protocol", p.s.Protocol, "sampling_ratio", p.s.SamplingRatio, "service_name", p.gen.service)
	} else if old != nil {
		t.log.Info("tracing off")
	}
	if old != nil {
		old.retire()
	}
}

// Close shuts tracing down, exporting what is queued within ctx.
func (t *Tracing) Close(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.applied = Settings{}
	g := t.cur.Swap(nil)
	if g == nil {
		return nil
	}
	return g.shutdown(ctx)
}

// generation is one configuration's tracer provider and export queue.
type generation struct {
	settings Settings
	service  string
	tp       *sdktrace.TracerProvider
	tracer   trace.Tracer
	proc     *queueProcessor
	log      *slog.Logger

	// state counts the requests being traced on this generation; retiredBit marks a
	// generation no longer in force, which is shut down when the count reaches zero.
	state    atomic.Int64
	stopOnce sync.Once
}

const retiredBit = int64(1) << 62

// hold counts a request that starts on g; false when g is retired (load the current one again).
func (g *generation) hold() bool {
	for {
		s := g.state.Load()
		if s&retiredBit != 0 {
			return false
		}
		if g.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// release ends a request held on g.
func (g *generation) release() {
	if g.state.Add(-1) == retiredBit {
		go g.shutdown(context.Background())
	}
}

// retire marks g replaced: it is shut down once its last request ends, or after retireGrace.
func (g *generation) retire() {
	if g.state.Or(retiredBit) == 0 {
		go g.shutdown(context.Background())
		return
	}
	time.AfterFunc(retireGrace, func() { g.shutdown(context.Background()) })
}

// shutdown flushes g's queue and stops its exporter, once.
func (g *generation) shutdown(ctx context.Context) error {
	var err error
	g.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, g.proc.opts.Timeout)
		defer cancel()
		if err = g.tp.Shutdown(ctx); err != nil {
			g.log.Warn("tracing shutdown did not finish", "err", err)
			err = fmt.Errorf("tracing shutdown: %w", err)
		}
	})
	return err
}

func (t *Tracing) newGeneration(s Settings) (*generation, error) {
	res, service, err := t.resource(s)
	if err != nil {
		return nil, err
	}
	opts, err := t.queueOptions()
	if err != nil {
		return nil, err
	}
	exp, err := t.export(s)
	if err != nil {
		return nil, err
	}
	proc := newQueueProcessor(exp, opts, &t.cnt, t.log)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(s.SamplingRatio))),
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(proc),
	)
	return &generation{settings: s, service: service, tp: tp, tracer: tp.Tracer(scope), proc: proc, log: t.log}, nil
}

// newExporter is the OTLP exporter of s. Its own retries are off: the queue counts a failed
// export as dropped spans instead of holding them.
func newExporter(s Settings) (sdktrace.SpanExporter, error) {
	u, err := url.Parse(s.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("tracing.endpoint %q: want an http:// or https:// base URL such as http://collector:4318", s.Endpoint)
	}
	ctx := context.Background()
	switch s.Protocol {
	case "grpc":
		target := url.URL{Scheme: u.Scheme, Host: u.Host}
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(target.String()),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
		if err != nil {
			return nil, fmt.Errorf("tracing: OTLP/gRPC exporter: %w", err)
		}
		return exp, nil
	case "http", "":
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
		if err != nil {
			return nil, fmt.Errorf("tracing: OTLP/HTTP exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("tracing.protocol %q: want http or grpc", s.Protocol)
}

// resource is the node's resource: service.name (the setting, else OTEL_SERVICE_NAME, else
// inferd), OTEL_RESOURCE_ATTRIBUTES under the setting's resource_attributes, and always
// service.version, inferd.node and host.name from inferd itself.
func (t *Tracing) resource(s Settings) (*resource.Resource, string, error) {
	base := resource.NewSchemaless(attribute.String("service.name", "inferd"))
	env, err := resource.New(context.Background(), resource.WithDetectors(envDetector{t.getenv}))
	if err != nil {
		return nil, "", fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	var own []attribute.KeyValue
	for _, kv := range s.ResourceAttributes {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, "", fmt.Errorf("tracing.resource_attributes: %q is not key=value", kv)
		}
		own = append(own, attribute.String(strings.TrimSpace(k), strings.TrimSpace(v)))
	}
	if s.ServiceName != "" {
		own = append(own, attribute.String("service.name", s.ServiceName))
	}
	own = append(own, attribute.String("service.version", s.Version), attribute.String("inferd.node", s.Node), attribute.String("host.name", s.Node))
	res := base
	for _, r := range []*resource.Resource{env, resource.NewSchemaless(own...)} {
		if res, err = resource.Merge(res, r); err != nil {
			return nil, "", fmt.Errorf("tracing: resource: %w", err)
		}
	}
	service, _ := res.Set().Value("service.name")
	return res, service.AsString(), nil
}

// envDetector reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME through getenv, as the
// SDK's own detector reads them from the process (which tests cannot set per daemon).
type envDetector struct{ getenv func(string) string }

func (d envDetector) Detect(context.Context) (*resource.Resource, error) {
	var kvs []attribute.KeyValue
	var errs []error
	for _, kv := range strings.Split(d.getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("%q is not key=value", kv))
			continue
		}
		if uv, err := url.PathUnescape(strings.TrimSpace(v)); err == nil {
			v = uv
		}
		kvs = append(kvs, attribute.String(strings.TrimSpace(k), v))
	}
	if name := d.getenv("OTEL_SERVICE_NAME"); name != "" {
		kvs = append(kvs, attribute.String("service.name", name))
	}
	return resource.NewSchemaless(kvs...), errors.Join(errs...)
}

// queueOptions are the export queue's bounds: the defaults, or OTEL_BSP_MAX_QUEUE_SIZE,
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_EXPORT_TIMEOUT
// (milliseconds), as the SDK's batch processor reads them.
func (t *Tracing) queueOptions() (queueOptions, error) {
	o := queueOptions{Size: defaultQueueSize, Batch: defaultBatchSize, Delay: defaultScheduleDelay, Timeout: defaultExportTimeout}
	num := func(name string, min int) (int, bool, error) {
		v := t.getenv(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			return 0, false, fmt.Errorf("tracing: %s=%q: want an integer of at least %d", name, v, min)
		}
		return n, true, nil
	}
	var errs []error
	set := func(name string, min int, apply func(int)) {
		n, ok, err := num(name, min)
		errs = append(errs, err)
		if ok {
			apply(n)
		}
	}
	set("OTEL_BSP_MAX_QUEUE_SIZE", 1, func(n int) { o.Size = n })
	set("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, func(n int) { o.Batch = n })
	set("OTEL_BSP_SCHEDULE_DELAY", 1, func(n int) { o.Delay = time.Duration(n) * time.Millisecond })
	set("OTEL_BSP_EXPORT_TIMEOUT", 1, func(n int) { o.Timeout = time.Duration(n) * time.Millisecond })
	o.Batch = min(o.Batch, o.Size)
	return o, errors.Join(errs...)
}
