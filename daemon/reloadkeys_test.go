package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/config"
	"github.com/inferd/inferd/daemon"
	"github.com/inferd/inferd/internal/testutil"
)

// TestReloadEveryKey changes every key of the configuration schema, one reload each, and
// checks that the change either takes effect, seen through the API (HTTP answers, /health,
// /metrics, the log), or is reported as needing a restart in /health and sd_notify STATUS=;
// in single-node and in cluster mode, one daemon each. The keys come from config.Keys and
// whether a key needs a restart from its Restart field, so a new key fails here until it has
// a probe below or is marked restart-only in the schema.
func TestReloadEveryKey(t *testing.T) {
	for _, mode := range []string{"single", "cluster"} {
		t.Run(mode, func(t *testing.T) { reloadEveryKey(t, mode == "cluster") })
	}
}

// probe is how the test changes one live key and sees the change take effect.
type probe struct {
	// set are the keys the step writes (dotted key -> TOML value), beyond the base.
	set map[string]string
	// before, when set, checks that the effect is not there yet (with the base configuration).
	before func(t *testing.T, r *reloader)
	// check sees the change take effect, after the reload.
	check func(t *testing.T, r *reloader)
	// inert says why a change of the key has nothing to observe on this test's node; the test
	// then checks only that the reload applied it without asking for a restart.
	inert string
}

// reloader is one daemon under test and the file it reloads.
type reloader struct {
	h       *harness
	d       *daemon.Daemon
	dir     string // the configuration file's directory; the repository is dir/models
	cfgPath string
	base    map[string]string
	logs    *lockedBuffer
}

func reloadEveryKey(t *testing.T, clustered bool) {
	dir := t.TempDir()
	r := &reloader{dir: dir, cfgPath: filepath.Join(dir, "inferd.toml"), logs: &lockedBuffer{}, base: map[string]string{
		"models.repository": `"models"`,
		// The watcher loads nothing new unless a probe shortens this.
		"models.quiet_period":      `"1h"`,
		"server.max_request_bytes": "1000",
	}}
	if clustered {
		policy := filepath.Join(dir, "routing.toml")
		if err := os.WriteFile(policy, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		maps.Copy(r.base, map[string]string{"cluster.enabled": "true", "cluster.name": `"solo"`,
			"cluster.bind": `"127.0.0.1:0"`, "cluster.leave_timeout": `"10ms"`, "cluster.policy_file": strconv.Quote(policy)})
	}
	r.write(t, r.base)
	cfg, err := config.Load(r.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: level}))
	r.h, r.d = launchLogged(t, filepath.Join(dir, "models"), cfg, daemon.Options{ConfigPath: r.cfgPath, LogLevel: level}, log)

	// What probes switch to: a second repository with model "other", a policy with a rollout.
	other := filepath.Join(dir, "models2")
	testutil.WriteFile(t, other, "other/1/model.onnx", []byte("fake other"))
	r.h.rt.Register(filepath.Join(other, "other", "1", "model.onnx"), doubleSig, double)
	testutil.WriteFile(t, dir, "rollout.toml", []byte(rolloutPolicy))

	probes := liveProbes(clustered)
	for _, k := range config.Keys() {
		if k.Key == "server.shutdown_timeout" {
			continue // seen at shutdown, below
		}
		t.Run(k.Key, func(t *testing.T) {
			if k.Restart != "" {
				r.checkRestart(t, k)
				return
			}
			p, ok := probes[k.Key]
			if !ok {
				t.Fatalf("%s changes live (no reload tag in config's schema) but has no probe here: add one, or mark it reload:\"restart\"", k.Key)
			}
			r.checkLive(t, p)
		})
	}

	// server.shutdown_timeout shows when the daemon stops: the drain is bounded by the value
	// the last reload set.
	r.step(t, map[string]string{"server.shutdown_timeout": `"7s"`})
	r.h.cancel()
	if err := r.h.wait(); err != nil {
		t.Fatal(err)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "msg=\"shutting down\" drain_timeout=7s") {
		t.Errorf("server.shutdown_timeout: the drain did not use the reloaded value:\n%s", grepLines(logs, "shutting down"))
	}
}

