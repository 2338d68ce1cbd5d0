package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/kserve"
	"github.com/inferd/inferd/tensor"
)

// Config configures Run. Zero values take the defaults given on each field.
type Config struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8080.
	URL string
	// Model is the model name; Version the version, or empty for the server's choice.
	Model, Version string

	// Concurrency lists the closed-loop levels to sweep, in order. Used when Rate is 0.
	Concurrency []int
	// Rate, when positive, runs one open-loop step at this many requests per second instead.
	Rate float64
	// MaxOutstanding bounds the requests in flight in rate mode (default 64); a request
	// scheduled while that many are in flight is dropped.
	MaxOutstanding int
	// LateThreshold: a rate-mode request sent more than this after its scheduled time counts
	// as late (default 1ms).
	LateThreshold time.Duration

	// Duration is each step's measured window (default 10s); Warmup precedes it and is not
	// measured (default 2s; set negative for none).
	Duration, Warmup time.Duration

	// Shapes gives the full shape of named inputs; others come from the model's metadata with
	// -1 replaced by 1.
	Shapes map[string][]int64
	// Batch, when positive, sets dimension 0 of every input whose model dimension 0 is
	// variable.
	Batch int
	// Data is DataRandom (default) or DataZero; Seed seeds DataRandom.
	Data DataMode
	Seed uint64
	// Binary sends the binary tensor extension (and asks for binary outputs) instead of JSON;
	// over gRPC, raw_input_contents instead of typed contents.
	Binary bool
	// GRPC, when set, is the host:port of the server's gRPC listener: inference requests go
	// there as ModelInfer calls (all senders share one HTTP/2 connection, as perf_analyzer's
	// do), while the model's metadata and statistics are still read from URL.
	GRPC string
	// Stream sends the requests of each step on one ModelStreamInfer stream to GRPC instead of
	// as unary calls: a step's concurrency is then the number of requests in flight on that
	// stream (each sender has one), matched to their responses by id.
	Stream bool

	// RequestTimeout bounds one request (default 60s).
	RequestTimeout time.Duration
	// MaxSamples caps the latencies kept per step, over all senders (default 10,000,000).
	MaxSamples int

	// Logger receives progress at Info; nil discards it.
	Logger *slog.Logger
}

// ErrConfig marks an invalid Config or RawConfig.
var ErrConfig = errors.New("invalid perf settings")

// Defaults.
const (
	DefaultDuration       = 10 * time.Second
	DefaultWarmup         = 2 * time.Second
	DefaultMaxOutstanding = 64
	DefaultLateThreshold  = time.Millisecond
	DefaultRequestTimeout = time.Minute
	DefaultMaxSamples     = 10_000_000
)

// timings applies the defaults of a step's duration and warmup; a negative warmup means none.
func timings(duration, warmup time.Duration) (time.Duration, time.Duration) {
	if duration == 0 {
		duration = DefaultDuration
	}
	switch {
	case warmup == 0:
		warmup = DefaultWarmup
	case warmup < 0:
		warmup = 0
	}
	return duration, warmup
}

