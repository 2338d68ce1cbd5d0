package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/inferd/inferd/internal/testmodels"
	"github.com/inferd/inferd/perf"
	"github.com/inferd/inferd/tensor"
)

// Generated models: the GEMM-heavy MLP and the FP32 identity of the wire-path measurement.
const (
	wideIn, wideHidden, wideOut = 1024, 4096, 1024
	wireElems                   = 1 << 20 // FP32 elements of the wire-path tensor: 4 MiB
)

// modelSpec is one model of the throughput comparison.
type modelSpec struct {
	key   string // served name and file prefix
	title string
	file  string // the .onnx file
	// shape is perf's --shape for the model's input at one row, "" for the model's own.
	shape string
	// inputs is a [[inputs]] override for model.toml, "" for none.
	inputs     string
	instances  int    // 0: inferd's default
	queueDelay string // "": inferd's default
	// gemm marks the model the batching and Node.js targets apply to.
	gemm bool
}

// rawRun is one `inferd perf --raw` measurement.
type rawRun struct {
	rep  *perf.RawReport
	file string
	err  error
}

// serverRun is one `inferd perf` measurement of a server.
type serverRun struct {
	rep  *perf.Report
	file string
	err  error
}

// step returns the step at concurrency c, or nil.
func (r serverRun) step(c int) *perf.Step {
	if r.rep == nil {
		return nil
	}
	for i := range r.rep.Steps {
		if r.rep.Steps[i].Concurrency == c {
			return &r.rep.Steps[i]
		}
	}
	return nil
}

// modelRep is one repetition of a model's measurements.
type modelRep struct {
	// raws are the sweep's top configurations measured again; raw is the fastest of them,
	// this repetition's ceiling.
	raws []rawRun
	raw  rawRun
	// rawFill is the fastest of raws that the high concurrency can fill (instances × batch ≤
	// requests in flight): the baseline of the out-of-the-box targets.
	rawFill rawRun
	tuning  tuningInfo // what calibration chose for the batched server
	scale   scaleRep   // the MLP's batched server when the load drops to one client
	budget  serverRun  // the MLP with [tuning] latency_budget, at the high concurrency
	// grpcRaw is the batched server over gRPC unary calls with raw contents (1 and the high
	// concurrency), grpcStream one ModelStreamInfer stream with the high concurrency in flight
	// (the MLP only).
	grpcRaw, grpcStream          serverRun
	batchedBinary, batchedJSON   serverRun
	unbatchedBinary, unbatchedJS serverRun
	node                         serverRun
}

// modelResult is everything measured on one model.
type modelResult struct {
	spec                       modelSpec
	sweep                      rawRun
	batchedTOML, unbatchedTOML string
	threads                    int // inferd's intra-op threads per instance
	reps                       []modelRep
}

// latencyRep is one repetition of the concurrency-1 latency measurement.
type latencyRep struct {
	floorJSON, floorBinary   serverRun
	inferdJSON, inferdBinary serverRun
	inferdGRPC               serverRun // gRPC unary, raw contents
	raw                      rawRun
}

// wireRep is one repetition of the binary wire-path measurement, over HTTP and over gRPC (raw
// contents).
type wireRep struct{ run, grpc serverRun }

// bench holds what every measurement shares.
type bench struct {
	o        options
	started  time.Time
	floor    string // the floor binary
	wide     string // generated model files
	identity string
	nodeNote string // why the Node.js rows are missing, "" when they are not
	seq      int
	commands []string

	mu   sync.Mutex
	live map[*server]bool
}

