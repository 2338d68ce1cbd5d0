package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inferd/inferd/internal/testutil"
)

// kinds exercises every supported field kind, a nested table and a path
// field, which Config itself does not all have yet.
type kinds struct {
	Server struct {
		Listen  string        `toml:"listen" check:"hostport"`
		Debug   bool          `toml:"debug"`
		Workers int           `toml:"workers" check:"min=0"`
		Small   int8          `toml:"small"`
		Ratio   float64       `toml:"ratio" check:"min=0"`
		Timeout time.Duration `toml:"timeout" check:"min=1ms"`
		Peers   []string      `toml:"peers"`
		TLS     struct {
			CertFile string `toml:"cert_file" path:"file"`
		} `toml:"tls"`
	} `toml:"server"`
}

func defaultKinds() kinds {
	var k kinds
	k.Server.Listen = "127.0.0.1:1"
	k.Server.Timeout = time.Second
	return k
}

func loadKinds(t *testing.T, name, doc string, env []string) (kinds, []Problem) {
	t.Helper()
	k := defaultKinds()
	_, problems := load(reflect.ValueOf(&k).Elem(), name, []byte(doc), env)
	return k, problems
}

func problemLines(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Error()
	}
	return out
}

func TestDefaultIsValid(t *testing.T) {
	def := Default()
	if err := def.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	c, err := LoadBytes("", nil, nil)
	if err != nil {
		t.Fatalf("LoadBytes(empty) = %v", err)
	}
	if !reflect.DeepEqual(*c, def) {
		t.Errorf("LoadBytes(empty) = %+v, want Default() %+v", *c, def)
	}
}