// write renders keys (dotted key -> TOML value) as the configuration file.
func (r *reloader) write(t *testing.T, keys map[string]string) {
	t.Helper()
	tables := map[string][]string{}
	for k, v := range keys {
		i := strings.LastIndexByte(k, '.')
		tables[k[:i]] = append(tables[k[:i]], k[i+1:]+" = "+v)
	}
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		fmt.Fprintf(&b, "[%s]\n%s\n", name, strings.Join(slices.Sorted(slices.Values(tables[name])), "\n"))
	}
	if err := os.WriteFile(r.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// step reloads the base configuration with set on top, and returns the sd_notify STATUS= line
// of the reload. The reload must apply.
func (r *reloader) step(t *testing.T, set map[string]string) string {
	t.Helper()
	keys := maps.Clone(r.base)
	maps.Copy(keys, set)
	r.write(t, keys)
	for len(r.h.states) > 0 { // what earlier steps left
		<-r.h.states
	}
	if err := r.d.Reload(context.Background()); err != nil {
		t.Fatalf("reload with %v: %v", set, err)
	}
	status := ""
	for len(r.h.states) > 0 {
		if s := <-r.h.states; strings.HasPrefix(s, "STATUS=") {
			status = s
		}
	}
	return status
}

// reloadState is /health's config component.
func (r *reloader) reloadState(t *testing.T) (result string, restart []string) {
	t.Helper()
	var h struct {
		Components struct {
			Config struct {
				Detail struct {
					Result          string   `json:"result"`
					RestartRequired []string `json:"restart_required"`
				} `json:"detail"`
			} `json:"config"`
		} `json:"components"`
	}
	body := get(t, r.h.url+"/health")
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("/health: %v: %s", err, body)
	}
	c := h.Components.Config.Detail
	return c.Result, c.RestartRequired
}

func (r *reloader) checkRestart(t *testing.T, k config.KeyDoc) {
	status := r.step(t, restartChange(t, k, r.base))
	result, restart := r.reloadState(t)
	if result != "applied" || !slices.Contains(restart, k.Restart) {
		t.Errorf("/health after changing %s: result %q, restart_required %q; want applied and %s", k.Key, result, restart, k.Restart)
	}
	if want := "restart needed for"; !strings.Contains(status, want) || !strings.Contains(status, k.Restart) {
		t.Errorf("sd_notify after changing %s: %q, want it to name %s", k.Key, status, k.Restart)
	}
}

func (r *reloader) checkLive(t *testing.T, p probe) {
	if p.before != nil {
		r.step(t, nil)
		p.before(t, r)
	}
	status := r.step(t, p.set)
	result, restart := r.reloadState(t)
	if result != "applied" || len(restart) > 0 || strings.Contains(status, "restart") {
		t.Fatalf("reload of %v: /health result %q, restart_required %q, STATUS %q; want applied, live", p.set, result, restart, status)
	}
	if p.inert != "" {
		t.Log("nothing to observe:", p.inert)
		return
	}
	p.check(t, r)
}

