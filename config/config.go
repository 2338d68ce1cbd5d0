// Package config owns inferd's TOML configuration: the schema (the Config
// struct), its documented defaults, INFERD_<SECTION>_<KEY> environment
// overrides, and strict validation that reports every problem at once with
// the file and line it came from.
//
// Everything that is generic about a key is derived by reflection from the
// struct that declares it, so adding a key or a section (a later [server.tls],
// [cluster], [gpu], ...) means adding a struct field with these tags:
//
//	toml:"name"    the TOML key; nested structs are tables ([server.tls]).
//	doc:"..."      one line for operators, shown by Keys (and the CLI).
//	check:"..."    comma-separated rules checked by Validate:
//	                 nonempty        the string (or list) must not be empty
//	                 oneof=a|b|c     the string must be one of these
//	                 min=X           the number or duration must be >= X
//	                                 (X written like the value: 0, 1, 1ms)
//	                 hostport        the string must be host:port with a
//	                                 numeric port (host may be empty)
//	                 optional        an empty string (or list) is valid
//	                                 and skips the rules after it
//	reload:"..."   how a configuration reload treats the key (reload.go):
//	                 restart  a change takes effect only at restart; the
//	                          running value stays and the reload says so.
//	                          On a table: every key in it, reported as
//	                          the table's key.
//	                 live     a key inside a restart table that changes
//	                          live all the same
//	               Without the tag a key changes live (or inherits its
//	               table's tag).
//	path:"file"    the string is a filesystem path; a relative value set in
//	               the config file is resolved against the directory of
//	               that file (so configs/inferd.toml can say
//	               repository = "models"). A relative value from the
//	               environment stays relative to the working directory.
//
// The env var of a key is INFERD_ followed by its dotted key upper-cased with
// dots (and dashes) turned into underscores: server.listen is
// INFERD_SERVER_LISTEN, server.tls.cert_file would be
// INFERD_SERVER_TLS_CERT_FILE. Supported field types are string, bool,
// int/int64 (and the other signed ints), float64, time.Duration (a Go
// duration string such as "30s" in TOML and env) and []string (a TOML array
// of strings; comma-separated in env). An environment variable whose name
// starts with a known table's prefix but names no key (INFERD_SERVER_LISTN)
// is a problem; other INFERD_* variables, such as INFERD_ONNXRUNTIME_LIBRARY
// that the engine reads itself, are ignored. An empty env value is applied as
// is (an empty string, an empty list, or a malformed number).
//
// Loading is strict: unknown keys and tables, wrong TOML types, malformed
// durations, out-of-range integers and values that fail their checks are all
// collected into one *Problems error, so an operator fixes a file in one
// round. Cross-field rules that a tag cannot express belong in crossChecks.
//
// This package reads files and nothing else: it imports no other inferd
// package, keeps no package-level state, and never reads the process
// environment itself (callers pass os.Environ()).
package config

import "time"

// Config is the whole daemon configuration, as read from inferd.toml.
type Config struct {
	Server    Server    `toml:"server"`
	Models    Models    `toml:"models"`
	Log       Log       `toml:"log"`
	Engine    Engine    `toml:"engine"`
	GPU       GPU       `toml:"gpu"`
	Scheduler Scheduler `toml:"scheduler"`
	Metrics   Metrics   `toml:"metrics"`
	GRPC      GRPC      `toml:"grpc" reload:"restart"`
	Limits    Limits    `toml:"limits"`
	Auth      Auth      `toml:"auth" reload:"restart"`
	Cluster   Cluster   `toml:"cluster" reload:"restart"`
	Tracing   Tracing   `toml:"tracing"`
}