func (c Config) withDefaults() (Config, error) {
	c.Duration, c.Warmup = timings(c.Duration, c.Warmup)
	if c.MaxOutstanding == 0 {
		c.MaxOutstanding = DefaultMaxOutstanding
	}
	if c.LateThreshold == 0 {
		c.LateThreshold = DefaultLateThreshold
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxSamples == 0 {
		c.MaxSamples = DefaultMaxSamples
	}
	if c.Data == "" {
		c.Data = DataRandom
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return c, fmt.Errorf("%w: url %q: want http://host:port", ErrConfig, c.URL)
	case c.Model == "":
		return c, fmt.Errorf("%w: no model named", ErrConfig)
	case c.Duration < 0:
		return c, fmt.Errorf("%w: duration %s", ErrConfig, c.Duration)
	case c.Rate < 0:
		return c, fmt.Errorf("%w: rate %g", ErrConfig, c.Rate)
	case c.Rate == 0 && len(c.Concurrency) == 0:
		return c, fmt.Errorf("%w: neither a rate nor a concurrency level", ErrConfig)
	case c.Stream && c.GRPC == "":
		return c, fmt.Errorf("%w: streaming needs a gRPC address", ErrConfig)
	case c.MaxOutstanding < 0 || c.Batch < 0 || c.MaxSamples < 0:
		return c, fmt.Errorf("%w: negative max outstanding, batch or sample cap", ErrConfig)
	}
	for _, n := range c.Concurrency {
		if n <= 0 {
			return c, fmt.Errorf("%w: concurrency %d", ErrConfig, n)
		}
	}
	if _, err := ParseDataMode(string(c.Data)); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c.URL = strings.TrimRight(c.URL, "/")
	return c, nil
}

// runner holds what every step of one Run shares.
type runner struct {
	cfg       Config
	client    *http.Client
	inferURL  string
	statsURL  string
	body      []byte
	headerLen int // -1: the body is all JSON
	rows      int64
	stats     bool
	grpc      *grpcTarget // nil: requests over HTTP
}

// Run measures a server: a closed-loop step per Config.Concurrency level, or one open-loop
// step at Config.Rate. The request body is built once, from the model's metadata and the input
// settings. Run returns the report of the steps it finished; the error is non-nil only when the
// measurement could not be set up or ctx ended (then with the steps so far). Steps whose every
// request failed are in the report: see Report.Failed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	outstanding := cfg.MaxOutstanding
	if cfg.Rate == 0 {
		outstanding = 0
		for _, n := range cfg.Concurrency {
			outstanding = max(outstanding, n)
		}
	}
	transport := &http.Transport{
		// No proxy from the environment: a proxy in the path would be measured too.
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        outstanding + 4,
		MaxIdleConnsPerHost: outstanding + 4, // every sender keeps its connection, plus stats calls
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	r := &runner{cfg: cfg, client: &http.Client{Transport: transport, Timeout: cfg.RequestTimeout}}

	modelURL := cfg.URL + "/v2/models/" + url.PathEscape(cfg.Model)
	if cfg.Version != "" {
		modelURL += "/versions/" + url.PathEscape(cfg.Version)
	}
	r.inferURL, r.statsURL = modelURL+"/infer", modelURL+"/stats"
	specs, err := r.metadata(ctx, modelURL)
	if err != nil {
		return nil, err
	}
	specs, r.rows, err = resolveShapes(specs, cfg.Shapes, cfg.Batch)
	if err != nil {
		return nil, err
	}
	inputs, err := buildInputs(specs, cfg.Data, cfg.Seed)
	if err != nil {
		return nil, err
	}
	req := &kserve.InferRequest{Inputs: make([]kserve.Input, len(inputs))}
	for i, t := range inputs {
		req.Inputs[i] = kserve.Input{Tensor: t}
	}
	format := "json"
	if cfg.Binary {
		format = "binary" // EncodeRequest also asks for binary outputs
	}
	r.body, r.headerLen = kserve.EncodeRequest(nil, req, cfg.Binary)
	if cfg.GRPC != "" {
		if r.grpc, err = dialGRPC(cfg, req); err != nil {
			return nil, err
		}
		defer r.grpc.close()
		format, r.body = r.grpc.format, r.grpc.body
		if cfg.Stream {
			format += " stream"
		}
	}

	rep := &Report{
		Mode: "concurrency", URL: cfg.URL, Model: cfg.Model, Version: cfg.Version, Format: format,
		Inputs: specs, RowsPerRequest: r.rows, RequestBytes: len(r.body), Data: cfg.Data,
		Cores: runtime.NumCPU(), Warmup: cfg.Warmup, Duration: cfg.Duration,
	}
	if cfg.Rate > 0 {
		rep.Mode = "rate"
	}
	if _, err := r.fetchStats(ctx); err != nil {
		rep.ServerStatsNote = err.Error()
		cfg.Logger.Info("server stats unavailable", "err", err)
	} else {
		rep.ServerStats, r.stats = true, true
	}

	levels := cfg.Concurrency
	if cfg.Rate > 0 {
		levels = []int{cfg.MaxOutstanding}
	}
	for _, n := range levels {
		cfg.Logger.Info("perf step", "model", cfg.Model, "concurrency", n, "rate", cfg.Rate, "format", format)
		s, err := r.step(ctx, n)
		if err != nil {
			return rep, err
		}
		cfg.Logger.Info("perf step done", "requests", s.Requests, "errors", s.Errors, "infer_per_sec", s.InferPerSec, "p50", s.Latency.P50)
		rep.Steps = append(rep.Steps, s)
	}
	return rep, nil
}

// metadata reads the model's input specs from GET /v2/models/{m}[/versions/{v}].
func (r *runner) metadata(ctx context.Context, modelURL string) ([]tensor.Spec, error) {
	body, err := r.get(ctx, modelURL)
	if err != nil {
		return nil, fmt.Errorf("perf: model metadata: %w", err)
	}
	var meta kserve.ModelMetadata
	if err := json.Unmarshal(body, &meta); err != nil {
		return nil, fmt.Errorf("perf: model metadata from %s: %w", modelURL, err)
	}
	specs := make([]tensor.Spec, len(meta.Inputs))
	for i, in := range meta.Inputs {
		dt, err := tensor.ParseDataType(in.Datatype)
		if err != nil {
			return nil, fmt.Errorf("perf: model metadata, input %q: %w", in.Name, err)
		}
		specs[i] = tensor.Spec{Name: in.Name, DataType: dt, Shape: in.Shape}
	}
	return specs, nil
}

// ErrStatus marks an HTTP answer other than 200 from a metadata or statistics endpoint.
var ErrStatus = errors.New("unexpected HTTP status")

func (r *runner) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %w %s: %s", u, ErrStatus, resp.Status, kserve.ErrorMessage(body))
	}
	return body, nil
}