// restartChange is a valid value for a restart-only key, other than its value in base (or its
// default).
func restartChange(t *testing.T, k config.KeyDoc, base map[string]string) map[string]string {
	t.Helper()
	special := map[string]map[string]string{
		"server.listen":              {"server.listen": `"127.0.0.1:1"`},
		"metrics.listen":             {"metrics.listen": `"127.0.0.1:1"`},
		"grpc.listen":                {"grpc.listen": `"127.0.0.1:2"`},
		"log.format":                 {"log.format": `"json"`},
		"engine.onnxruntime_library": {"engine.onnxruntime_library": `"/nonexistent/libonnxruntime.so"`},
		"engine.isolation":           {"engine.isolation": `"none"`},
		"server.state_dir":           {"server.state_dir": `"state"`},
		// TLS files come in pairs and client certificates need a CA (config's cross checks).
		"server.tls.cert_file":      {"server.tls.cert_file": `"c.pem"`, "server.tls.key_file": `"k.pem"`},
		"server.tls.key_file":       {"server.tls.cert_file": `"c2.pem"`, "server.tls.key_file": `"k2.pem"`},
		"server.tls.client_ca_file": {"server.tls.client_ca_file": `"ca.pem"`},
		"server.tls.client_auth": {"server.tls.client_auth": `"require"`, "server.tls.client_ca_file": `"ca.pem"`,
			"server.tls.cert_file": `"c.pem"`, "server.tls.key_file": `"k.pem"`},
		"auth.tokens_file":        {"auth.tokens_file": `"tokens"`},
		"auth.metrics_scope":      {"auth.metrics_scope": `"admin"`},
		"cluster.name":            {"cluster.name": `"other"`},
		"cluster.bind":            {"cluster.bind": `"127.0.0.1:1"`},
		"cluster.advertise":       {"cluster.advertise": `"127.0.0.1:2"`},
		"cluster.http_advertise":  {"cluster.http_advertise": `"127.0.0.1:3"`},
		"cluster.secret_key_file": {"cluster.secret_key_file": `"cluster.key"`},
		"cluster.label":           {"cluster.label": `"other"`},
		"cluster.join":            {"cluster.join": `["127.0.0.1:4"]`},
		"cluster.allowed_cidrs":   {"cluster.allowed_cidrs": `["10.0.0.0/8"]`},
	}
	if set, ok := special[k.Key]; ok {
		return set
	}
	cur := k.Default
	if v, ok := base[k.Key]; ok {
		cur = v
	}
	switch k.Type {
	case "boolean":
		return map[string]string{k.Key: strconv.FormatBool(cur != "true")}
	case "integer":
		n, err := strconv.ParseInt(cur, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{k.Key: strconv.FormatInt(n+1, 10)}
	case "duration":
		d, err := time.ParseDuration(strings.Trim(cur, `"`))
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{k.Key: strconv.Quote((d + time.Second).String())}
	}
	t.Fatalf("%s (%s): no changed value known: add one to restartChange", k.Key, k.Type)
	return nil
}

// liveProbes are the probes of the keys a reload applies live.
func liveProbes(clustered bool) map[string]probe {
	watcherOnly := "the model watcher's settings: it restarts with them, which loads, polls or waits no differently from outside within a unit test's time (models.quiet_period stands for them below)"
	reloads := func(set map[string]string) probe {
		// A daemon-wide default that the model's (empty) model.toml does not override changes
		// its effective settings: the model reloads as a new generation.
		var n int
		return probe{set: set,
			before: func(t *testing.T, r *reloader) { n = r.loads(t) },
			check: func(t *testing.T, r *reloader) {
				if got := r.loads(t); got <= n {
					t.Errorf("model double did not reload for %v: %d loads, %d before", set, got, n)
				}
			}}
	}
	// overLimit: req is refused with a 400 saying want once key is value, and not before.
	overLimit := func(key, value, req, want string) probe {
		name := want
		return probe{set: map[string]string{key: value},
			before: func(t *testing.T, r *reloader) {
				if _, b := r.infer(t, req); strings.Contains(b, name) {
					t.Errorf("%s refused before the reload: %s", name, b)
				}
			},
			check: func(t *testing.T, r *reloader) {
				if code, b := r.infer(t, req); code != http.StatusBadRequest || !strings.Contains(b, name) {
					t.Errorf("request over %s = %s: %d %s", key, value, code, b)
				}
			}}
	}
	// bigBody is over the base's max_request_bytes (1000).
	bigBody := `{"id":"` + strings.Repeat("x", 2000) + `",` + body[1:]
	ps := map[string]probe{
		// A budget of 64 bytes cannot take the buffer of any inference body, even alone: every
		// request is refused with 413 naming the key.
		"server.max_body_bytes_in_flight": {set: map[string]string{"server.max_body_bytes_in_flight": "64"},
			before: func(t *testing.T, r *reloader) {
				if code, b := r.infer(t, body); code != http.StatusOK {
					t.Errorf("request under the derived budget: %d %s", code, b)
				}
			},
			check: func(t *testing.T, r *reloader) {
				if code, b := r.infer(t, body); code != http.StatusRequestEntityTooLarge || !strings.Contains(b, "server.max_body_bytes_in_flight") {
					t.Errorf("request over a budget of 64 bytes: %d %s", code, b)
				}
			}},
		"server.max_request_bytes": {set: map[string]string{"server.max_request_bytes": "100000"},
			before: func(t *testing.T, r *reloader) {
				if code, b := r.infer(t, bigBody); code != http.StatusRequestEntityTooLarge {
					t.Errorf("body of %d bytes under a limit of 1000: %d %s", len(bigBody), code, b)
				}
			},
			check: func(t *testing.T, r *reloader) {
				if code, b := r.infer(t, bigBody); code != http.StatusOK {
					t.Errorf("body of %d bytes after raising the limit to 100000: %d %s", len(bigBody), code, b)
				}
			}},
		"models.repository": {set: map[string]string{"models.repository": `"models2"`},
			check: func(t *testing.T, r *reloader) {
				if idx := r.index(t); strings.Contains(idx, `"double"`) || !strings.Contains(idx, `"other"`) {
					t.Errorf("index after moving the repository to one with model other: %s", idx)
				}
			}},
		"models.control": {set: map[string]string{"models.control": `"explicit"`},
			before: func(t *testing.T, r *reloader) {
				if code := r.postCode(t, "/v2/repository/models/double/load", ""); code != http.StatusBadRequest {
					t.Errorf("load in watch mode: %d, want 400", code)
				}
			},
			check: func(t *testing.T, r *reloader) {
				if code := r.postCode(t, "/v2/repository/models/double/load", ""); code != http.StatusOK {
					t.Errorf("load in explicit mode: %d, want 200", code)
				}
			}},
		"models.quiet_period": {set: map[string]string{"models.quiet_period": `"50ms"`},
			check: func(t *testing.T, r *reloader) {
				// Version 2 lands after the reload: only the watcher can load it, and with the
				// base's hour of quiet it would not.
				path := filepath.Join(r.dir, "models", "double", "2", "model.onnx")
				r.h.rt.Register(path, doubleSig, double)
				testutil.WriteFile(t, filepath.Join(r.dir, "models"), "double/2/model.onnx", []byte("fake 2"))
				eventually(t, func() bool {
					return strings.Contains(r.index(t), `{"name":"double","version":"2","state":"READY"`)
				}, "version 2 of double loaded by the watcher")
			}},
		"models.poll":          {set: map[string]string{"models.poll": "true"}, inert: watcherOnly},
		"models.poll_interval": {set: map[string]string{"models.poll_interval": `"1s"`}, inert: watcherOnly},
		"models.ready_marker":  {set: map[string]string{"models.ready_marker": `"READY"`}, inert: watcherOnly},
		"log.level": {set: map[string]string{"log.level": `"debug"`},
			check: func(t *testing.T, r *reloader) {
				mark := len(r.logs.String())
				if code, b := r.infer(t, body); code != http.StatusOK {
					t.Fatalf("infer: %d %s", code, b)
				}
				if !strings.Contains(r.logs.String()[mark:], "level=DEBUG") {
					t.Error("no debug log line for a request after log.level = debug")
				}
			}},
		"engine.intra_op_threads":          reloads(map[string]string{"engine.intra_op_threads": "3"}),
		"engine.inter_op_threads":          reloads(map[string]string{"engine.inter_op_threads": "2"}),
		"engine.max_memory_bytes":          reloads(map[string]string{"engine.max_memory_bytes": "2000000000"}),
		"engine.load_timeout":              reloads(map[string]string{"engine.load_timeout": `"50s"`}),
		"engine.max_run_time":              reloads(map[string]string{"engine.max_run_time": `"50s"`}),
		"scheduler.default_instances":      reloads(map[string]string{"scheduler.default_instances": "2"}),
		"scheduler.default_max_batch_size": reloads(map[string]string{"scheduler.default_max_batch_size": "8"}),
		"scheduler.max_queue_delay":        reloads(map[string]string{"scheduler.max_queue_delay": `"7ms"`}),
		"scheduler.adaptive_delay":         reloads(map[string]string{"scheduler.adaptive_delay": "false"}),
		"scheduler.max_queue_size":         reloads(map[string]string{"scheduler.max_queue_size": "7"}),
		"scheduler.default_timeout":        reloads(map[string]string{"scheduler.default_timeout": `"7s"`}),
		"scheduler.calibration_time":       reloads(map[string]string{"scheduler.calibration_time": `"1s"`}),
		"gpu.memory_fraction": {set: map[string]string{"gpu.memory_fraction": "0.5"},
			inert: "it bounds placements onto GPUs, and this node places nothing on one (models' TestGPUMemoryFractionFollowsSettings)"},
		"limits.max_inputs": overLimit("limits.max_inputs", "1",
			`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"z","shape":[1],"datatype":"FP32","data":[1]}]}`, "(max_inputs)"),
		"limits.max_rank":         overLimit("limits.max_rank", "1", `{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`, "(max_rank)"),
		"limits.max_elements":     overLimit("limits.max_elements", "2", body, "(max_elements)"),
		"limits.max_string_bytes": overLimit("limits.max_string_bytes", "1", `{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","data":["abc"]}]}`, "(max_string_bytes)"),
		"limits.max_json_depth":   overLimit("limits.max_json_depth", "3", body, "JSON nesting deeper than 3"),
		"cluster.policy_file": {set: map[string]string{"cluster.policy_file": `"rollout.toml"`},
			inert: "cluster mode is off"},
		"tracing.endpoint":            tracingProbe(nil, "endpoint", "http://127.0.0.1:9/"),
		"tracing.protocol":            tracingProbe(map[string]string{"tracing.protocol": `"grpc"`}, "protocol", `"grpc"`),
		"tracing.sampling_ratio":      tracingProbe(map[string]string{"tracing.sampling_ratio": "0.25"}, "sampling_ratio", "0.25"),
		"tracing.service_name":        tracingProbe(map[string]string{"tracing.service_name": `"edge-7"`}, "service_name", `"edge-7"`),
		"tracing.resource_attributes": tracingProbe(map[string]string{"tracing.resource_attributes": `["rack=r7"]`}, "resource_attributes", `["rack=r7"]`),
	}
	if clustered {
		ps["cluster.policy_file"] = probe{set: map[string]string{"cluster.policy_file": `"rollout.toml"`},
			check: func(t *testing.T, r *reloader) {
				eventually(t, func() bool {
					return strings.Contains(get(t, r.h.url+"/v2/cluster/rollouts"), `"model":"double"`)
				}, "the rollout of rollout.toml in /v2/cluster/rollouts")
			}}
	}
	return ps
}

func (r *reloader) infer(t *testing.T, req string) (int, string) {
	t.Helper()
	resp, err := http.Post(r.h.url+"/v2/models/double/infer", "application/json", strings.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *reloader) postCode(t *testing.T, path, req string) int {
	t.Helper()
	resp, err := http.Post(r.h.url+path, "application/json", strings.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (r *reloader) index(t *testing.T) string {
	t.Helper()
	resp, err := http.Post(r.h.url+"/v2/repository/index", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// loads is how many times model double loaded, from /metrics.
func (r *reloader) loads(t *testing.T) int {
	t.Helper()
	const series = `inferd_model_loads_total{model="double",result="success"} `
	for _, l := range strings.Split(get(t, r.h.url+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(l, series); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

// tracingProbe turns tracing on (an endpoint nobody answers; no request is sent) with set,
// and sees /health's tracing component report field as want (JSON).
func tracingProbe(set map[string]string, field, want string) probe {
	keys := map[string]string{"tracing.endpoint": `"http://127.0.0.1:9/"`}
	maps.Copy(keys, set)
	if field == "endpoint" {
		want = strconv.Quote(want)
	}
	return probe{set: keys,
		before: func(t *testing.T, r *reloader) {
			if got := r.tracingDetail(t, field); got != "" {
				t.Errorf("tracing %s is %s before the reload", field, got)
			}
		},
		check: func(t *testing.T, r *reloader) {
			if got := r.tracingDetail(t, field); got != want {
				t.Errorf("/health tracing %s = %s, want %s", field, got, want)
			}
		}}
}

// tracingDetail is one field of /health's tracing component ("" when tracing is off).
func (r *reloader) tracingDetail(t *testing.T, field string) string {
	t.Helper()
	var h struct {
		Components struct {
			Tracing struct {
				Detail map[string]json.RawMessage `json:"detail"`
			} `json:"tracing"`
		} `json:"components"`
	}
	body := get(t, r.h.url+"/health")
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("/health: %v: %s", err, body)
	}
	return string(h.Components.Tracing.Detail[field])
}
