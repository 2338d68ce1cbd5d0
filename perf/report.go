package perf

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/inferd/inferd/tensor"
)

// Report is the result of Run: one Step per concurrency level (closed loop) or the one rate step
// (open loop). Durations are nanoseconds in JSON.
type Report struct {
	// Mode is "concurrency" or "rate".
	Mode    string `json:"mode"`
	URL     string `json:"url"`
	Model   string `json:"model"`
	Version string `json:"version,omitempty"`
	// Format is "json" or "binary", or "grpc raw" or "grpc typed" for unary requests over
	// gRPC, "grpc raw stream" or "grpc typed stream" for requests on a ModelStreamInfer stream.
	Format string `json:"format"`
	// Inputs are the shapes and datatypes sent; RowsPerRequest is dimension 0 of the first.
	Inputs         []tensor.Spec `json:"inputs"`
	RowsPerRequest int64         `json:"rows_per_request"`
	RequestBytes   int           `json:"request_bytes"`
	Data           DataMode      `json:"data"`
	Cores          int           `json:"cores"`
	Warmup         time.Duration `json:"warmup_ns"`
	Duration       time.Duration `json:"duration_ns"`
	// ServerStats says whether the server answered the statistics endpoint; when it did not,
	// ServerStatsNote says why and every Step.Server is nil.
	ServerStats     bool   `json:"server_stats"`
	ServerStatsNote string `json:"server_stats_note,omitempty"`
	Steps           []Step `json:"steps"`
}

// Step is the measurement of one load level.
type Step struct {
	// Concurrency is the number of closed-loop senders (0 in rate mode).
	Concurrency int `json:"concurrency,omitempty"`
	// Rate is the open-loop target in requests/s, MaxOutstanding its bound on requests in
	// flight (0 in concurrency mode).
	Rate           float64 `json:"rate,omitempty"`
	MaxOutstanding int     `json:"max_outstanding,omitempty"`
	// Requests completed successfully in the window; Errors failed in it.
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// ErrorsBy counts errors by HTTP status ("503") or kind ("transport", "invalid response");
	// FirstError is one message of the step, for diagnosis.
	ErrorsBy   map[string]int64 `json:"errors_by,omitempty"`
	FirstError string           `json:"first_error,omitempty"`
	// Rate mode: requests scheduled in the window, dropped because MaxOutstanding were in
	// flight, and sent later than LateThreshold after their scheduled time.
	Scheduled int64 `json:"scheduled,omitempty"`
	Dropped   int64 `json:"dropped,omitempty"`
	Late      int64 `json:"late,omitempty"`
	// InferPerSec is successful requests per second, RowsPerSec batch rows per second.
	InferPerSec float64 `json:"infer_per_sec"`
	RowsPerSec  float64 `json:"rows_per_sec"`
	// Latency of successful requests.
	Latency Latency `json:"latency"`
	// ClientCPU is this process's share of the machine's CPU during the window (0..1).
	ClientCPU float64 `json:"client_cpu"`
	// Server is the server's own account of the window; nil without the statistics endpoint.
	Server     *ServerSplit `json:"server,omitempty"`
	ServerNote string       `json:"server_note,omitempty"`
	// Streams is the number of ModelStreamInfer streams the step opened when streaming: 1,
	// unless the server ended one and the next request opened another.
	Streams int `json:"streams,omitempty"`
}

// AllFailed reports whether no request of the step succeeded.
func (s *Step) AllFailed() bool { return s.Requests == 0 }

// label names the step for messages: "concurrency 4" or "rate 100/s".
func (s *Step) label() string {
	if s.Rate > 0 {
		return fmt.Sprintf("rate %g/s", s.Rate)
	}
	return fmt.Sprintf("concurrency %d", s.Concurrency)
}

// Failed lists the steps in which every request failed (or none completed).
func (r *Report) Failed() []string {
	var out []string
	for i := range r.Steps {
		if r.Steps[i].AllFailed() {
			out = append(out, r.Steps[i].label())
		}
	}
	return out
}