// Server configures the HTTP listener. Timeouts map onto net/http.Server;
// there, as here, zero means no limit.
type Server struct {
	Listen          string `toml:"listen" reload:"restart" check:"hostport" doc:"host:port of the HTTP listener (empty host = all interfaces)"`
	MaxRequestBytes int64  `toml:"max_request_bytes" check:"min=1" doc:"largest request body in bytes; larger bodies get 413"`
	// MaxBodyBytesInFlight 0 is derived by the daemon at start: a quarter of the usable memory
	// (cgroup limit or MemTotal), at least max_request_bytes, so that one largest body always
	// fits and request bodies alone cannot take the host's memory. A value under
	// max_request_bytes is allowed: a body that even an empty budget could not hold gets 413
	// naming this key, not a 503 that retrying would never cure.
	MaxBodyBytesInFlight int64         `toml:"max_body_bytes_in_flight" check:"min=0" doc:"request-body bytes all requests may hold at once, reserved as they arrive; a request that would go over gets 503 with Retry-After (413 if it could never fit); 0 = a quarter of the usable memory, at least max_request_bytes"`
	ReadHeaderTimeout    time.Duration `toml:"read_header_timeout" reload:"restart" check:"min=1ms" doc:"time allowed to read request headers"`
	ReadTimeout          time.Duration `toml:"read_timeout" reload:"restart" check:"min=0" doc:"time allowed to read a whole request; 0 = no limit"`
	WriteTimeout         time.Duration `toml:"write_timeout" reload:"restart" check:"min=0" doc:"time allowed to write a response; 0 = no limit"`
	IdleTimeout          time.Duration `toml:"idle_timeout" reload:"restart" check:"min=0" doc:"how long an idle keep-alive connection is kept; 0 = read_timeout"`
	ShutdownTimeout      time.Duration `toml:"shutdown_timeout" check:"min=1ms" doc:"bound on the graceful drain after SIGTERM"`
	MaxHeaderBytes       int           `toml:"max_header_bytes" reload:"restart" check:"min=4096" doc:"largest request header block in bytes; larger headers get 431"`
	MaxConnections       int           `toml:"max_connections" reload:"restart" check:"min=0" doc:"open client connections at most; more wait in the kernel's backlog; 0 = no limit"`
	StateDir             string        `toml:"state_dir" reload:"restart" path:"file" doc:"directory of the node's own state (calibration profiles in profiles/); relative paths are relative to this file's directory; empty = nothing kept: every load calibrates"`
	TLS                  TLS           `toml:"tls" reload:"restart"`
	Dashboard            bool          `toml:"dashboard" doc:"serve the built-in dashboard at / (it needs an infer token where tokens are on)"`
}

// TLS configures HTTPS on the listener and for forwarding to cluster peers. The files are
// re-read when they change, so certificate rotation needs no restart.
type TLS struct {
	CertFile     string `toml:"cert_file" path:"file" doc:"PEM certificate (chain) of this node; set with key_file to serve HTTPS"`
	KeyFile      string `toml:"key_file" path:"file" doc:"PEM private key of cert_file"`
	ClientCAFile string `toml:"client_ca_file" path:"file" doc:"PEM CA bundle that verifies client certificates and cluster peers"`
	ClientAuth   string `toml:"client_auth" check:"oneof=none|request|require" doc:"client certificates: none, request (verified if sent) or require (mutual TLS)"`
}

// GRPC configures the gRPC listener (the Open Inference Protocol's gRPC service, Triton's
// streaming extension and grpc.health.v1; docs/grpc.md). It shares [server.tls], [auth] and
// [limits] with HTTP, and server.max_connections bounds its connections on its own.
type GRPC struct {
	Listen                       string        `toml:"listen" check:"optional,hostport" doc:"host:port of the gRPC listener (Triton's port is 8001); empty = no gRPC"`
	MaxMessageBytes              int           `toml:"max_message_bytes" check:"min=1024" doc:"largest request message in bytes; larger ones get RESOURCE_EXHAUSTED before they are read"`
	MaxConcurrentStreams         int           `toml:"max_concurrent_streams" check:"min=1" doc:"calls (streams) in flight on one connection at most; a client waits for a free one"`
	KeepaliveTime                time.Duration `toml:"keepalive_time" check:"min=1s" doc:"how long a connection may be idle before the server pings it"`
	KeepaliveTimeout             time.Duration `toml:"keepalive_timeout" check:"min=1ms" doc:"how long the server waits for a ping's answer before closing the connection"`
	KeepaliveMinTime             time.Duration `toml:"keepalive_min_time" check:"min=0" doc:"shortest interval at which a client may ping; one that pings more often is sent GOAWAY too_many_pings"`
	KeepalivePermitWithoutStream bool          `toml:"keepalive_permit_without_stream" doc:"let clients ping connections that have no call in flight"`
}

// Limits bound what one inference request may declare; each refusal is a 400 naming the key.
type Limits struct {
	MaxInputs      int   `toml:"max_inputs" check:"min=1" doc:"input tensors per request at most"`
	MaxRank        int   `toml:"max_rank" check:"min=1" doc:"dimensions per tensor at most"`
	MaxElements    int64 `toml:"max_elements" check:"min=1" doc:"elements per tensor (product of its shape) at most"`
	MaxStringBytes int   `toml:"max_string_bytes" check:"min=1" doc:"bytes per BYTES element at most"`
	MaxJSONDepth   int   `toml:"max_json_depth" check:"min=2" doc:"nesting of JSON arrays and objects at most (64 at most)"`
}