func newBench(o options) (*bench, error) {
	b := &bench{o: o, started: time.Now(), live: map[*server]bool{}}
	// Every file under json, logs and servers belongs to this run; models are regenerated.
	for _, d := range []string{"json", "logs", "servers"} {
		if err := os.RemoveAll(filepath.Join(o.dir, d)); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"json", "logs", "servers", "models"} {
		if err := os.MkdirAll(filepath.Join(o.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	b.floor = filepath.Join(o.dir, "floor")
	b.wide = filepath.Join(o.dir, "models", "mlp_wide.onnx")
	b.identity = filepath.Join(o.dir, "models", "identity_fp32.onnx")
	return b, nil
}

// modelSpecs are the two models of the throughput comparison.
func (b *bench) modelSpecs() []modelSpec {
	return []modelSpec{
		{
			key: "mlp", title: fmt.Sprintf("MLP %d→%d→%d→%d FP32 (generated)", wideIn, wideHidden, wideHidden, wideOut),
			file: b.wide, instances: b.o.mlpInstances, queueDelay: b.o.mlpDelay, gemm: true,
		},
		{
			key: "ocr_cls", title: "PaddleOCR mobile direction classifier (ch_ppocr_mobile_v2.0_cls_infer.onnx)",
			file: b.o.ocrModel, shape: "x=1,3,48,192", inputs: "[[inputs]]\nname = \"x\"\nshape = [-1, 3, 48, 192]\n",
			instances: b.o.ocrInstances, queueDelay: b.o.ocrDelay,
		},
	}
}

// prepare fetches and generates what the measurements need: the OCR models, the generated
// models, the floor binary and the Node.js server's packages (a failure there only drops the
// Node.js rows).
func (b *bench) prepare(ctx context.Context) error {
	if _, err := os.Stat(b.o.inferd); err != nil {
		return fmt.Errorf("%s: %w (make build)", b.o.inferd, err)
	}
	step("fetching the PaddleOCR models")
	if err := b.exec(ctx, "", "./scripts/fetch-ocr-models.sh", "build/ocr-models"); err != nil {
		return err
	}
	step("generating the MLP and identity models")
	if err := writeFile(b.wide, testmodels.Wide(wideIn, wideHidden, wideOut)); err != nil {
		return err
	}
	id, err := testmodels.Identity(tensor.FP32)
	if err != nil {
		return err
	}
	if err := writeFile(b.identity, id); err != nil {
		return err
	}
	step("building the loopback floor server")
	goCmd := cmpOr(os.Getenv("GO"), "go")
	if err := b.exec(ctx, "", goCmd, "build", "-o", b.floor, "./bench/cmd/floor"); err != nil {
		return err
	}
	switch {
	case b.o.noNode:
		b.nodeNote = "skipped (-no-node)"
	default:
		if _, err := os.Stat(filepath.Join(b.o.nodeDir, "server.js")); err != nil {
			b.nodeNote = "no server.js: " + err.Error()
			break
		}
		if v := installedVersion(filepath.Join(b.o.nodeDir, "node_modules", "onnxruntime-node")); v == nodeORTVersion {
			fmt.Printf("\n== %s: onnxruntime-node %s already installed\n", b.o.nodeDir, v)
			break
		}
		// As bench/node-server/README.md says: exactly the lock file, CPU runtime only.
		step("npm ci in " + b.o.nodeDir)
		if err := b.execEnv(ctx, []string{"ONNXRUNTIME_NODE_INSTALL=skip"}, b.o.nodeDir, "npm", "ci", "--no-audit", "--no-fund"); err != nil {
			b.nodeNote = "npm ci failed: " + err.Error()
		}
	}
	if b.nodeNote != "" {
		fmt.Println("bench: Node.js rows skipped:", b.nodeNote)
	}
	return nil
}

// nodeORTVersion is the onnxruntime-node the Node.js baseline pins.
const nodeORTVersion = "1.29.0"

// installedVersion is the version in dir/package.json, "" when there is none.
func installedVersion(dir string) string {
	pkg, err := readJSON[struct{ Version string }](filepath.Join(dir, "package.json"))
	if err != nil {
		return ""
	}
	return pkg.Version
}

// writeFile writes data to path through a temporary file, so a killed run leaves no half model.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// step prints a progress line.
func step(msg string) { fmt.Printf("\n== %s\n", msg) }

// record keeps a command line for the report's reproduction section.
func (b *bench) record(env []string, dir string, argv []string) {
	var sb strings.Builder
	if dir != "" {
		fmt.Fprintf(&sb, "(cd %s && ", dir)
	}
	for _, e := range env {
		sb.WriteString(e + " ")
	}
	for i, a := range argv {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(shellQuote(a))
	}
	if dir != "" {
		sb.WriteByte(')')
	}
	b.commands = append(b.commands, sb.String())
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// exec runs a preparation command in dir with its output on ours.
func (b *bench) exec(ctx context.Context, dir string, argv ...string) error {
	return b.execEnv(ctx, nil, dir, argv...)
}

// execEnv is exec with env added to ours.
func (b *bench) execEnv(ctx context.Context, env []string, dir string, argv ...string) error {
	b.record(env, dir, argv)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return nil
}

// runPerf runs `inferd perf ARGS --json FILE`, showing and keeping its table, and returns the
// JSON file's path.
func (b *bench) runPerf(ctx context.Context, label string, args ...string) (string, error) {
	b.mu.Lock() // two loads may run at once (measureShared)
	b.seq++
	base := filepath.Join(b.o.dir, "json", fmt.Sprintf("%02d-%s", b.seq, label))
	file := base + ".json"
	argv := append([]string{b.o.inferd, "perf"}, args...)
	argv = append(argv, "--json", file)
	b.record(nil, "", argv)
	b.mu.Unlock()
	step(fmt.Sprintf("%s (%s)", label, time.Since(b.started).Round(time.Second)))
	table, err := os.Create(base + ".txt")
	if err != nil {
		return "", err
	}
	defer table.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	w := io.MultiWriter(os.Stdout, table)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return file, fmt.Errorf("inferd perf %s: %w (see %s.txt)", label, err, base)
	}
	return file, nil
}

func readJSON[T any](file string) (*T, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

// raw runs `inferd perf --raw` over the given sweep ("" instances or threads: perf's default).
func (b *bench) raw(ctx context.Context, label, model, shape, batches, instances, threads string, d, warm time.Duration) rawRun {
	args := []string{"--raw", "--model-file", model, "--raw-batches", batches}
	if instances != "" {
		args = append(args, "--raw-instances", instances)
	}
	if threads != "" {
		args = append(args, "--raw-threads", threads)
	}
	if shape != "" {
		args = append(args, "--shape", shape)
	}
	args = append(args, "--duration", d.String(), "--warmup", warm.String())
	file, err := b.runPerf(ctx, label, args...)
	if err != nil {
		return rawRun{file: file, err: err}
	}
	rep, err := readJSON[perf.RawReport](file)
	return rawRun{rep, file, err}
}

// load measures a running server at the given concurrency levels; extra are more perf flags.
func (b *bench) load(ctx context.Context, s *server, label, model, shape, format, levels string, extra ...string) serverRun {
	if s == nil {
		return serverRun{err: fmt.Errorf("no server")}
	}
	args := []string{"-u", s.url, "-m", model, "--concurrency", levels, "--format", format,
		"--duration", b.o.duration.String(), "--warmup", b.o.warmup.String()}
	if shape != "" {
		args = append(args, "--shape", shape)
	}
	file, err := b.runPerf(ctx, label, append(args, extra...)...)
	if err != nil {
		return serverRun{file: file, err: err}
	}
	rep, err := readJSON[perf.Report](file)
	return serverRun{rep, file, err}
}

// failed returns a serverRun that records why a server could not be measured.
func failed(err error) serverRun { return serverRun{err: err} }

// writeRepository lays out dir/models/NAME/1/model.onnx (a hard link to file, or a copy) with model.toml and
// dir/inferd.toml, and returns the config's path.
func writeRepository(dir, name, file, modelTOML string) (string, error) {
	version := filepath.Join(dir, "models", name, "1")
	if err := os.MkdirAll(version, 0o755); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return "", err
	}
	// A hard link, or else a copy: inferd does not read a model.onnx whose symbolic link leads
	// outside its repository.
	link := filepath.Join(version, "model.onnx")
	_ = os.Remove(link)
	if err := os.Link(abs, link); err != nil {
		data, err := os.ReadFile(abs)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(link, data, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "models", name, "model.toml"), []byte(modelTOML), 0o644); err != nil {
		return "", err
	}
	config := filepath.Join(dir, "inferd.toml")
	// state_dir: the first start of a server calibrates its models, the repetitions after it
	// find the profiles kept (the cache hit of the tuning issue).
	const cfg = "# Generated by make bench (bench/cmd/bench).\n[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\n[models]\nrepository = \"models\"\n\n[log]\nformat = \"json\"\n"
	return config, os.WriteFile(config, []byte(cfg), 0o644)
}

// modelTOML is the model.toml of a benchmark configuration: with batching and nothing else set
// (instances, threads and the batch target are calibration's), the shapes the model leaves
// open fixed where it needs it; spec's instances and queue delay when the flags set them.
func modelTOML(spec modelSpec, maxBatch int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# Generated by make bench (bench/cmd/bench).\nmax_batch_size = %d\n", maxBatch)
	if spec.instances > 0 {
		fmt.Fprintf(&sb, "\n[instance]\ncount = %d\n", spec.instances)
	}
	if maxBatch > 0 && spec.queueDelay != "" {
		fmt.Fprintf(&sb, "\n[dynamic_batching]\nmax_queue_delay = %q\n", spec.queueDelay)
	}
	if spec.inputs != "" {
		sb.WriteString("\n" + spec.inputs)
	}
	return sb.String()
}

// startInferd serves one model from a generated repository under dir/servers/LABEL.
func (b *bench) startInferd(ctx context.Context, label, name, file, toml string) (*server, error) {
	config, err := writeRepository(filepath.Join(b.o.dir, "servers", label), name, file, toml)
	if err != nil {
		return nil, err
	}
	// The environment wins over the file: pin what the bench relies on.
	grpcAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	env := []string{"INFERD_SERVER_LISTEN=127.0.0.1:0", "INFERD_LOG_FORMAT=json", "INFERD_GRPC_LISTEN=" + grpcAddr}
	argv := []string{b.o.inferd, "serve", "--config", config}
	s, err := b.startServer(ctx, "inferd "+label, argv, env, inferdAddr, "/ready")
	if s != nil {
		s.grpc = grpcAddr
	}
	return s, err
}

// freePort is a loopback address whose port was free a moment ago: the gRPC listener's (the
// daemon logs the address it binds, but only HTTP's is read from its output).
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// loadGRPC measures a running inferd over gRPC: raw contents for "binary", typed for "json";
// with stream, each step's concurrency is the requests in flight on one ModelStreamInfer
// stream.
func (b *bench) loadGRPC(ctx context.Context, s *server, label, model, shape, format, levels string, stream bool) serverRun {
	if s == nil || s.grpc == "" {
		return serverRun{err: fmt.Errorf("no gRPC listener")}
	}
	extra := []string{"--protocol", "grpc", "--grpc", s.grpc}
	if stream {
		extra = append(extra, "--stream")
	}
	return b.load(ctx, s, label, model, shape, format, levels, extra...)
}

// startNode serves one model with the Node.js baseline.
func (b *bench) startNode(ctx context.Context, name, file string) (*server, error) {
	if b.nodeNote != "" {
		return nil, fmt.Errorf("Node.js %s", b.nodeNote)
	}
	argv := []string{"node", filepath.Join(b.o.nodeDir, "server.js"), "--model", file, "--name", name,
		"--port", "0", "--host", "127.0.0.1", "--threads", strconv.Itoa(b.o.cores)}
	return b.startServer(ctx, "node "+name, argv, nil, listeningAddr, "/v2/models/"+name)
}

// startFloor runs the loopback floor with the demo MLP's metadata.
func (b *bench) startFloor(ctx context.Context) (*server, error) {
	argv := []string{b.floor, "-listen", "127.0.0.1:0", "-model", "mlp", "-input", "input", "-input-shape", "-1,4",
		"-output", "output", "-output-shape", "1,3"}
	return b.startServer(ctx, "floor", argv, nil, listeningAddr, "/v2/models/mlp")
}

func (b *bench) startServer(ctx context.Context, name string, argv, env []string, addrOf addrFunc, ready string) (*server, error) {
	b.record(env, "", argv)
	step("starting " + name)
	// Numbered as the first perf JSON file it serves.
	logPath := filepath.Join(b.o.dir, "logs", fmt.Sprintf("%02d-%s.log", b.seq+1, strings.ReplaceAll(name, " ", "-")))
	s, err := start(ctx, name, argv, append(os.Environ(), env...), logPath, addrOf, ready)
	if err != nil {
		fmt.Println("bench:", err)
		return nil, err
	}
	b.mu.Lock()
	b.live[s] = true
	b.mu.Unlock()
	return s, nil
}

// stopServer stops s (nil is a no-op) and reports an unclean exit.
func (b *bench) stopServer(s *server) {
	if s == nil {
		return
	}
	if err := s.stop(); err != nil {
		fmt.Println("bench: warning:", err)
	}
	b.mu.Lock()
	delete(b.live, s)
	b.mu.Unlock()
}

// stopAll stops every server still running (after an error or an interrupt).
func (b *bench) stopAll() {
	b.mu.Lock()
	live := make([]*server, 0, len(b.live))
	for s := range b.live {
		live = append(live, s)
	}
	b.mu.Unlock()
	for _, s := range live {
		b.stopServer(s)
	}
}

// measureModel is one repetition on one model: raw at the sweep's fastest configurations, inferd
// with batching, inferd without, the Node.js server.
func (b *bench) measureModel(ctx context.Context, m *modelResult, rep int) modelRep {
	spec := m.spec
	var r modelRep
	tag := func(s string) string { return fmt.Sprintf("r%d-%s-%s", rep, spec.key, s) }
	high := strconv.Itoa(b.o.high)
	both := "1," + high

	for i, x := range rawConfigs(m.sweep.rep, b.o.rawCandidates, b.o.high) {
		run := b.raw(ctx, tag(fmt.Sprintf("raw%d", i+1)), spec.file, spec.shape, strconv.Itoa(x.Batch),
			strconv.Itoa(x.Instances), strconv.Itoa(x.Threads), b.o.duration, b.o.warmup)
		r.raws = append(r.raws, run)
		faster := func(than rawRun) bool {
			return run.rep != nil && (than.rep == nil || run.rep.Best.RowsPerSec > than.rep.Best.RowsPerSec)
		}
		if i == 0 || faster(r.raw) {
			r.raw = run
		}
		if fillable(x, b.o.high) && (r.rawFill.file == "" || faster(r.rawFill)) {
			r.rawFill = run
		}
	}

	m.batchedTOML, m.unbatchedTOML = modelTOML(spec, 64), modelTOML(spec, 0)
	m.threads = max(1, b.o.cores/max(1, cmpInt(spec.instances, 1)))
	if s, err := b.startInferd(ctx, spec.key+"-batched", spec.key, spec.file, m.batchedTOML); err != nil {
		r.batchedBinary, r.batchedJSON = failed(err), failed(err)
	} else {
		r.tuning = fetchTuning(ctx, s, spec.key)
		r.batchedBinary = b.load(ctx, s, tag("inferd-batched-binary"), spec.key, spec.shape, "binary", both)
		r.batchedJSON = b.load(ctx, s, tag("inferd-batched-json"), spec.key, spec.shape, "json", both)
		if spec.gemm {
			r.grpcRaw = b.loadGRPC(ctx, s, tag("inferd-batched-grpc-raw"), spec.key, spec.shape, "binary", both, false)
			r.grpcStream = b.loadGRPC(ctx, s, tag("inferd-batched-grpc-stream"), spec.key, spec.shape, "binary", high, true)
			r.scale = b.measureScaleDown(ctx, s, spec, tag)
		}
		b.stopServer(s)
	}
	if spec.gemm {
		toml := m.batchedTOML + fmt.Sprintf("\n[tuning]\nlatency_budget = %q\n", latencyBudget.String())
		if s, err := b.startInferd(ctx, spec.key+"-budget", spec.key, spec.file, toml); err != nil {
			r.budget = failed(err)
		} else {
			r.budget = b.load(ctx, s, tag("inferd-budget-binary"), spec.key, spec.shape, "binary", high)
			b.stopServer(s)
		}
	}
	if s, err := b.startInferd(ctx, spec.key+"-unbatched", spec.key, spec.file, m.unbatchedTOML); err != nil {
		r.unbatchedBinary, r.unbatchedJS = failed(err), failed(err)
	} else {
		r.unbatchedBinary = b.load(ctx, s, tag("inferd-unbatched-binary"), spec.key, spec.shape, "binary", high)
		r.unbatchedJS = b.load(ctx, s, tag("inferd-unbatched-json"), spec.key, spec.shape, "json", high)
		b.stopServer(s)
	}
	if s, err := b.startNode(ctx, spec.key, spec.file); err != nil {
		r.node = failed(err)
	} else {
		r.node = b.load(ctx, s, tag("node-json"), spec.key, spec.shape, "json", both)
		b.stopServer(s)
	}
	return r
}

// topConfigs are the n fastest configurations of a sweep, fastest first.
func topConfigs(sweep *perf.RawReport, n int) []perf.RawResult {
	all := slices.Clone(sweep.Results)
	slices.SortStableFunc(all, func(a, b perf.RawResult) int { return cmp.Compare(b.RowsPerSec, a.RowsPerSec) })
	return all[:min(max(n, 1), len(all))]
}

// fillable reports whether high requests in flight can keep configuration x busy: every
// instance with a full batch at once.
func fillable(x perf.RawResult, high int) bool { return x.Instances*x.Batch <= high }

// rawConfigs are the configurations each repetition measures again: the sweep's n fastest, and
// its n fastest among those high requests in flight can fill (the baseline of the out-of-the-box
// targets), each once.
func rawConfigs(sweep *perf.RawReport, n, high int) []perf.RawResult {
	out := topConfigs(sweep, n)
	fill := &perf.RawReport{Results: slices.DeleteFunc(slices.Clone(sweep.Results), func(x perf.RawResult) bool { return !fillable(x, high) })}
	if len(fill.Results) == 0 {
		return out
	}
	for _, x := range topConfigs(fill, n) {
		if !slices.ContainsFunc(out, func(y perf.RawResult) bool {
			return y.Batch == x.Batch && y.Instances == x.Instances && y.Threads == x.Threads
		}) {
			out = append(out, x)
		}
	}
	return out
}

// latencyBudget is the [tuning] latency_budget of the MLP's budget run.
const latencyBudget = 50 * time.Millisecond

// tuningInfo is what a served version's config endpoint says of its tuning (docs/tuning.md).
type tuningInfo struct {
	Source        string  `json:"source"`
	Instances     int     `json:"instances"`
	Threads       int     `json:"intra_op_threads"`
	BatchTarget   int     `json:"batch_target"`
	Cached        bool    `json:"cached"`
	CalibrationMs float64 `json:"calibration_ms"`
	Reason        string  `json:"reason"`
	err           error
}

func (t tuningInfo) String() string {
	if t.err != nil {
		return "not read: " + t.err.Error()
	}
	how := fmt.Sprintf("calibrated in %.0f ms", t.CalibrationMs)
	if t.Cached {
		how = "profile from the state directory, no calibration"
	}
	return fmt.Sprintf("%s: %d × %d, batch target %d (%s; %s)", t.Source, t.Instances, t.Threads, t.BatchTarget, how, t.Reason)
}

// fetchTuning reads the tuning of model from s's config endpoint.
func fetchTuning(ctx context.Context, s *server, model string) tuningInfo {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v2/models/"+model+"/config", nil)
	if err != nil {
		return tuningInfo{err: err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return tuningInfo{err: err}
	}
	defer resp.Body.Close()
	var body struct {
		Tuning tuningInfo `json:"tuning"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return tuningInfo{err: err}
	}
	return body.Tuning
}

// sharedRep is one repetition of both models served by one inferd and loaded at once.
type sharedRep struct {
	runs []serverRun // in the order of the models
	err  error
}

// measureShared serves every model from one inferd, with the out-of-the-box model.toml each
// model's own runs use, and loads them all at once at the high concurrency (binary), each from
// its own perf process.
func (b *bench) measureShared(ctx context.Context, models []*modelResult, rep int) sharedRep {
	dir := filepath.Join(b.o.dir, "servers", "shared")
	var config string
	for _, m := range models {
		var err error
		if config, err = writeRepository(dir, m.spec.key, m.spec.file, m.batchedTOML); err != nil {
			return sharedRep{err: err}
		}
	}
	env := []string{"INFERD_SERVER_LISTEN=127.0.0.1:0", "INFERD_LOG_FORMAT=json"}
	s, err := b.startServer(ctx, "inferd shared", []string{b.o.inferd, "serve", "--config", config}, env, inferdAddr, "/ready")
	if err != nil {
		return sharedRep{err: err}
	}
	defer b.stopServer(s)
	out := sharedRep{runs: make([]serverRun, len(models))}
	var wg sync.WaitGroup
	for i, m := range models {
		wg.Go(func() {
			out.runs[i] = b.load(ctx, s, fmt.Sprintf("r%d-shared-%s-binary", rep, m.spec.key), m.spec.key, m.spec.shape, "binary", strconv.Itoa(b.o.high))
		})
	}
	wg.Wait()
	return out
}

func cmpInt(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// demoTOML is the latency model's configuration: batching on, adaptive delay.
const demoTOML = "# Generated by make bench (bench/cmd/bench).\nmax_batch_size = 64\n\n[dynamic_batching]\nadaptive_delay = true\n"

// measureLatency is one repetition of the concurrency-1 latency comparison on the demo MLP.
func (b *bench) measureLatency(ctx context.Context, rep int) latencyRep {
	var r latencyRep
	tag := func(s string) string { return fmt.Sprintf("r%d-latency-%s", rep, s) }
	if s, err := b.startFloor(ctx); err != nil {
		r.floorJSON, r.floorBinary = failed(err), failed(err)
	} else {
		r.floorJSON = b.load(ctx, s, tag("floor-json"), "mlp", "", "json", "1")
		r.floorBinary = b.load(ctx, s, tag("floor-binary"), "mlp", "", "binary", "1")
		b.stopServer(s)
	}
	if s, err := b.startInferd(ctx, "demo-mlp", "mlp", b.o.demoModel, demoTOML); err != nil {
		r.inferdJSON, r.inferdBinary = failed(err), failed(err)
	} else {
		r.inferdJSON = b.load(ctx, s, tag("inferd-json"), "mlp", "", "json", "1")
		r.inferdBinary = b.load(ctx, s, tag("inferd-binary"), "mlp", "", "binary", "1")
		r.inferdGRPC = b.loadGRPC(ctx, s, tag("inferd-grpc-raw"), "mlp", "", "binary", "1", false)
		b.stopServer(s)
	}
	r.raw = b.raw(ctx, tag("raw"), b.o.demoModel, "", "1", "1", strconv.Itoa(b.o.cores), b.o.duration, b.o.warmup)
	return r
}

// wireTOML serves the identity model as declared: the measurement is of the wire path.
const wireTOML = "# Generated by make bench (bench/cmd/bench).\nmax_batch_size = 0\n"

// measureWire is one repetition of the binary wire-path throughput.
func (b *bench) measureWire(ctx context.Context, rep int) wireRep {
	s, err := b.startInferd(ctx, "identity", "identity", b.identity, wireTOML)
	if err != nil {
		return wireRep{run: failed(err), grpc: failed(err)}
	}
	defer b.stopServer(s)
	shape := fmt.Sprintf("in=1,%d", wireElems)
	return wireRep{
		run:  b.load(ctx, s, fmt.Sprintf("r%d-wire-identity-binary", rep), "identity", shape, "binary", "1,2"),
		grpc: b.loadGRPC(ctx, s, fmt.Sprintf("r%d-wire-identity-grpc-raw", rep), "identity", shape, "binary", "1,2", false),
	}
}