func TestLoadFileOverrides(t *testing.T) {
	doc := `
[server]
listen = ":9000"
max_request_bytes = 1_048_576
read_timeout = "1m30s"
write_timeout = "0s"
[models]
repository = "/srv/models"
[log]
level = "debug"
format = "json"
[engine]
onnxruntime_library = "/opt/ort/libonnxruntime.so"
intra_op_threads = 4
inter_op_threads = 0
[scheduler]
default_instances = 2
default_max_batch_size = 0x40
`
	want := Default()
	want.Server.Listen = ":9000"
	want.Server.MaxRequestBytes = 1 << 20
	want.Server.ReadTimeout = 90 * time.Second
	want.Server.WriteTimeout = 0
	want.Models.Repository = "/srv/models"
	want.Log = Log{Level: "debug", Format: "json"}
	want.Engine.OnnxRuntimeLibrary, want.Engine.IntraOpThreads, want.Engine.InterOpThreads = "/opt/ort/libonnxruntime.so", 4, 0
	want.Scheduler.DefaultInstances = 2
	want.Scheduler.DefaultMaxBatchSize = 64

	c, err := LoadBytes("inferd.toml", []byte(doc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("got  %+v\nwant %+v", *c, want)
	}
}

func TestKeyForms(t *testing.T) {
	// Dotted keys and inline tables reach the same fields as table headers.
	tests := []struct{ name, doc string }{
		{"header", "[server]\nlisten = \"h:1\"\ntimeout = \"2s\"\n[server.tls]\ncert_file = \"/c\""},
		{"dotted", "server.listen = \"h:1\"\nserver.timeout = \"2s\"\nserver.tls.cert_file = \"/c\""},
		{"inline", "server = { listen = \"h:1\", timeout = \"2s\", tls = { cert_file = \"/c\" } }"},
		{"mixed", "[server]\nlisten = \"h:1\"\ntimeout = \"2s\"\ntls.cert_file = \"/c\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, problems := loadKinds(t, "k.toml", tt.doc, nil)
			if len(problems) > 0 {
				t.Fatal(problemLines(problems))
			}
			if k.Server.Listen != "h:1" || k.Server.Timeout != 2*time.Second || k.Server.TLS.CertFile != "/c" {
				t.Errorf("got %+v", k.Server)
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	file := "[server]\nlisten = \"file:1\"\nworkers = 3\n"
	tests := []struct {
		env   string
		check func(k kinds) bool
	}{
		{"INFERD_SERVER_LISTEN=env:2", func(k kinds) bool { return k.Server.Listen == "env:2" }},
		{"INFERD_SERVER_DEBUG=true", func(k kinds) bool { return k.Server.Debug }},
		{"INFERD_SERVER_WORKERS=8", func(k kinds) bool { return k.Server.Workers == 8 }},
		{"INFERD_SERVER_SMALL=-128", func(k kinds) bool { return k.Server.Small == -128 }},
		{"INFERD_SERVER_RATIO=0.25", func(k kinds) bool { return k.Server.Ratio == 0.25 }},
		{"INFERD_SERVER_TIMEOUT=1m30s", func(k kinds) bool { return k.Server.Timeout == 90*time.Second }},
		{"INFERD_SERVER_PEERS=a:1, b:2,,c:3", func(k kinds) bool {
			return slices.Equal(k.Server.Peers, []string{"a:1", "b:2", "c:3"})
		}},
		{"INFERD_SERVER_PEERS=", func(k kinds) bool { return len(k.Server.Peers) == 0 }},
		{"INFERD_SERVER_TLS_CERT_FILE=rel/cert.pem", func(k kinds) bool {
			return k.Server.TLS.CertFile == "rel/cert.pem" // env paths stay relative to the cwd
		}},
		// Not ours, or not under a known table: ignored.
		{"INFERD_ONNXRUNTIME_LIBRARY=/x.so", func(k kinds) bool { return k.Server.Listen == "file:1" }},
		{"INFERD_SOMETHING=1", func(k kinds) bool { return k.Server.Listen == "file:1" }},
		{"OTHER_SERVER_LISTEN=x:1", func(k kinds) bool { return k.Server.Listen == "file:1" }},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			k, problems := loadKinds(t, "k.toml", file, []string{tt.env})
			if len(problems) > 0 {
				t.Fatal(problemLines(problems))
			}
			if !tt.check(k) {
				t.Errorf("%s: got %+v", tt.env, k.Server)
			}
		})
	}
}

func TestEnvOverridesConfig(t *testing.T) {
	env := []string{
		"PATH=/usr/bin",
		"INFERD_SERVER_LISTEN=0.0.0.0:80",
		"INFERD_SERVER_SHUTDOWN_TIMEOUT=5s",
		"INFERD_ENGINE_INTRA_OP_THREADS=2",
		"INFERD_LOG_LEVEL=warn",
		"INFERD_LOG_LEVEL=error", // last one wins, as in exec
	}
	c, err := LoadBytes("inferd.toml", []byte("[log]\nlevel = \"debug\"\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != "0.0.0.0:80" || c.Server.ShutdownTimeout != 5*time.Second ||
		c.Engine.IntraOpThreads != 2 || c.Log.Level != "error" {
		t.Errorf("got %+v", *c)
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		env  []string
		want []string
		is   []error
	}{{
		name: "unknown key",
		doc:  "# comment\n[server]\nlisten = \"127.0.0.1:1\"\nlistn = \"x\"\n",
		want: []string{`c.toml:4: server.listn: unknown key (did you mean server.listen?)`},
		is:   []error{ErrUnknownKey},
	}, {
		name: "unknown table and what follows it",
		doc:  "[serverx]\nlisten = 1\n[log]\nlevel = \"info\"\nlevell = 1\n",
		want: []string{
			`c.toml:1: serverx: unknown key (did you mean server?)`,
			`c.toml:5: log.levell: unknown key (did you mean log.level?)`,
		},
	}, {
		name: "key in the wrong table",
		doc:  "listen = \"x:1\"\n[log]\nrepository = \"/m\"\n",
		want: []string{
			`c.toml:1: listen: unknown key (did you mean grpc.listen or metrics.listen or server.listen?)`,
			`c.toml:3: log.repository: unknown key (did you mean models.repository?)`,
		},
	}, {
		name: "wrong types",
		doc: `[server]
listen = 8080
max_request_bytes = "big"
idle_timeout = 30
[log]
level = ["info"]
[engine]
intra_op_threads = 1.5
[models]
repository = { path = "/m" }
[scheduler.default_instances]
`,
		want: []string{
			`c.toml:2: server.listen: wrong type: want string, got integer`,
			`c.toml:3: server.max_request_bytes: wrong type: want integer, got string`,
			`c.toml:4: server.idle_timeout: wrong type: want duration string such as "30s", got integer`,
			`c.toml:6: log.level: wrong type: want string, got array`,
			`c.toml:8: engine.intra_op_threads: wrong type: want integer, got float`,
			`c.toml:10: models.repository: wrong type: want string, got inline table`,
			`c.toml:11: scheduler.default_instances: wrong type: want integer, got table`,
		},
		is: []error{ErrType},
	}, {
		name: "invalid values",
		doc: `[server]
listen = "8080"
max_request_bytes = -1
read_timeout = "30"
write_timeout = "-1s"
shutdown_timeout = "0s"
[log]
level = "loud"
format = "xml"
[engine]
intra_op_threads = -1
inter_op_threads = -2
[scheduler]
default_instances = 0
default_max_batch_size = -8
[models]
repository = ""
`,
		want: []string{
			`c.toml:2: server.listen: invalid value "8080": want host:port such as "127.0.0.1:8080" or ":8080": address 8080: missing port in address`,
			`c.toml:3: server.max_request_bytes: invalid value -1: must be at least 1`,
			`c.toml:4: server.read_timeout: invalid value "30": want a duration such as "30s" or "1m30s"`,
			`c.toml:5: server.write_timeout: invalid value "-1s": must be at least "0s"`,
			`c.toml:6: server.shutdown_timeout: invalid value "0s": must be at least "1ms"`,
			`c.toml:8: log.level: invalid value "loud": want one of debug, info, warn, error`,
			`c.toml:9: log.format: invalid value "xml": want one of text, json`,
			`c.toml:11: engine.intra_op_threads: invalid value -1: must be at least 0`,
			`c.toml:12: engine.inter_op_threads: invalid value -2: must be at least 0`,
			`c.toml:14: scheduler.default_instances: invalid value 0: must be at least 1`,
			`c.toml:15: scheduler.default_max_batch_size: invalid value -8: must be at least 0`,
			`c.toml:17: models.repository: invalid value: must not be empty`,
		},
		is: []error{ErrInvalid},
	}, {
		name: "bad port",
		doc:  "server.listen = \"host:http\"\n",
		want: []string{`c.toml:1: server.listen: invalid value "host:http": want host:port such as "127.0.0.1:8080" or ":8080": port "http" is not a number from 0 to 65535`},
	}, {
		name: "everything at once, in line order, env after",
		doc: `[log]
level = "loud"
[server]
listen = 1
bogus = true
[engine]
intra_op_threads = -3
`,
		env: []string{
			"INFERD_SERVER_LISTN=x",
			"INFERD_SCHEDULER_DEFAULT_INSTANCES=many",
			"INFERD_LOG_FORMAT=yaml",
			"INFERD_ONNXRUNTIME_LIBRARY=/opt/libonnxruntime.so",
			"INFERD_UNRELATED=1",
		},
		want: []string{
			`c.toml:2: log.level: invalid value "loud": want one of debug, info, warn, error`,
			`c.toml:4: server.listen: wrong type: want string, got integer`,
			`c.toml:5: server.bogus: unknown key`,
			`c.toml:7: engine.intra_op_threads: invalid value -3: must be at least 0`,
			`env INFERD_SERVER_LISTN: unknown key (did you mean INFERD_SERVER_LISTEN?)`,
			`env INFERD_SCHEDULER_DEFAULT_INSTANCES: scheduler.default_instances: invalid value "many": want an integer that fits 64 bits`,
			`env INFERD_LOG_FORMAT: log.format: invalid value "yaml": want one of text, json`,
		},
		is: []error{ErrUnknownKey, ErrType, ErrInvalid},
	}, {
		name: "env problems of each kind",
		env: []string{
			"INFERD_SERVER_READ_TIMEOUT=10",
			"INFERD_SERVER_MAX_REQUEST_BYTES=1e6",
			"INFERD_SERVER_LISTEN=",
			"INFERD_ENGINE_THREADS=2",
		},
		want: []string{
			`env INFERD_SERVER_READ_TIMEOUT: server.read_timeout: invalid value "10": want a duration such as "30s" or "1m30s"`,
			`env INFERD_SERVER_MAX_REQUEST_BYTES: server.max_request_bytes: invalid value "1e6": want an integer that fits 64 bits`,
			`env INFERD_ENGINE_THREADS: unknown key`,
			`env INFERD_SERVER_LISTEN: server.listen: invalid value "": want host:port such as "127.0.0.1:8080" or ":8080": missing port in address`,
		},
	}, {
		name: "syntax error",
		doc:  "[server]\nlisten = \"127.0.0.1:1\"\nmax_request_bytes = = 3\n",
		want: []string{`c.toml:3: syntax error: unexpected character U+003D '=' at start of value`},
		is:   []error{ErrSyntax},
	}, {
		name: "duplicate key",
		doc:  "[log]\nlevel = \"info\"\n\nlevel = \"debug\"\n",
		want: []string{`c.toml:4: syntax error: key level is already defined`},
		is:   []error{ErrSyntax},
	}, {
		name: "unterminated string",
		doc:  "[server]\nlisten = \"127.0.0.1:1\n",
		want: []string{`c.toml:2: syntax error: basic strings cannot have new lines`},
	}, {
		name: "integer out of range",
		doc:  "engine.intra_op_threads = 9223372036854775808\n",
		want: []string{`c.toml:1: syntax error: decimal number is too large to fit in a 64-bit signed integer`},
	}, {
		name: "array of tables",
		doc:  "[[server]]\nlisten = \"x:1\"\n",
		want: []string{`c.toml:1: server: wrong type: want table, got array of tables`},
		is:   []error{ErrType},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadBytes("c.toml", []byte(tt.doc), tt.env)
			if c != nil {
				t.Errorf("got a config along with problems")
			}
			var ps *Problems
			if !errors.As(err, &ps) {
				t.Fatalf("LoadBytes() error = %v, want *Problems", err)
			}
			got := problemLines(ps.List)
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if err.Error() != strings.Join(tt.want, "\n") {
				t.Errorf("Error() = %q", err.Error())
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(err, %v) = false", target)
				}
			}
		})
	}
}

func TestProblemFields(t *testing.T) {
	_, err := LoadBytes("/etc/inferd/inferd.toml", []byte("\n[log]\nlevel = 3\n"), []string{"INFERD_LOG_FORMAT=x"})
	var ps *Problems
	if !errors.As(err, &ps) || len(ps.List) != 2 {
		t.Fatalf("err = %v", err)
	}
	file, env := ps.List[0], ps.List[1]
	if file.File != "/etc/inferd/inferd.toml" || file.Line != 3 || file.Env != "" || file.Key != "log.level" || !errors.Is(file, ErrType) {
		t.Errorf("file problem = %+v", file)
	}
	if env.File != "" || env.Line != 0 || env.Env != "INFERD_LOG_FORMAT" || env.Key != "log.format" || !errors.Is(env, ErrInvalid) {
		t.Errorf("env problem = %+v", env)
	}
}

func TestKindProblems(t *testing.T) {
	doc := `[server]
debug = "yes"
small = 300
ratio = "x"
peers = [
  "a",
  2,
]
timeout = "-1s"
`
	env := []string{"INFERD_SERVER_DEBUG=maybe", "INFERD_SERVER_SMALL=200", "INFERD_SERVER_RATIO=-1"}
	want := []string{
		`k.toml:2: server.debug: wrong type: want boolean, got string`,
		`k.toml:3: server.small: invalid value 300: out of range for a 8-bit integer`,
		`k.toml:4: server.ratio: wrong type: want float, got string`,
		`k.toml:7: server.peers: wrong type: want array of strings, got integer in the array`,
		`k.toml:9: server.timeout: invalid value "-1s": must be at least "1ms"`,
		`env INFERD_SERVER_DEBUG: server.debug: invalid value "maybe": want true or false`,
		`env INFERD_SERVER_SMALL: server.small: invalid value "200": want an integer that fits 8 bits`,
		`env INFERD_SERVER_RATIO: server.ratio: invalid value -1.0: must be at least 0.0`,
	}
	_, problems := loadKinds(t, "k.toml", doc, env)
	if got := problemLines(problems); !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestKindValuesFromFile(t *testing.T) {
	doc := `[server]
debug = true
workers = 1_000
small = 0x7f
ratio = 2
peers = ["a:1", 'b:2']
timeout = "1.5s"
`
	k, problems := loadKinds(t, "k.toml", doc, nil)
	if len(problems) > 0 {
		t.Fatal(problemLines(problems))
	}
	s := k.Server
	if !s.Debug || s.Workers != 1000 || s.Small != 127 || s.Ratio != 2 || s.Timeout != 1500*time.Millisecond ||
		!slices.Equal(s.Peers, []string{"a:1", "b:2"}) {
		t.Errorf("got %+v", s)
	}
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "inferd.toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, doc string
		env       []string
		repo, lib string
	}{
		{"relative", "models.repository = \"models\"\nengine.onnxruntime_library = \"../lib/libonnxruntime.so\"",
			nil, filepath.Join(dir, "etc", "models"), filepath.Join(dir, "lib", "libonnxruntime.so")},
		{"absolute", "models.repository = \"/srv/models\"", nil, "/srv/models", ""},
		{"default", "", nil, "/var/lib/inferd/models", ""},
		{"env stays as given", "models.repository = \"models\"", []string{"INFERD_MODELS_REPOSITORY=m"}, "m", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tt.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Models.Repository != tt.repo || c.Engine.OnnxRuntimeLibrary != tt.lib {
				t.Errorf("repository = %q, library = %q; want %q, %q", c.Models.Repository, c.Engine.OnnxRuntimeLibrary, tt.repo, tt.lib)
			}
		})
	}
	t.Run("relative config path", func(t *testing.T) {
		c, err := LoadBytes(filepath.Join("configs", "inferd.toml"), []byte(`models.repository = "models"`), nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(cwd, "configs", "models"); c.Models.Repository != want {
			t.Errorf("repository = %q, want %q", c.Models.Repository, want)
		}
	})
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"), nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	var ps *Problems
	if errors.As(err, &ps) {
		t.Errorf("an unreadable file is not a *Problems")
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Server.Listen = "localhost"
	c.Log.Level = "verbose"
	c.Scheduler.DefaultInstances = -1
	err := c.Validate()
	want := []string{
		`server.listen: invalid value "localhost": want host:port such as "127.0.0.1:8080" or ":8080": address localhost: missing port in address`,
		`log.level: invalid value "verbose": want one of debug, info, warn, error`,
		`scheduler.default_instances: invalid value -1: must be at least 1`,
	}
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Validate() = %v, want *Problems", err)
	}
	if got := problemLines(ps.List); !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestKeys(t *testing.T) {
	keys := Keys()
	want := map[string]KeyDoc{
		"server.listen":                   {Key: "server.listen", Env: "INFERD_SERVER_LISTEN", Type: "string", Default: `"127.0.0.1:8080"`, Restart: "server.listen"},
		"server.max_request_bytes":        {Key: "server.max_request_bytes", Env: "INFERD_SERVER_MAX_REQUEST_BYTES", Type: "integer", Default: "67108864"},
		"server.max_body_bytes_in_flight": {Key: "server.max_body_bytes_in_flight", Env: "INFERD_SERVER_MAX_BODY_BYTES_IN_FLIGHT", Type: "integer", Default: "0"},
		"server.idle_timeout":             {Key: "server.idle_timeout", Env: "INFERD_SERVER_IDLE_TIMEOUT", Type: "duration", Default: `"120s"`, Restart: "server.idle_timeout"},
		"engine.intra_op_threads":         {Key: "engine.intra_op_threads", Env: "INFERD_ENGINE_INTRA_OP_THREADS", Type: "integer", Default: "0"},
		"engine.onnxruntime_library":      {Key: "engine.onnxruntime_library", Env: "INFERD_ENGINE_ONNXRUNTIME_LIBRARY", Type: "string", Default: `""`, Restart: "engine.onnxruntime_library"},
		"server.tls.key_file":             {Key: "server.tls.key_file", Env: "INFERD_SERVER_TLS_KEY_FILE", Type: "string", Default: `""`, Restart: "server.tls"},
		"cluster.policy_file":             {Key: "cluster.policy_file", Env: "INFERD_CLUSTER_POLICY_FILE", Type: "string", Default: `""`},
		"cluster.join":                    {Key: "cluster.join", Env: "INFERD_CLUSTER_JOIN", Type: "string list", Default: `[]`, Restart: "cluster"},
		"scheduler.default_instances":     {Key: "scheduler.default_instances", Env: "INFERD_SCHEDULER_DEFAULT_INSTANCES", Type: "integer", Default: "1"},
		"grpc.listen":                     {Key: "grpc.listen", Env: "INFERD_GRPC_LISTEN", Type: "string", Default: `""`, Restart: "grpc"},
		"grpc.keepalive_min_time":         {Key: "grpc.keepalive_min_time", Env: "INFERD_GRPC_KEEPALIVE_MIN_TIME", Type: "duration", Default: `"10s"`, Restart: "grpc"},
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.Env] {
			t.Errorf("env %s used twice", k.Env)
		}
		seen[k.Env] = true
		if k.Doc == "" {
			t.Errorf("%s has no doc tag", k.Key)
		}
		if w, ok := want[k.Key]; ok {
			k.Doc = ""
			if k != w {
				t.Errorf("got %+v, want %+v", k, w)
			}
			delete(want, k.Key)
		}
	}
	for k := range want {
		t.Errorf("key %s missing from Keys()", k)
	}
	if len(keys) != 79 { // 75 + the four cluster.deploy_* keys
		t.Errorf("len(Keys()) = %d, want 79", len(keys))
	}
}

func TestKindKeys(t *testing.T) {
	def := defaultKinds()
	def.Server.Peers = []string{"a", "b"}
	def.Server.Ratio = 0.5
	got := keysOf(schemaOf(reflect.TypeFor[kinds]()), reflect.ValueOf(def))
	want := []string{
		`server.listen INFERD_SERVER_LISTEN string "127.0.0.1:1"`,
		`server.debug INFERD_SERVER_DEBUG boolean false`,
		`server.workers INFERD_SERVER_WORKERS integer 0`,
		`server.small INFERD_SERVER_SMALL integer 0`,
		`server.ratio INFERD_SERVER_RATIO float 0.5`,
		`server.timeout INFERD_SERVER_TIMEOUT duration "1s"`,
		`server.peers INFERD_SERVER_PEERS string list ["a", "b"]`,
		`server.tls.cert_file INFERD_SERVER_TLS_CERT_FILE string ""`,
	}
	var lines []string
	for _, k := range got {
		lines = append(lines, strings.Join([]string{k.Key, k.Env, k.Type, k.Default}, " "))
	}
	if !slices.Equal(lines, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestSchemaRejectsBadStructs(t *testing.T) {
	tests := []struct {
		name string
		typ  reflect.Type
	}{
		{"no toml tag", reflect.TypeFor[struct{ A string }]()},
		{"unsupported type", reflect.TypeFor[struct {
			A map[string]int `toml:"a"`
		}]()},
		{"bad check", reflect.TypeFor[struct {
			A string `toml:"a" check:"min=1"`
		}]()},
		{"bad min", reflect.TypeFor[struct {
			A time.Duration `toml:"a" check:"min=5"`
		}]()},
		{"env collision", reflect.TypeFor[struct {
			A struct {
				B string `toml:"b_c"`
			} `toml:"a"`
			AB struct {
				C string `toml:"c"`
			} `toml:"a_b"`
		}]()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("schemaOf did not panic")
				}
			}()
			schemaOf(tt.typ)
		})
	}
}

// TestDemoConfigDocumentsEveryKey keeps configs/inferd.toml in step with the
// schema: it must load cleanly, set every key, and name each key's env var
// and default in its comments.
func TestDemoConfigDocumentsEveryKey(t *testing.T) {
	path := filepath.Join(testutil.ModuleRoot(t), "configs", "inferd.toml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := Default()
	origins, problems := load(reflect.ValueOf(&c).Elem(), path, data, nil)
	if len(problems) > 0 {
		t.Fatalf("%s does not load:\n%s", path, strings.Join(problemLines(problems), "\n"))
	}
	text := string(data)
	for _, k := range Keys() {
		if _, ok := origins[k.Key]; !ok {
			t.Errorf("%s does not set %s", path, k.Key)
		}
		if !strings.Contains(text, k.Env) {
			t.Errorf("%s does not mention %s", path, k.Env)
		}
		if !strings.Contains(text, "Default "+k.Default) {
			t.Errorf("%s does not document the default of %s as: Default %s", path, k.Key, k.Default)
		}
	}
	if c.Server.Listen != "127.0.0.1:8080" {
		t.Errorf("demo listens on %q, want 127.0.0.1:8080", c.Server.Listen)
	}
	if want := filepath.Join(filepath.Dir(path), "models"); c.Models.Repository != want {
		t.Errorf("demo repository = %q, want %q", c.Models.Repository, want)
	}
}

// [grpc]: off by default, set from the file or the environment, checked with its line.
func TestGRPCSection(t *testing.T) {
	c, err := LoadBytes("c.toml", nil, nil)
	if err != nil || c.GRPC.Listen != "" {
		t.Fatalf("default grpc.listen %q, %v; want off", c.GRPC.Listen, err)
	}
	c, err = LoadBytes("c.toml", []byte("[grpc]\nlisten = \"127.0.0.1:8001\"\n"), []string{"INFERD_GRPC_MAX_CONCURRENT_STREAMS=7"})
	if err != nil || c.GRPC.Listen != "127.0.0.1:8001" || c.GRPC.MaxConcurrentStreams != 7 {
		t.Fatalf("%+v %v", c.GRPC, err)
	}
	_, err = LoadBytes("c.toml", []byte("[server]\nlisten = \"127.0.0.1:9000\"\n[grpc]\nlisten = \"127.0.0.1:9000\"\nmax_message_bytes = 10\nkeepalive_time = \"10ms\"\n"), nil)
	var ps *Problems
	if !errors.As(err, &ps) {
		t.Fatalf("LoadBytes = %v, want *Problems", err)
	}
	want := []string{
		`c.toml:4: grpc.listen: invalid value: "127.0.0.1:9000" is also server.listen or metrics.listen: gRPC needs a port of its own`,
		`c.toml:5: grpc.max_message_bytes: invalid value 10: must be at least 1024`,
		`c.toml:6: grpc.keepalive_time: invalid value "10ms": must be at least "1s"`,
	}
	if got := problemLines(ps.List); !slices.Equal(got, want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Port 0 is a free port of the kernel's choice for each listener: no clash.
	if _, err := LoadBytes("c.toml", []byte("[server]\nlisten = \"127.0.0.1:0\"\n[grpc]\nlisten = \"127.0.0.1:0\"\n"), nil); err != nil {
		t.Errorf("gRPC and HTTP both on port 0: %v", err)
	}
}