// Cluster configures gossip membership with other inferd nodes, routing between them and
// rollouts (docs/cluster.md).
type Cluster struct {
	Enabled       bool          `toml:"enabled" doc:"join other inferd nodes into one service (gossip, forwarding, failover, rollouts)"`
	Name          string        `toml:"name" doc:"stable node name, unique in the cluster; empty = the host name"`
	Bind          string        `toml:"bind" check:"hostport" doc:"host:port (IP literal) gossip listens on, TCP and UDP"`
	Advertise     string        `toml:"advertise" check:"optional,hostport" doc:"host:port peers reach gossip at; empty = derived from bind"`
	HTTPAdvertise string        `toml:"http_advertise" check:"optional,hostport" doc:"host:port peers send forwarded requests to; empty = server.listen, with the advertise host when it listens on all interfaces"`
	Join          []string      `toml:"join" doc:"seed nodes' gossip addresses (host:port); retried until they are members"`
	SecretKeyFile string        `toml:"secret_key_file" path:"file" doc:"AES key file (base64, mode 0600; inferd keygen writes one); set = encrypted gossip, nodes without it cannot join; empty = /etc/inferd/cluster.key if it exists"`
	Label         string        `toml:"label" doc:"cluster label stamped on every gossip packet; clusters sharing a network stay apart"`
	AllowedCIDRs  []string      `toml:"allowed_cidrs" doc:"networks gossip is accepted from; empty = any"`
	PolicyFile    string        `toml:"policy_file" reload:"live" path:"file" doc:"routing.toml with traffic splits and rollouts; empty = none (every node serving a model takes a share, local first)"`
	PerTryTimeout time.Duration `toml:"per_try_timeout" check:"min=1ms" doc:"how long one try of a forwarded request may wait for response headers before another node is tried"`
	MaxRetries    int           `toml:"max_retries" check:"min=0" doc:"other nodes tried after a failed try, within the request's deadline and the retry budget"`
	LeaveTimeout  time.Duration `toml:"leave_timeout" check:"min=0" doc:"on shutdown, how long to advertise draining before the listener closes, so peers stop routing here first"`
	// Deploy (inferd deploy, docs/cluster.md) stores versions under server.state_dir/deploy.
	DeployMaxBytes     int64 `toml:"deploy_max_bytes" check:"min=1" doc:"largest model version inferd deploy accepts, in bytes (all its files)"`
	DeployReserveBytes int64 `toml:"deploy_reserve_bytes" check:"min=0" doc:"free bytes a deploy leaves on the state directory's disk; a node refuses a version that would go below"`
	DeployBandwidth    int64 `toml:"deploy_bandwidth" check:"min=0" doc:"bytes per second this node sends to, and receives from, peers for deployments, each way; 0 = no limit"`
	DeployTransfers    int   `toml:"deploy_transfers" check:"min=1" doc:"chunks this node fetches from peers at once"`
}

// Auth configures bearer-token access control.
type Auth struct {
	TokensFile    string `toml:"tokens_file" path:"file" doc:"file of \"<scope> <token>\" lines (scope infer or admin); empty = no tokens needed"`
	ProtectProbes bool   `toml:"protect_probes" doc:"make /health, /ready and /v2/health/* need an infer token too"`
	MetricsScope  string `toml:"metrics_scope" check:"oneof=open|infer|admin" doc:"token scope /metrics needs: open, infer or admin"`
}

// Models locates the model repository.
type Models struct {
	Repository   string        `toml:"repository" path:"file" check:"nonempty" doc:"model repository directory; relative paths are relative to this file's directory"`
	Control      string        `toml:"control" check:"oneof=watch|explicit|none" doc:"watch: follow file changes; explicit: load/unload through the repository API; none: keep what loaded at start"`
	Poll         bool          `toml:"poll" doc:"poll the repository instead of using inotify (for NFS and other filesystems without it)"`
	PollInterval time.Duration `toml:"poll_interval" check:"min=100ms" doc:"how often to poll when polling (also the fallback when inotify is unavailable)"`
	QuietPeriod  time.Duration `toml:"quiet_period" check:"min=0" doc:"a changed model loads only after its files have been unchanged this long"`
	ReadyMarker  string        `toml:"ready_marker" doc:"if set, a version directory loads only once a file of this name exists in it"`
}