func (r *runner) fetchStats(ctx context.Context) (ModelStats, error) {
	body, err := r.get(ctx, r.statsURL)
	if err != nil {
		return ModelStats{}, err
	}
	return ParseStats(body)
}

// window is a step's measured interval [start, end).
type window struct{ start, end time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// step runs one load level: n closed-loop senders, or in rate mode a pacer feeding n senders.
func (r *runner) step(ctx context.Context, n int) (Step, error) {
	cfg := r.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	begin := time.Now()
	win := window{begin.Add(cfg.Warmup), begin.Add(cfg.Warmup + cfg.Duration)}
	senders := make([]*sender, n)
	perSender := max(cfg.MaxSamples/n, 1)
	var stream *grpcStream
	if cfg.Stream {
		stream = newGRPCStream(ctx, r.grpc, cfg.RequestTimeout)
	}
	var wg sync.WaitGroup
	var sched chan time.Time
	var scheduled, dropped int64
	if cfg.Rate > 0 {
		sched = make(chan time.Time)
		wg.Go(func() { scheduled, dropped = pace(ctx, sched, begin, win, cfg.Rate) })
	}
	for i := range senders {
		s := r.newSender(perSender)
		if stream != nil {
			s.stream, s.index = stream, i
		}
		senders[i] = s
		if sched != nil {
			wg.Go(func() { s.open(ctx, sched, win, cfg.LateThreshold) })
		} else {
			wg.Go(func() { s.closed(ctx, win) })
		}
	}

	st := Step{Concurrency: n}
	if cfg.Rate > 0 {
		st = Step{Rate: cfg.Rate, MaxOutstanding: n}
	}
	var before, after ModelStats
	var beforeErr, afterErr error
	if err := sleepUntil(ctx, win.start); err != nil {
		wg.Wait()
		stream.close()
		return st, err
	}
	if r.stats {
		before, beforeErr = r.fetchStats(ctx)
	}
	cpu0 := markCPU()
	if err := sleepUntil(ctx, win.end); err != nil {
		wg.Wait()
		stream.close()
		return st, err
	}
	cpu1 := markCPU()
	if r.stats {
		after, afterErr = r.fetchStats(ctx)
	}
	wg.Wait() // in-flight requests finish (bounded by RequestTimeout) but are not counted
	if stream != nil {
		st.Streams = stream.close()
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}

	st.ClientCPU = cpuShare(cpu0, cpu1)
	st.Scheduled, st.Dropped = scheduled, dropped
	var samples []time.Duration
	for _, s := range senders {
		st.Requests += s.ok
		st.Errors += s.failed
		st.Late += s.late
		for k, v := range s.errs {
			if st.ErrorsBy == nil {
				st.ErrorsBy = map[string]int64{}
			}
			st.ErrorsBy[k] += v
		}
		if st.FirstError == "" {
			st.FirstError = s.firstErr
		}
	}
	if st.Requests > 0 {
		samples = make([]time.Duration, 0, min(st.Requests, int64(cfg.MaxSamples)))
		for _, s := range senders {
			samples = append(samples, s.lat...)
		}
	}
	st.Latency = Summarize(samples)
	secs := cfg.Duration.Seconds()
	st.InferPerSec = float64(st.Requests) / secs
	st.RowsPerSec = float64(st.Requests*r.rows) / secs
	switch {
	case !r.stats:
	case beforeErr != nil || afterErr != nil:
		st.ServerNote = "server stats unavailable: " + errors.Join(beforeErr, afterErr).Error()
	default:
		split := DiffStats(before, after)
		st.Server = &split
	}
	return st, nil
}

// sleepUntil waits for t or for ctx to end.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pace schedules requests at rate per second from begin until win.end, handing each scheduled
// time to an idle sender or dropping it when none is idle (so at most len(senders) are in
// flight). It counts the scheduled and dropped requests whose time falls in win, and closes ch.
func pace(ctx context.Context, ch chan<- time.Time, begin time.Time, win window, rate float64) (scheduled, dropped int64) {
	defer close(ch)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := 0; ; i++ {
		// From i rather than by accumulation, so rounding does not drift the rate.
		at := begin.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if !at.Before(win.end) {
			return scheduled, dropped
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return scheduled, dropped
			}
		}
		in := win.contains(at)
		if in {
			scheduled++
		}
		select {
		case ch <- at:
		default:
			if in {
				dropped++
			}
		}
	}
}