// WriteJSON writes v (a *Report or *RawReport) as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("perf: writing JSON: %w", err)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)) }

func describeInputs(specs []tensor.Spec) string {
	parts := make([]string, len(specs))
	for i, s := range specs {
		parts[i] = fmt.Sprintf("%s %s%s", s.Name, s.DataType, tensor.FormatShape(s.Shape))
	}
	return strings.Join(parts, ", ")
}

// WriteTable writes the report as a table, one row per step, then a line per step with errors.
func (r *Report) WriteTable(w io.Writer) error {
	version := r.Version
	if version == "" {
		version = "server's choice"
	}
	fmt.Fprintf(w, "Model %q (version %s) at %s: %s, %s data, %s (%d rows, %d bytes per request)\n",
		r.Model, version, r.URL, r.Format, r.Data, describeInputs(r.Inputs), r.RowsPerRequest, r.RequestBytes)
	fmt.Fprintf(w, "%s per step after %s warmup; client CPU is a share of %d cores\n", r.Duration, r.Warmup, r.Cores)
	if !r.ServerStats {
		fmt.Fprintf(w, "server stats unavailable: %s\n", r.ServerStatsNote)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	head := "Concurrency\t"
	if r.Mode == "rate" {
		head = "Rate/s\tOutst.\tSent\tLate\tDropped\t"
	}
	head += "Requests\tErrors\tInfer/s\tRows/s\tp50 ms\tp90 ms\tp95 ms\tp99 ms\tMax ms\tClient CPU\t"
	if r.ServerStats {
		head += "Queue µs\tCompute µs\tAvg batch\t"
	}
	fmt.Fprintln(tw, head)
	for i := range r.Steps {
		s := &r.Steps[i]
		if r.Mode == "rate" {
			fmt.Fprintf(tw, "%g\t%d\t%d\t%d\t%d\t", s.Rate, s.MaxOutstanding, s.Scheduled-s.Dropped, s.Late, s.Dropped)
		} else {
			fmt.Fprintf(tw, "%d\t", s.Concurrency)
		}
		l := s.Latency
		fmt.Fprintf(tw, "%d\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%.1f%%\t", s.Requests, s.Errors, s.InferPerSec, s.RowsPerSec,
			ms(l.P50), ms(l.P90), ms(l.P95), ms(l.P99), ms(l.Max), 100*s.ClientCPU)
		if r.ServerStats {
			if v := s.Server; v != nil {
				fmt.Fprintf(tw, "%s\t%s\t%.2f\t", us(v.AvgQueue), us(v.AvgCompute), v.AvgBatch)
			} else {
				fmt.Fprint(tw, "-\t-\t-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("perf: writing table: %w", err)
	}
	for i := range r.Steps {
		s := &r.Steps[i]
		if s.Errors > 0 {
			kinds := make([]string, 0, len(s.ErrorsBy))
			for _, k := range slices.Sorted(maps.Keys(s.ErrorsBy)) {
				kinds = append(kinds, fmt.Sprintf("%s: %d", k, s.ErrorsBy[k]))
			}
			fmt.Fprintf(w, "%s: %d errors (%s), first: %s\n", s.label(), s.Errors, strings.Join(kinds, ", "), s.FirstError)
		}
		if s.Streams > 1 {
			fmt.Fprintf(w, "%s: the server ended the stream; %d streams opened\n", s.label(), s.Streams)
		}
		if s.ServerNote != "" {
			fmt.Fprintf(w, "%s: %s\n", s.label(), s.ServerNote)
		}
		if s.Latency.Samples > 0 && int64(s.Latency.Samples) < s.Requests {
			fmt.Fprintf(w, "%s: latency from the first %d of %d requests (sample cap)\n", s.label(), s.Latency.Samples, s.Requests)
		}
	}
	return nil
}