// Log configures the daemon's slog output.
type Log struct {
	Level  string `toml:"level" check:"oneof=debug|info|warn|error" doc:"least severe level logged: debug, info, warn or error"`
	Format string `toml:"format" reload:"restart" check:"oneof=text|json" doc:"log line format: text or json"`
}

// Engine configures ONNX Runtime.
type Engine struct {
	OnnxRuntimeLibrary string `toml:"onnxruntime_library" reload:"restart" path:"file" doc:"path of libonnxruntime.so; empty = search env INFERD_ONNXRUNTIME_LIBRARY, /usr/lib/inferd/, next to the binary, build/onnxruntime/"`
	IntraOpThreads     int    `toml:"intra_op_threads" check:"min=0" doc:"threads inside one operator, per ORT session; 0 = usable cores / instances on the CPU, 1 on a GPU"`
	InterOpThreads     int    `toml:"inter_op_threads" check:"min=0" doc:"threads across independent operators, per ORT session; 0 = ORT's default"`
	Isolation          string `toml:"isolation" reload:"restart" check:"oneof=process|none" doc:"where model versions run: process = each in a worker process of its own, so a model that crashes, runs out of memory or never finishes takes down its worker, never the daemon; none = inside the daemon (no bounds)"`
	// MaxMemoryBytes, LoadTimeout and MaxRunTime are the defaults of model.toml's [limits].
	MaxMemoryBytes int64         `toml:"max_memory_bytes" check:"min=0" doc:"memory one model version's worker may allocate, in bytes (model.toml [limits] max_memory_bytes overrides it); beyond it the allocation fails or the worker dies, not the daemon; 0 = the usable memory at start less 256 MiB for the daemon"`
	LoadTimeout    time.Duration `toml:"load_timeout" check:"min=1ms" doc:"longest a model version may take to load and warm up ([limits] load_timeout overrides it); beyond it the load is stopped, its worker killed, and the version is UNAVAILABLE"`
	MaxRunTime     time.Duration `toml:"max_run_time" check:"min=0" doc:"longest one run (a batch) may take ([limits] max_run_time overrides it); beyond it the run is stopped and its requests fail with 500; 0 = no limit"`
}

// GPU configures NVIDIA GPU discovery (NVML) and the placement of models onto GPUs
// (docs/gpu.md).
type GPU struct {
	MemoryFraction   float64       `toml:"memory_fraction" check:"min=0.05" doc:"share (0.05 to 1) of a GPU's free memory, the lesser of NVML's free and total less what inferd holds, that a model version may be placed into"`
	InitRetry        time.Duration `toml:"init_retry" reload:"restart" check:"min=0" doc:"how long to retry NVML at start while the NVIDIA driver is still loading, before running CPU-only; 0 = try once"`
	TelemetryTimeout time.Duration `toml:"telemetry_timeout" reload:"restart" check:"min=1ms" doc:"longest a /metrics scrape or a GPU health check waits for NVML"`
}

// Scheduler holds the defaults for models whose model.toml does not say.
type Scheduler struct {
	DefaultInstances    int           `toml:"default_instances" check:"min=1" doc:"instances (ORT sessions) per model version when model.toml says nothing"`
	DefaultMaxBatchSize int           `toml:"default_max_batch_size" check:"min=0" doc:"largest dynamic batch in rows when model.toml says nothing, for models whose every input and output has a variable first dimension (others are not batched); 0 = no batching unless model.toml asks"`
	MaxQueueDelay       time.Duration `toml:"max_queue_delay" check:"min=0" doc:"how long the oldest request of a forming batch may wait for others to join"`
	AdaptiveDelay       bool          `toml:"adaptive_delay" doc:"dispatch a forming batch before max_queue_delay once it holds as many rows as the recent load predicts"`
	MaxQueueSize        int           `toml:"max_queue_size" check:"min=1" doc:"requests that may wait per model version; more are refused with 503 and Retry-After"`
	DefaultTimeout      time.Duration `toml:"default_timeout" check:"min=0" doc:"longest a request may wait in the queue before it fails with 503; 0 = no limit"`
	CalibrationTime     time.Duration `toml:"calibration_time" check:"min=0" doc:"how long the calibration of a model version at load may run (model.toml [tuning] calibration_time overrides it); it measures instances x intra-op threads x batch sizes in the version's worker and chooses the fastest; 0 = no calibration: every model runs as its model.toml says"`
}