// sender sends requests on one goroutine and keeps its own counts and latencies, merged after
// the step; nothing in it is shared.
type sender struct {
	client      *http.Client
	url         string
	body        []byte
	contentType string
	headerLen   string // Inference-Header-Content-Length, empty for an all-JSON body
	maxSamples  int
	grpc        *grpcTarget // set: send ModelInfer calls instead
	stream      *grpcStream // set: send on this step's stream, with ids from index
	index       int
	seq         uint64

	buf      bytes.Buffer
	reply    reply // a gRPC response's bytes
	checked  bool
	lat      []time.Duration
	ok       int64
	failed   int64
	late     int64
	errs     map[string]int64
	firstErr string
}

func (r *runner) newSender(maxSamples int) *sender {
	s := &sender{
		client: r.client, url: r.inferURL, body: r.body, contentType: "application/json", grpc: r.grpc,
		maxSamples: maxSamples, lat: make([]time.Duration, 0, min(maxSamples, 1<<10)),
	}
	if r.headerLen >= 0 { // some data is binary (always so for FP16 and BF16)
		s.contentType = "application/octet-stream"
		s.headerLen = strconv.Itoa(r.headerLen)
	}
	return s
}

// closed sends one request after another until the window ends.
func (s *sender) closed(ctx context.Context, win window) {
	for {
		t0 := time.Now()
		if !t0.Before(win.end) {
			return
		}
		kind, msg := s.send(ctx)
		t1 := time.Now()
		if ctx.Err() != nil {
			return
		}
		if win.contains(t1) {
			s.record(kind, msg, t1.Sub(t0))
		}
	}
}

// open sends each scheduled request it receives; latency runs from the scheduled time.
func (s *sender) open(ctx context.Context, sched <-chan time.Time, win window, late time.Duration) {
	for at := range sched {
		t0 := time.Now()
		kind, msg := s.send(ctx)
		t1 := time.Now()
		if ctx.Err() != nil {
			return
		}
		if win.contains(at) && t0.Sub(at) > late {
			s.late++
		}
		if win.contains(t1) {
			s.record(kind, msg, t1.Sub(at))
		}
	}
}

func (s *sender) record(kind, msg string, latency time.Duration) {
	if kind == "" {
		s.ok++
		if len(s.lat) < s.maxSamples {
			s.lat = append(s.lat, latency)
		}
		return
	}
	s.failed++
	if s.errs == nil {
		s.errs = map[string]int64{}
	}
	s.errs[kind]++
	if s.firstErr == "" {
		s.firstErr = kind + ": " + msg
	}
}

// send posts the request body once. kind is "" on success, else the HTTP status ("503"),
// "transport" or "invalid response", with a message.
func (s *sender) send(ctx context.Context) (kind, msg string) {
	if s.stream != nil {
		s.seq++
		return s.stream.send(ctx, streamID(s.index, s.seq), &s.checked)
	}
	if s.grpc != nil {
		return s.grpc.send(ctx, &s.reply, &s.checked)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(s.body))
	if err != nil {
		return "transport", err.Error()
	}
	req.Header.Set("Content-Type", s.contentType)
	if s.headerLen != "" {
		req.Header.Set(kserve.HeaderContentLength, s.headerLen)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return "transport", err.Error()
	}
	s.buf.Reset()
	_, err = s.buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "transport", err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return strconv.Itoa(resp.StatusCode), kserve.ErrorMessage(s.buf.Bytes())
	}
	if !s.checked {
		if err := checkResponse(s.buf.Bytes(), resp.Header); err != nil {
			return "invalid response", err.Error()
		}
		s.checked = true
	}
	return "", ""
}

// ErrResponse marks a 200 response whose body is not a valid inference response.
var ErrResponse = errors.New("invalid inference response")

// checkResponse decodes a 200 body as an inference response with at least one output.
func checkResponse(body []byte, h http.Header) error {
	headerLen, err := kserve.ParseHeaderLength(h.Get(kserve.HeaderContentLength))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrResponse, err)
	}
	resp, err := kserve.DecodeResponse(body, headerLen)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrResponse, err)
	}
	if len(resp.Outputs) == 0 {
		return fmt.Errorf("%w: no outputs", ErrResponse)
	}
	return nil
}
