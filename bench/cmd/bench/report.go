package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/inferd/inferd/perf"
)

// results is everything the report is written from.
type results struct {
	started  time.Time
	elapsed  time.Duration
	machine  machine
	models   []*modelResult
	latency  []latencyRep
	wire     []wireRep
	shared   []sharedRep
	nodeNote string
	commands []string
}

// machine describes where the numbers were measured.
type machine struct {
	nproc, cpu, kernel, commit, inferd, node, date string
	loadStart, loadEnd                             string // /proc/loadavg's 1, 5, 15 minute averages
}

// loadavg is the first three fields of /proc/loadavg: other work on the machine skews the numbers.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func machineInfo(o options) machine {
	out := func(name string, args ...string) string {
		b, err := exec.Command(name, args...).Output()
		if err != nil {
			return "unknown (" + err.Error() + ")"
		}
		return strings.TrimSpace(string(b))
	}
	m := machine{
		nproc:     out("nproc"),
		kernel:    out("uname", "-sr"),
		commit:    out("git", "describe", "--tags", "--always", "--dirty"),
		inferd:    strings.ReplaceAll(out(o.inferd, "version"), "\n", "; "),
		node:      out("node", "--version"),
		date:      time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		cpu:       "unknown",
		loadStart: loadavg(),
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// median of the values that are not NaN; NaN when there are none.
func median(vs []float64) float64 {
	vs = slices.DeleteFunc(slices.Clone(vs), math.IsNaN)
	if len(vs) == 0 {
		return math.NaN()
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// efficiency is a server step's rows/s ÷ (raw best × (1 − the client's CPU share)).
func efficiency(run serverRun, raw rawRun, c int) float64 {
	st := run.step(c)
	if st == nil || raw.rep == nil || raw.rep.Best.RowsPerSec == 0 {
		return math.NaN()
	}
	return st.RowsPerSec / (raw.rep.Best.RowsPerSec * (1 - st.ClientCPU))
}

// speedup is a's rows/s ÷ b's at concurrency c.
func speedup(a, b serverRun, c int) float64 {
	sa, sb := a.step(c), b.step(c)
	if sa == nil || sb == nil || sb.RowsPerSec == 0 {
		return math.NaN()
	}
	return sa.RowsPerSec / sb.RowsPerSec
}

// ratio is one line of the ratio table.
type ratio struct {
	model, name string
	perRep      []float64
	target      float64 // 0: reported without a target
	times       bool    // shown as "3.1×" rather than "0.93"
}

func (r ratio) value() float64 { return median(r.perRep) }

func (r ratio) format(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case r.times:
		return fmt.Sprintf("%.2f×", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func (r ratio) targetText() string {
	if r.target == 0 {
		return "–"
	}
	return "≥ " + r.format(r.target)
}

// verdict is PASS or MISS with the margin, "–" without a target.
func (r ratio) verdict() string {
	v := r.value()
	switch {
	case r.target == 0:
		return "–"
	case math.IsNaN(v):
		return "not measured"
	case v >= r.target:
		return fmt.Sprintf("PASS (+%.0f%%)", 100*(v/r.target-1))
	default:
		return fmt.Sprintf("**MISS** by %s (%.0f%%)", r.format(r.target-v), 100*(v/r.target-1))
	}
}

func (r ratio) runs() string {
	parts := make([]string, len(r.perRep))
	for i, v := range r.perRep {
		parts[i] = r.format(v)
	}
	return strings.Join(parts, ", ")
}

// ratios computes the ratio table of one model.
func (m *modelResult) ratios(high int) []ratio {
	per := func(f func(r modelRep) float64) []float64 {
		out := make([]float64, len(m.reps))
		for i, r := range m.reps {
			out[i] = f(r)
		}
		return out
	}
	gemmTarget := func(t float64) float64 {
		if m.spec.gemm {
			return t
		}
		return 0
	}
	c := strconv.Itoa(high)
	return []ratio{
		{name: "efficiency, binary, c=" + c, target: 0.95,
			perRep: per(func(r modelRep) float64 { return efficiency(r.batchedBinary, r.raw, high) })},
		{name: "efficiency, JSON, c=" + c, target: 0.75,
			perRep: per(func(r modelRep) float64 { return efficiency(r.batchedJSON, r.raw, high) })},
		// The tuning issue's targets: against the best raw configuration the load can fill.
		{name: "out of the box, binary, c=" + c + ", vs raw the load can fill", target: 0.90,
			perRep: per(func(r modelRep) float64 { return efficiency(r.batchedBinary, r.rawFill, high) })},
		{name: "out of the box, JSON, c=" + c + ", vs raw the load can fill", target: gemmTarget(0.70),
			perRep: per(func(r modelRep) float64 { return efficiency(r.batchedJSON, r.rawFill, high) })},
		// The gRPC issue's: raw contents as efficient as HTTP binary (within 3%: the noise of
		// one repetition here), and one stream with 64 in flight nearly as fast as 64 clients.
		{name: "efficiency, gRPC raw, c=" + c,
			perRep: per(func(r modelRep) float64 { return efficiency(r.grpcRaw, r.raw, high) })},
		{name: "gRPC raw efficiency ÷ HTTP binary's, c=" + c, target: gemmTarget(0.97),
			perRep: per(func(r modelRep) float64 {
				return efficiency(r.grpcRaw, r.raw, high) / efficiency(r.batchedBinary, r.raw, high)
			})},
		{name: "gRPC, 1 stream with " + c + " in flight ÷ " + c + " unary clients", target: gemmTarget(0.90),
			perRep: per(func(r modelRep) float64 { return speedup(r.grpcStream, r.grpcRaw, high) })},
		{name: "batching ÷ unbatched, binary, c=" + c, target: gemmTarget(5), times: true,
			perRep: per(func(r modelRep) float64 { return speedup(r.batchedBinary, r.unbatchedBinary, high) })},
		{name: "batching ÷ unbatched, JSON, c=" + c, target: gemmTarget(5), times: true,
			perRep: per(func(r modelRep) float64 { return speedup(r.batchedJSON, r.unbatchedJS, high) })},
		{name: "inferd JSON ÷ Node.js JSON, c=" + c, target: gemmTarget(3), times: true,
			perRep: per(func(r modelRep) float64 { return speedup(r.batchedJSON, r.node, high) })},
		{name: "inferd binary ÷ Node.js JSON, c=" + c, target: gemmTarget(3), times: true,
			perRep: per(func(r modelRep) float64 { return speedup(r.batchedBinary, r.node, high) })},
	}
}

// latencyTarget is the concurrency-1 latency comparison of one format.
type latencyTarget struct {
	format                       string
	floor, raw, inferd, budget   time.Duration // medians
	floorRuns, rawRuns, inferdRs []time.Duration
}

const latencySlack = 50 * time.Microsecond

func p50(r serverRun) time.Duration {
	if st := r.step(1); st != nil && st.Requests > 0 {
		return st.Latency.P50
	}
	return -1
}

func medianDur(ds []time.Duration) time.Duration {
	vs := make([]float64, 0, len(ds))
	for _, d := range ds {
		if d >= 0 {
			vs = append(vs, float64(d))
		}
	}
	m := median(vs)
	if math.IsNaN(m) {
		return -1
	}
	return time.Duration(m)
}

func (res *results) latencyTargets() []latencyTarget {
	var out []latencyTarget
	for _, format := range []string{"JSON", "binary"} {
		t := latencyTarget{format: format}
		for _, l := range res.latency {
			floor, in := l.floorJSON, l.inferdJSON
			if format == "binary" {
				floor, in = l.floorBinary, l.inferdBinary
			}
			raw := time.Duration(-1)
			if l.raw.rep != nil {
				raw = l.raw.rep.Best.Latency.P50
			}
			t.floorRuns, t.rawRuns, t.inferdRs = append(t.floorRuns, p50(floor)), append(t.rawRuns, raw), append(t.inferdRs, p50(in))
		}
		t.floor, t.raw, t.inferd = medianDur(t.floorRuns), medianDur(t.rawRuns), medianDur(t.inferdRs)
		t.budget = t.floor + t.raw + latencySlack
		out = append(out, t)
	}
	return out
}

func (t latencyTarget) verdict() string {
	switch {
	case t.floor < 0 || t.raw < 0 || t.inferd < 0:
		return "not measured"
	case t.inferd <= t.budget:
		return fmt.Sprintf("PASS (%s under)", usText(t.budget-t.inferd))
	default:
		return fmt.Sprintf("**MISS** by %s (%+.0f%%)", usText(t.inferd-t.budget), 100*(float64(t.inferd)/float64(t.budget)-1))
	}
}

func usText(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func usList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = usText(d)
	}
	return strings.Join(parts, ", ")
}

// wireBytes is the tensor payload of one wire-path request, counted once (it also comes back).
const wireBytes = 4 * wireElems

const wireTarget = 1.0 // GB/s

func (res *results) wireGBps(c int) []float64 {
	return res.gbps(c, func(w wireRep) serverRun { return w.run })
}

func (res *results) wireGRPCGBps(c int) []float64 {
	return res.gbps(c, func(w wireRep) serverRun { return w.grpc })
}

func (res *results) gbps(c int, run func(wireRep) serverRun) []float64 {
	out := make([]float64, len(res.wire))
	for i, w := range res.wire {
		out[i] = math.NaN()
		if st := run(w).step(c); st != nil && st.Requests > 0 {
			out[i] = st.InferPerSec * wireBytes / 1e9
		}
	}
	return out
}

// grpcSlack is how much the gRPC p50 at concurrency 1 may exceed HTTP binary's.
const grpcSlack = 20 * time.Microsecond

// grpcLatency is the gRPC concurrency-1 target: its p50 against HTTP binary's + grpcSlack, both
// medians over the repetitions (floor and raw hold HTTP binary's p50 and the slack).
func (res *results) grpcLatency() (latencyTarget, bool) {
	t := latencyTarget{format: "gRPC raw"}
	var http []time.Duration
	for _, l := range res.latency {
		t.inferdRs = append(t.inferdRs, p50(l.inferdGRPC))
		http = append(http, p50(l.inferdBinary))
	}
	if len(t.inferdRs) == 0 {
		return t, false
	}
	t.inferd, t.floor, t.raw = medianDur(t.inferdRs), medianDur(http), grpcSlack
	t.budget = t.floor + grpcSlack
	return t, true
}

func wireVerdict(v float64) string {
	switch {
	case math.IsNaN(v):
		return "not measured"
	case v >= wireTarget:
		return fmt.Sprintf("PASS (+%.0f%%)", 100*(v/wireTarget-1))
	default:
		return fmt.Sprintf("**MISS** by %.2f GB/s (%.0f%%)", wireTarget-v, 100*(v/wireTarget-1))
	}
}

func gbList(vs []float64) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(parts, ", ")
}

var portRE = regexp.MustCompile(`http://127\.0\.0\.1:\d+`)

// markdown renders docs/benchmarks.md.
func (res *results) markdown(o options) string {
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	mc := res.machine
	p("# Benchmarks\n\n")
	p("Generated by `make bench` (bench/cmd/bench); do not edit by hand. What it measures and why is in the\n")
	p("package comment of `bench/cmd/bench`, in issue 3 (\"`inferd perf` and `make bench`\") and in issue 16 (the scheduler tunes itself:\n")
	p("the out-of-the-box rows, both models at once, the latency budget, calibration and its cache).\n\n")
	p("| | |\n| --- | --- |\n")
	p("| date | %s |\n| commit | `%s` |\n| machine | %s cores (`nproc`), %s, %s |\n", mc.date, mc.commit, mc.nproc, mc.cpu, mc.kernel)
	p("| software | %s; Go %s; Node.js %s with onnxruntime-node 1.29.0 |\n", mc.inferd, strings.TrimPrefix(runtime.Version(), "go"), mc.node)
	p("| method | %s measured per step after %s warmup; %d repetitions of the whole raw/server sequence, alternating raw and server runs; the ratios are the median of the per-repetition ratios (with an even count, the mean of the middle two), each repetition's value in brackets |\n",
		o.duration, o.warmup, o.reps)
	p("| load | `bin/inferd perf` on the same machine, closed loop, 1 row per request, seeded random data |\n")
	p("| wall time | %s for the whole run |\n", res.elapsed.Round(time.Second))
	p("| load average | %s at the start, %s at the end (1, 5, 15 min; anything above the benchmark's own load is other work skewing the numbers) |\n", mc.loadStart, mc.loadEnd)
	p("| raw data | every number below comes from the perf JSON file named in its row, in `%s/json/` (not committed); server logs in `%s/logs/` |\n\n", o.dir, o.dir)
	p("Efficiency = server rows/s ÷ (raw best rows/s × (1 − client CPU share)): the load generator shares the cores, so\n")
	p("that is the most any server could reach here. The raw best of a repetition is the faster of the raw sweep's\n")
	p("%d fastest configurations, measured again in that repetition for the full step duration.\n\n", o.rawCandidates)

	p("## Results against the targets\n\n")
	p("| model | ratio | median [per repetition] | target | result |\n| --- | --- | --- | --- | --- |\n")
	for _, m := range res.models {
		for _, r := range m.ratios(o.high) {
			p("| %s | %s | %s [%s] | %s | %s |\n", m.spec.key, r.name, r.format(r.value()), r.runs(), r.targetText(), r.verdict())
		}
	}
	for _, t := range res.latencyTargets() {
		p("| demo mlp | p50 latency, %s, c=1 | %s [%s] | ≤ %s (floor + raw Run + 50 µs) | %s |\n",
			t.format, usText(t.inferd), usList(t.inferdRs), usText(t.budget), t.verdict())
	}
	if g, ok := res.grpcLatency(); ok {
		p("| demo mlp | p50 latency, gRPC raw, c=1 | %s [%s] | ≤ %s (HTTP binary's + 20 µs) | %s |\n", usText(g.inferd), usList(g.inferdRs), usText(g.budget), g.verdict())
	}
	for _, c := range []int{1, 2} {
		vs := res.wireGBps(c)
		p("| identity | binary wire path, 4 MiB FP32, c=%d | %.2f GB/s [%s] | ≥ %.0f GB/s | %s |\n", c, median(vs), gbList(vs), wireTarget, wireVerdict(median(vs)))
	}
	for _, c := range []int{1, 2} {
		vs := res.wireGRPCGBps(c)
		target, verdict := "–", "–"
		if c == 2 {
			target, verdict = fmt.Sprintf("≥ %.0f GB/s", wireTarget), wireVerdict(median(vs))
		}
		p("| identity | gRPC raw wire path, 4 MiB FP32, c=%d | %.2f GB/s [%s] | %s | %s |\n", c, median(vs), gbList(vs), target, verdict)
	}
	for _, r := range res.sharedRatios(o.high) {
		p("| %s | %s | %s [%s] | %s | %s |\n", r.model, r.name, r.format(r.value()), r.runs(), r.targetText(), r.verdict())
	}
	for _, m := range res.models {
		if t, ok := m.budgetTarget(o.high); ok {
			p("| %s | p99 with latency_budget %s, binary, c=%d | %s [%s] | ≤ %s | %s |\n", m.spec.key, latencyBudget, o.high, ms(t.p99)+" ms", t.runs, ms(latencyBudget)+" ms", t.verdict)
		}
	}
	for _, m := range res.models {
		if rows, ok := m.scaleTargets(); ok {
			p("%s\n", strings.Join(rows, "\n"))
		}
	}
	var dis []string
	for _, m := range res.models {
		for i, r := range m.reps {
			for _, raw := range r.raws {
				if disturbed(raw, o.cores) {
					dis = append(dis, fmt.Sprintf("%s repetition %d (%s)", m.spec.key, i+1, base(raw.file)))
				}
			}
		}
	}
	if len(dis) > 0 {
		p("\n⚠ Other work took CPU during raw runs (see the model tables): %s. The ratios of those repetitions are suspect.\n", strings.Join(dis, ", "))
	}
	p("\nThe batching and Node.js targets are stated for the MLP; for ocr_cls the ratios are reported without a target.\n")
	p("The Node.js server speaks JSON only, so \"inferd binary ÷ Node.js\" compares inferd's binary path with Node's JSON.\n")
	if res.nodeNote != "" {
		p("\n**Node.js rows missing:** %s.\n", res.nodeNote)
	}

	for _, m := range res.models {
		res.modelSection(&w, o, m)
	}
	res.sharedSection(&w, o)
	res.latencySection(&w, o)
	res.wireSection(&w)

	p("\n## Reproduce\n\n")
	p("```sh\nmake bench                                        # defaults: BENCH_DURATION=%s BENCH_WARMUP=%s BENCH_REPS=%d\n", o.duration, o.warmup, o.reps)
	p("make bench BENCH_DURATION=30s BENCH_REPS=5         # longer and steadier (about 5× the wall time)\n")
	p("make bench BENCH_FLAGS='-ocr-instances 2 -mlp-queue-delay 5ms'   # pin server settings; go run ./bench/cmd/bench -h\n```\n\n")
	p("The exact commands of this run, in order (ports are chosen by the servers; `PORT` stands for each one):\n\n")
	p("<details><summary>%d commands</summary>\n\n```sh\n", len(res.commands))
	for _, c := range res.commands {
		p("%s\n", portRE.ReplaceAllString(c, "http://127.0.0.1:PORT"))
	}
	p("```\n\n</details>\n")
	return w.String()
}

func base(file string) string {
	if file == "" {
		return "–"
	}
	return "`" + filepath.Base(file) + "`"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// stepRow writes one table row for a server step.
func stepRow(w *strings.Builder, rep int, what, format string, run serverRun, c int, raw rawRun) {
	st := run.step(c)
	if st == nil {
		reason := "not measured"
		if run.err != nil {
			reason += ": " + strings.ReplaceAll(run.err.Error(), "|", "/")
		}
		fmt.Fprintf(w, "| %d | %s | %s | %d | %s | | | | | | | | %s |\n", rep, what, format, c, reason, base(run.file))
		return
	}
	queue, compute, batch := "–", "–", "–"
	if s := st.Server; s != nil {
		queue, compute, batch = usText(s.AvgQueue), usText(s.AvgCompute), fmt.Sprintf("%.1f", s.AvgBatch)
	}
	errs := ""
	if st.Errors > 0 {
		errs = fmt.Sprintf(" (%d errors)", st.Errors)
	}
	eff := efficiency(run, raw, c)
	effText := "–"
	if c > 1 && !math.IsNaN(eff) {
		effText = fmt.Sprintf("%.3f", eff)
	}
	fmt.Fprintf(w, "| %d | %s | %s | %d | %.1f%s | %s | %s | %.1f%% | %s | %s | %s | %s | %s |\n",
		rep, what, format, c, st.RowsPerSec, errs, ms(st.Latency.P50), ms(st.Latency.P99), 100*st.ClientCPU,
		effText, queue, compute, batch, base(run.file))
}

func (res *results) modelSection(w *strings.Builder, o options, m *modelResult) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("\n## %s: %s\n\n", m.spec.key, m.spec.title)
	var top []string
	for _, x := range topConfigs(m.sweep.rep, o.rawCandidates) {
		top = append(top, fmt.Sprintf("batch %d on %d instance(s) × %d thread(s), %.1f rows/s", x.Batch, x.Instances, x.Threads, x.RowsPerSec))
	}
	p("Raw sweep (%s per configuration, %s; table at the end of this section): fastest %s. Every repetition\n", o.sweepDuration, base(m.sweep.file), strings.Join(top, "; then "))
	p("measures these again for the full step duration; the faster is the repetition's ceiling.\n\n")
	p("inferd, batching: as calibration chose at load (docs/tuning.md), per repetition:\n\n")
	for i, r := range m.reps {
		p("- rep %d: %s\n", i+1, r.tuning)
	}
	p("\nNode.js: one session, %d intra-op threads. The out-of-the-box baseline is the fastest raw configuration that %d requests in flight can fill (instances × batch ≤ %d).\n\n", o.cores, o.high, o.high)
	p("<details><summary>model.toml with batching, and without</summary>\n\n```toml\n%s```\n\n```toml\n%s```\n\n</details>\n\n", m.batchedTOML, m.unbatchedTOML)
	p("| rep | run | format | conc. | rows/s | p50 ms | p99 ms | client CPU | efficiency | server queue | server compute | avg batch | JSON |\n")
	p("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for i, r := range m.reps {
		rep := i + 1
		for _, raw := range r.raws {
			if raw.rep == nil {
				p("| %d | raw | in-process | – | not measured: %v | | | | | | | | %s |\n", rep, raw.err, base(raw.file))
				continue
			}
			b, role := raw.rep.Best, "–"
			if raw.file == r.raw.file {
				role = "1 (ceiling)"
			}
			mark := ""
			if disturbed(raw, o.cores) {
				mark = " ⚠"
			}
			p("| %d | raw (batch %d, %d instance(s) × %d thread(s)) | in-process | – | %.1f | %s | %s | %.1f%%%s | %s | | %s per run | %d | %s |\n",
				rep, b.Batch, b.Instances, b.Threads, b.RowsPerSec, ms(b.Latency.P50), ms(b.Latency.P99), 100*b.ClientCPU, mark, role, usText(b.Latency.Mean), b.Batch, base(raw.file))
		}
		for _, c := range []int{1, o.high} {
			stepRow(w, rep, "inferd, batching", "binary", r.batchedBinary, c, r.raw)
		}
		for _, c := range []int{1, o.high} {
			stepRow(w, rep, "inferd, batching", "JSON", r.batchedJSON, c, r.raw)
		}
		if m.spec.gemm {
			stepRow(w, rep, "inferd, latency_budget "+latencyBudget.String(), "binary", r.budget, o.high, r.raw)
			for _, c := range []int{1, o.high} {
				stepRow(w, rep, "inferd, batching", "gRPC raw", r.grpcRaw, c, r.raw)
			}
			stepRow(w, rep, "inferd, batching, one stream", "gRPC raw", r.grpcStream, o.high, r.raw)
		}
		stepRow(w, rep, "inferd, no batching", "binary", r.unbatchedBinary, o.high, r.raw)
		stepRow(w, rep, "inferd, no batching", "JSON", r.unbatchedJS, o.high, r.raw)
		for _, c := range []int{1, o.high} {
			stepRow(w, rep, "Node.js", "JSON", r.node, c, r.raw)
		}
	}
	p("\nA raw run's client CPU is ONNX Runtime's own use of the machine; ⚠ marks one below %.0f%% of what its instances ×\n", 100*disturbedShare)
	p("threads should take: other work was running, so that repetition's ceiling and ratios are suspect.\n")
	p("Server queue and compute are inferd's own averages per request over the step (statistics extension); compute\n")
	p("covers the batch the request ran in. Efficiency is against the same repetition's raw run.\n")
	res.diagnosis(w, o, m)

	p("\n<details><summary>raw sweep</summary>\n\n| batch | instances | threads | rows/s | Run p50 ms | Run p99 ms |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, x := range m.sweep.rep.Results {
		p("| %d | %d | %d | %.1f | %s | %s |\n", x.Batch, x.Instances, x.Threads, x.RowsPerSec, ms(x.Latency.P50), ms(x.Latency.P99))
	}
	p("\n</details>\n")
}

// diagnosis lays out, for the batched runs at high concurrency, what inferd's statistics say
// next to the raw sweep's Run time at the nearest batch size with inferd's instances × threads.
func (res *results) diagnosis(w *strings.Builder, o options, m *modelResult) {
	var lines []string
	for i, r := range m.reps {
		if r.raw.rep == nil {
			continue
		}
		raw := r.raw.rep.Best
		for _, run := range []struct {
			format string
			run    serverRun
		}{{"binary", r.batchedBinary}, {"JSON", r.batchedJSON}} {
			st := run.run.step(o.high)
			if st == nil || st.Server == nil {
				continue
			}
			s := st.Server
			seen := requestBatch(s)
			line := fmt.Sprintf("rep %d, %s: %.0f rows/s, %.3f of raw uncorrected; %.1f rows per model run, %.1f rows in the batch of the average request; per request %s in the queue and %s of compute (input %s, infer %s, output %s)",
				i+1, run.format, st.RowsPerSec, st.RowsPerSec/raw.RowsPerSec, s.AvgBatch, seen, usText(s.AvgQueue), usText(s.AvgCompute),
				usText(s.AvgComputeInput), usText(s.AvgComputeInfer), usText(s.AvgComputeOutput))
			if x := m.nearestSweep(seen); x != nil {
				line += fmt.Sprintf("; the raw sweep ran batch %d on %d×%d in %s (p50)", x.Batch, x.Instances, x.Threads, usText(x.Latency.P50))
			}
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nAt concurrency %d with batching, from inferd's statistics. Compute is the run of the batch the request was in,\n", o.high)
	fmt.Fprintf(w, "averaged over requests, so it goes with the batch size of the average request (Σ b²·n ÷ Σ b·n over the\n")
	fmt.Fprintf(w, "batch-size histogram), not with the rows per model run; the raw sweep's Run time is given at the nearest batch:\n\n")
	for _, l := range lines {
		fmt.Fprintf(w, "- %s.\n", l)
	}
}

// disturbedShare is the fraction of its expected CPU below which a raw run counts as disturbed.
const disturbedShare = 0.9

// disturbed reports whether a raw run used clearly less CPU than its instances × threads should
// (cores is the machine's): a sign that other work shared the machine during the run.
func disturbed(raw rawRun, cores int) bool {
	if raw.rep == nil {
		return false
	}
	b := raw.rep.Best
	want := min(1, float64(b.Instances*b.Threads)/float64(cores))
	return b.ClientCPU < disturbedShare*want
}

// requestBatch is the size of the batch the average request ran in: Σ b²·n ÷ Σ b·n over the
// batch-size histogram (AvgBatch without one).
func requestBatch(s *perf.ServerSplit) float64 {
	var num, den float64
	for _, bc := range s.BatchExecutions {
		b, n := float64(bc.BatchSize), float64(bc.Executions)
		num += b * b * n
		den += b * n
	}
	if den == 0 {
		return s.AvgBatch
	}
	return num / den
}

// nearestSweep is the sweep result with inferd's instances × threads whose batch is nearest
// to batch, or nil.
func (m *modelResult) nearestSweep(batch float64) *perf.RawResult {
	var best *perf.RawResult
	instances := cmpInt(m.spec.instances, 1)
	for i := range m.sweep.rep.Results {
		x := &m.sweep.rep.Results[i]
		if x.Instances != instances || x.Threads != m.threads {
			continue
		}
		if best == nil || math.Abs(float64(x.Batch)-batch) < math.Abs(float64(best.Batch)-batch) {
			best = x
		}
	}
	return best
}

func (res *results) latencySection(w *strings.Builder, o options) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("\n## Latency at concurrency 1: demo MLP (4→8→3, `%s`)\n\n", o.demoModel)
	p("inferd serves it with `max_batch_size = 64` and the adaptive delay; the floor is `bench/cmd/floor`, a separate Go\n")
	p("process that reads the request and answers a fixed valid response (JSON, or binary when asked), measured with\n")
	p("the same client in the same repetition; raw Run is `perf --raw` at batch 1, 1 instance × %d threads.\n\n", o.cores)
	p("| rep | format | floor p50 | raw Run p50 | budget (floor + raw + 50 µs) | inferd p50 | inferd p99 | JSON files (floor, inferd, raw) |\n")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for i, l := range res.latency {
		raw := time.Duration(-1)
		if l.raw.rep != nil {
			raw = l.raw.rep.Best.Latency.P50
		}
		for _, f := range []struct {
			name          string
			floor, inferd serverRun
		}{{"JSON", l.floorJSON, l.inferdJSON}, {"binary", l.floorBinary, l.inferdBinary}} {
			fl, in := p50(f.floor), p50(f.inferd)
			budget := time.Duration(-1)
			if fl >= 0 && raw >= 0 {
				budget = fl + raw + latencySlack
			}
			p99 := "n/a"
			if st := f.inferd.step(1); st != nil {
				p99 = usText(st.Latency.P99)
			}
			p("| %d | %s | %s | %s | %s | %s | %s | %s, %s, %s |\n", i+1, f.name, usText(fl), usText(raw), usText(budget), usText(in), p99,
				base(f.floor.file), base(f.inferd.file), base(l.raw.file))
		}
	}
	p("\n| format | median inferd p50 | median budget | result |\n| --- | ---: | ---: | --- |\n")
	for _, t := range res.latencyTargets() {
		p("| %s | %s | %s | %s |\n", t.format, usText(t.inferd), usText(t.budget), t.verdict())
	}
	if g, ok := res.grpcLatency(); ok {
		p("\nOver gRPC (unary ModelInfer, raw contents) to the same server in the same repetition, against HTTP binary's p50 + %s:\n\n", usText(grpcSlack))
		p("| rep | gRPC p50 | gRPC p99 | HTTP binary p50 | JSON |\n| --- | ---: | ---: | ---: | --- |\n")
		for i, l := range res.latency {
			p99 := "n/a"
			if st := l.inferdGRPC.step(1); st != nil {
				p99 = usText(st.Latency.P99)
			}
			p("| %d | %s | %s | %s | %s |\n", i+1, usText(p50(l.inferdGRPC)), p99, usText(p50(l.inferdBinary)), base(l.inferdGRPC.file))
		}
		p("\nMedian gRPC p50 %s against a budget of %s: %s.\n", usText(g.inferd), usText(g.budget), g.verdict())
	}
}

func (res *results) wireSection(w *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("\n## Binary wire path: 4 MiB FP32 tensor through an identity model\n\n")
	p("One request carries a 1×%d FP32 tensor (4 MiB) in binary and gets the same 4 MiB back. GB/s counts the tensor\n", wireElems)
	p("once per request (requests/s × 4,194,304 bytes ÷ 10⁹); bytes on the wire are twice that. The model is served with\n")
	p("`max_batch_size = 0` (run as sent), so this is the HTTP and tensor path, not batching.\n\n")
	p("The same tensor goes over gRPC as raw contents (`raw_input_contents`/`raw_output_contents`) to the same server.\n\n")
	p("| rep | protocol | conc. | requests/s | GB/s (one way) | p50 ms | p99 ms | client CPU | server compute | JSON |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for i, wr := range res.wire {
		for _, run := range []struct {
			protocol string
			run      serverRun
		}{{"HTTP binary", wr.run}, {"gRPC raw", wr.grpc}} {
			for _, c := range []int{1, 2} {
				st := run.run.step(c)
				if st == nil {
					p("| %d | %s | %d | not measured: %v | | | | | | %s |\n", i+1, run.protocol, c, run.run.err, base(run.run.file))
					continue
				}
				compute := "–"
				if st.Server != nil {
					compute = usText(st.Server.AvgCompute)
				}
				p("| %d | %s | %d | %.1f | %.2f | %s | %s | %.1f%% | %s | %s |\n", i+1, run.protocol, c, st.InferPerSec, st.InferPerSec*wireBytes/1e9,
					ms(st.Latency.P50), ms(st.Latency.P99), 100*st.ClientCPU, compute, base(run.run.file))
			}
		}
	}
}

// summary is the ratio table as plain text for the terminal.
func (res *results) summary(o options) string {
	var w strings.Builder
	fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", "model", "ratio", "median", "target", "result")
	for _, m := range res.models {
		for _, r := range m.ratios(o.high) {
			fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", m.spec.key, r.name, r.format(r.value()), r.targetText(), strings.ReplaceAll(r.verdict(), "**", ""))
		}
	}
	for _, t := range res.latencyTargets() {
		fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", "demo", "p50 latency, "+t.format+", c=1", usText(t.inferd), "≤ "+usText(t.budget), strings.ReplaceAll(t.verdict(), "**", ""))
	}
	for _, c := range []int{1, 2} {
		v := median(res.wireGBps(c))
		fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", "identity", fmt.Sprintf("binary wire path GB/s, c=%d", c), fmt.Sprintf("%.2f", v), "≥ 1", strings.ReplaceAll(wireVerdict(v), "**", ""))
	}
	for _, r := range res.sharedRatios(o.high) {
		fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", r.model, r.name, r.format(r.value()), r.targetText(), strings.ReplaceAll(r.verdict(), "**", ""))
	}
	if g, ok := res.grpcLatency(); ok {
		fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", "demo", "p50 latency, gRPC raw, c=1", usText(g.inferd), "≤ "+usText(g.budget), strings.ReplaceAll(g.verdict(), "**", ""))
	}
	for _, c := range []int{1, 2} {
		v := median(res.wireGRPCGBps(c))
		fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", "identity", fmt.Sprintf("gRPC raw wire path GB/s, c=%d", c), fmt.Sprintf("%.2f", v), "≥ 1", strings.ReplaceAll(wireVerdict(v), "**", ""))
	}
	for _, m := range res.models {
		if t, ok := m.budgetTarget(o.high); ok {
			fmt.Fprintf(&w, "%-8s %-40s %-10s %-10s %s\n", m.spec.key, "p99 ms with latency_budget "+latencyBudget.String(), ms(t.p99), "≤ "+ms(latencyBudget), strings.ReplaceAll(t.verdict, "**", ""))
		}
	}
	for _, m := range res.models {
		if rows, ok := m.scaleTargets(); ok {
			for _, row := range rows {
				fmt.Fprintf(&w, "%s\n", strings.ReplaceAll(row, "**", ""))
			}
		}
	}
	for _, m := range res.models {
		for i, r := range m.reps {
			fmt.Fprintf(&w, "%-8s tuning, rep %d: %s\n", m.spec.key, i+1, r.tuning)
		}
	}
	return w.String()
}

// sharedRatios are the targets of both models loaded at once: each model's share of its solo
// throughput in the same repetition, and the sum of the shares.
func (res *results) sharedRatios(high int) []ratio {
	if len(res.shared) == 0 || len(res.models) < 2 {
		return nil
	}
	shares := make([][]float64, len(res.models))
	sums := make([]float64, len(res.shared))
	for i, sh := range res.shared {
		for j, m := range res.models {
			v := math.NaN()
			if sh.err == nil && i < len(m.reps) {
				v = speedup(sh.runs[j], m.reps[i].batchedBinary, high)
			}
			shares[j] = append(shares[j], v)
			sums[i] += v
		}
	}
	var out []ratio
	for j, m := range res.models {
		out = append(out, ratio{model: m.spec.key, name: fmt.Sprintf("share of solo, both models under load, binary, c=%d each", high), perRep: shares[j], target: 0.40})
	}
	return append(out, ratio{model: "both", name: "sum of the shares of solo", perRep: sums, target: 0.90})
}

// sharedSection shows the runs of both models at once.
func (res *results) sharedSection(w *strings.Builder, o options) {
	if len(res.shared) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Both models at once\n\nOne inferd serves every model above with its out-of-the-box model.toml; one perf process per model loads it at concurrency %d (binary) at the same time. The share is against the same repetition's solo run of the model.\n\n", o.high)
	fmt.Fprintf(w, "| rep | model | rows/s | solo rows/s | share | p50 ms | p99 ms | client CPU | JSON |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for i, sh := range res.shared {
		if sh.err != nil {
			fmt.Fprintf(w, "| %d | – | not measured: %v | | | | | | |\n", i+1, sh.err)
			continue
		}
		for j, m := range res.models {
			st, solo := sh.runs[j].step(o.high), m.reps[i].batchedBinary.step(o.high)
			if st == nil || solo == nil {
				fmt.Fprintf(w, "| %d | %s | not measured: %v | | | | | | %s |\n", i+1, m.spec.key, sh.runs[j].err, base(sh.runs[j].file))
				continue
			}
			fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | %.3f | %s | %s | %.1f%% | %s |\n", i+1, m.spec.key, st.RowsPerSec, solo.RowsPerSec,
				st.RowsPerSec/solo.RowsPerSec, ms(st.Latency.P50), ms(st.Latency.P99), 100*st.ClientCPU, base(sh.runs[j].file))
		}
	}
}

// budgetResult is the latency-budget run of a model across repetitions.
type budgetResult struct {
	p99     time.Duration // median over repetitions
	runs    string
	verdict string
}

// budgetTarget is the p99 of the model's latency-budget runs at the high concurrency, when it
// has them.
func (m *modelResult) budgetTarget(high int) (budgetResult, bool) {
	var p99s []time.Duration
	for _, r := range m.reps {
		if st := r.budget.step(high); st != nil {
			p99s = append(p99s, st.Latency.P99)
		}
	}
	if len(p99s) == 0 {
		return budgetResult{}, false
	}
	var parts []string
	for _, d := range p99s {
		parts = append(parts, ms(d))
	}
	t := budgetResult{p99: medianDur(p99s), runs: strings.Join(parts, ", ") + " ms"}
	if t.p99 <= latencyBudget {
		t.verdict = fmt.Sprintf("PASS (%s ms under)", ms(latencyBudget-t.p99))
	} else {
		t.verdict = fmt.Sprintf("**MISS** by %s ms", ms(t.p99-latencyBudget))
	}
	return t, true
}