// Metrics configures the Prometheus endpoint, /metrics.
type Metrics struct {
	Listen string `toml:"listen" reload:"restart" check:"optional,hostport" doc:"host:port of a separate listener for /metrics; empty = serve /metrics on server.listen"`
}

// Default returns the configuration used for every key that neither the file
// nor the environment sets.
func Default() Config {
	return Config{
		Server: Server{
			// Loopback only: exposing the daemon on the LAN is a decision
			// the operator makes in the file.
			Listen:            "127.0.0.1:8080",
			MaxRequestBytes:   64 << 20,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			// Well under systemd's default TimeoutStopSec of 90s.
			ShutdownTimeout: 30 * time.Second,
			// KServe requests carry a handful of short headers; 64 KiB leaves room for
			// proxies' additions while bounding what a client can make the server hold.
			MaxHeaderBytes: 64 << 10,
			MaxConnections: 4096,
			TLS:            TLS{ClientAuth: "none"},
			Dashboard:      true,
		},
		Models: Models{
			Repository:   "/var/lib/inferd/models",
			Control:      "watch",
			PollInterval: 10 * time.Second,
			QuietPeriod:  2 * time.Second,
		},
		Log: Log{Level: "info", Format: "text"},
		Engine: Engine{
			OnnxRuntimeLibrary: "",
			IntraOpThreads:     0,
			InterOpThreads:     1,
			Isolation:          "process",
			// A cold load of a big model (PaddleOCR's detector) takes a few seconds here; a
			// minute is a hang, not a slow disk.
			LoadTimeout: 60 * time.Second,
			// Long enough for any one batch of the models inferd is built for; a run past it is
			// a graph that loops on its input, and it holds a core and its queue.
			MaxRunTime: 60 * time.Second,
		},
		GPU: GPU{
			// A tenth of free memory stays free: CUDA's own context, cuDNN workspaces and an
			// estimate that errs low must not push a GPU into out-of-memory.
			MemoryFraction: 0.9,
			// Long enough for a driver that loads late in boot; a node without a driver
			// settles at once whatever this says.
			InitRetry:        30 * time.Second,
			TelemetryTimeout: 2 * time.Second,
		},
		Scheduler: Scheduler{
			DefaultInstances: 1,
			// Batching by default where every input and output has a variable first
			// dimension: the tuner keeps batches as small as the load allows.
			DefaultMaxBatchSize: 64,
			// 2 ms lets a burst of concurrent clients fill a batch while adding little to the
			// latency of a lone request.
			MaxQueueDelay:  2 * time.Millisecond,
			AdaptiveDelay:  true,
			MaxQueueSize:   1024,
			DefaultTimeout: 0,
			// Enough for a few runs of each candidate of a model of tens of milliseconds a
			// batch; a restart of the same file reuses the profile kept in server.state_dir.
			CalibrationTime: 3 * time.Second,
		},
		GRPC: GRPC{
			// Off unless configured: the packaged configuration turns it on at 127.0.0.1:8001.
			Listen:               "",
			MaxMessageBytes:      64 << 20, // as server.max_request_bytes
			MaxConcurrentStreams: 128,
			// gRPC's own defaults for server pings; clients may ping every 10s (gRPC's
			// default minimum of 5 minutes cuts off clients configured for 10s keepalives).
			KeepaliveTime:                2 * time.Hour,
			KeepaliveTimeout:             20 * time.Second,
			KeepaliveMinTime:             10 * time.Second,
			KeepalivePermitWithoutStream: true,
		},
		Limits: Limits{
			MaxInputs:      64,
			MaxRank:        16,
			MaxElements:    64 << 20,
			MaxStringBytes: 16 << 20,
			MaxJSONDepth:   32,
		},
		Auth: Auth{MetricsScope: "open"},
		Cluster: Cluster{
			Bind:          "0.0.0.0:7946",
			PerTryTimeout: 5 * time.Second,
			MaxRetries:    2,
			// A few gossip rounds (200ms each) plus a probe interval: peers have heard
			// "draining" before the listener stops taking requests.
			LeaveTimeout:       2 * time.Second,
			DeployMaxBytes:     16 << 30,
			DeployReserveBytes: 1 << 30,
			DeployTransfers:    4,
		},
		Tracing: defaultTracing(),
	}
}
