# inferd — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/inferd/inferd/internal/buildinfo.version=$(VERSION) -X github.com/inferd/inferd/internal/buildinfo.revision=$(REVISION)
ORT_DIR := build/onnxruntime
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.1
CONFIG  ?= configs/inferd.toml
LISTEN  ?= 127.0.0.1:8080
# make run serves gRPC here too (GRPC_LISTEN= turns it off); the demo config file leaves it off.
GRPC_LISTEN ?= 127.0.0.1:8001

# Builds and tests use Go 1.27.3, which the go command fetches from the Go module proxy on first
# use (about 76 MB, once per machine): the machines' own Go 1.26.8 has standard-library
# vulnerabilities fixed in later releases (make vulncheck). go.mod still says 1.26.8, so a plain
# `go build` with the machine's Go works too. Override with GOTOOLCHAIN=local.
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN

# Tests find the library through this variable (and fall back to build/onnxruntime/).
export INFERD_ONNXRUNTIME_LIBRARY := $(abspath $(ORT_LIB))
export CGO_ENABLED := 1

.PHONY: all deps build run test test-short vet e2e bench models clean node-server-test bench-swap bench-cluster fuzz vulncheck soak bench-cluster-doc proto
.PHONY: package package-cuda e2e-systemd e2e-hostile
.PHONY: deps-cuda gpu-check gpu-bundle
.PHONY: jaeger bench-tracing

all: build

## deps: fetch ONNX Runtime 1.29.0 (CPU) into build/onnxruntime, checked against its sha256
deps: $(ORT_LIB)

$(ORT_LIB): scripts/fetch-ort.sh
	./scripts/fetch-ort.sh $(ORT_DIR)

## deps-cuda: fetch ONNX Runtime 1.29.0's CUDA 13 execution provider (npm, ~180 MB download, ~230 MB
## on disk) into build/onnxruntime-cuda, beside a copy of the CPU library; only GPU work needs it
ORT_CUDA_DIR := build/onnxruntime-cuda
deps-cuda: deps
	./scripts/fetch-ort-cuda.sh $(ORT_CUDA_DIR) $(ORT_DIR)

## gpu-check: checks on a real NVIDIA GPU (build tag gpu, docs/gpu.md): NVML inventory and telemetry
## against nvidia-smi, a model on CUDA against the CPU, raw ORT on CUDA against inferd, the
## PaddleOCR models served from the GPU against the CPU; skips
## without a GPU, and checks inventory and telemetry only without the CUDA provider. The library
## is build/onnxruntime-cuda's when make deps-cuda ran, else ORT_CUDA_LIB=/path/libonnxruntime.so.1
ORT_CUDA_LIB ?= $(if $(wildcard $(ORT_CUDA_DIR)/libonnxruntime_providers_cuda.so),$(ORT_CUDA_DIR)/libonnxruntime.so.1,$(ORT_LIB))
gpu-check: deps
	./scripts/fetch-ocr-models.sh build/ocr-models
	INFERD_ONNXRUNTIME_LIBRARY=$(abspath $(ORT_CUDA_LIB)) INFERD_TEST_OCR_MODELS=$(abspath build/ocr-models) \
		$(GO) test -count=1 -timeout 20m -tags gpu -v ./e2e/gpu/

## gpu-bundle: make gpu-check as one tarball for a GPU host without Go (docs/gpu.md):
## build/gpu-bundle/inferd-gpu-check.tar.xz; SPLIT=60M also cuts it into pieces
gpu-bundle: deps-cuda
	GO=$(GO) LDFLAGS='$(LDFLAGS)' SPLIT=$(SPLIT) ./scripts/gpu-bundle.sh build/gpu-bundle $(ORT_CUDA_DIR)

## build: build bin/inferd
build: deps
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/inferd ./cmd/inferd

## run: serve the demo model repository (configs/) on 127.0.0.1:8080 (HTTP) and 127.0.0.1:8001 (gRPC), no root, no GPU
run: build
	@echo
	@echo "inferd is starting on http://$(LISTEN) (gRPC on $(if $(GRPC_LISTEN),$(GRPC_LISTEN),nothing)) with the demo models in configs/models."
	@echo "Once it logs \"ready\", in another terminal:"
	@echo
	@echo "  curl -s http://$(LISTEN)/v2/models/mlp/infer -H 'Content-Type: application/json' -d @configs/demo-request.json"
	@echo
	exec env INFERD_SERVER_LISTEN=$(LISTEN) INFERD_GRPC_LISTEN=$(GRPC_LISTEN) ./bin/inferd serve --config $(CONFIG)

## test: vet and run every test with the race detector (real ONNX Runtime on generated models)
test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...

## jaeger: build the pinned Jaeger all-in-one (tools/jaeger, a module of its own) into build/jaeger,
## the collector of the tracing e2e test; the first build compiles a large tree (minutes)
jaeger: build/jaeger

build/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	cd tools/jaeger && $(GO) build -trimpath -o ../../build/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

## bench-tracing: throughput of the benchmark MLP (binary, concurrency 64) with tracing off, on at
## sampling_ratio 1.0 and at 0, alternating in one run (bench/cmd/tracebench, docs/tracing.md)
bench-tracing: build
	$(GO) run ./bench/cmd/tracebench $(BENCH_TRACING_FLAGS)

## e2e: system-level suites (real binary on the PaddleOCR models)
e2e: deps jaeger
	./scripts/fetch-ocr-models.sh build/ocr-models
	$(GO) test -count=1 -timeout 20m -tags e2e -skip '^TestHostileModels$$' ./e2e/...
	$(MAKE) --no-print-directory e2e-hostile
	$(MAKE) node-server-test

## e2e-hostile: hostile models (OOM, SIGFPE, SIGABRT, endless loops, absurd model.toml, escaping
## external data, a symlink to /) dropped into a running daemon under a memory bound (part of make e2e)
e2e-hostile: deps
	$(GO) test -count=1 -timeout 5m -tags e2e -run '^TestHostileModels$$' -v ./e2e/

## bench-swap: p99 latency during model swaps against steady state, and file-to-serving time
bench-swap: deps
	$(GO) test -count=1 -timeout 10m -tags e2e,bench -run TestSwapLatency -v ./e2e/ | grep -E "swap benchmark|^(ok|FAIL|---)"

## bench-cluster: forwarding overhead (p50 through a peer vs served locally) and latency during failovers
bench-cluster: deps
	$(GO) test -count=1 -timeout 10m -tags e2e,bench -run TestClusterBench -v ./e2e/ | grep -E "cluster benchmark|^(ok|FAIL|---)"

## node-server-test: the Node.js baseline server of make bench, against the demo MLP
node-server-test:
	cd bench/node-server && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --silent
	MODEL=$(abspath configs/models/mlp/1/model.onnx) node --test bench/node-server/

## bench: inferd vs raw ONNX Runtime vs a Node.js server on this machine -> docs/benchmarks.md (~21 min)
## (longer: make bench BENCH_DURATION=30s BENCH_REPS=5; more settings: BENCH_FLAGS='...', see go run ./bench/cmd/bench -h)
BENCH_DURATION ?= 8s
BENCH_WARMUP   ?= 2s
BENCH_REPS     ?= 3
BENCH_FLAGS    ?=
bench: build
	$(GO) run ./bench/cmd/bench -duration $(BENCH_DURATION) -warmup $(BENCH_WARMUP) -reps $(BENCH_REPS) $(BENCH_FLAGS)
	$(MAKE) --no-print-directory bench-cluster-doc

## bench-cluster-doc: run the cluster benchmark and append its numbers to docs/benchmarks.md (part of make bench)
bench-cluster-doc: deps
	@mkdir -p build
	$(GO) test -count=1 -timeout 10m -tags e2e,bench -run TestClusterBench -v ./e2e/ >build/bench-cluster.log 2>&1 || { tail -50 build/bench-cluster.log; exit 1; }
	{ echo; echo "## Cluster: forwarding overhead and failover"; echo; \
	  echo "From \`make bench-cluster\` (\`e2e/cluster_bench_test.go\`), run by \`make bench\` right after the runs above: two or three"; \
	  echo "real daemons on 127.0.0.x, the same client for local and forwarded requests."; echo; \
	  grep -h "^cluster benchmark" build/bench-cluster.log | sed 's/^cluster benchmark: /- /'; } >>docs/benchmarks.md

## soak: a 3-node cluster under JSON, binary and gRPC (unary, stream) load through model swaps,
## corrupt models, reloads, SIGKILLs and rolling restarts (default 10 minutes: make soak SOAK_DURATION=3m)
SOAK_DURATION ?= 10m
soak: deps
	@mkdir -p build
	$(GO) test -count=1 -timeout 0 -tags e2e,soak -run TestSoak -v ./e2e/ -args -soak.duration=$(SOAK_DURATION) >build/soak.log 2>&1; \
	  rc=$$?; grep -E "soak_test.go|^(ok|FAIL|---)" build/soak.log; echo "full log: build/soak.log"; exit $$rc

## vulncheck: govulncheck on the code, with the vulnerability database from the Go module proxy
vulncheck:
	./scripts/vulncheck.sh

## fuzz: run every Go fuzz target for FUZZTIME each (default 30s); failures land in testdata/fuzz/
FUZZTIME ?= 30s
fuzz: deps
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

## proto: regenerate the committed gRPC code (kserve/kservepb) from inference.proto with Debian's
## protoc (apt-get install protobuf-compiler) and the protoc-gen-go/protoc-gen-go-grpc of go.mod's tools
proto:
	./scripts/genproto.sh

## models: regenerate the committed demo model repository from internal/testmodels
models:
	$(GO) run ./internal/testmodels/cmd/gendemo configs/models

## package: dist/inferd_<version>-1_amd64.deb and dist/inferd-<version>-1.x86_64.rpm (nfpm; version from git)
package: deps
	GO=$(GO) ./packaging/package.sh

## package-cuda: the optional inferd-cuda packages (ONNX Runtime's CUDA provider, ~230 MB download)
package-cuda: deps
	./scripts/fetch-ort-cuda.sh build/onnxruntime-cuda $(ORT_DIR)
	GO=$(GO) ./packaging/package.sh cuda

## e2e-systemd: the packages in a booted systemd (Debian bookworm under systemd-nspawn), lintian,
## rpm checks; needs root, systemd-container, debootstrap, lintian and rpm (.ci/run installs them)
e2e-systemd: package
	@if [ "$$(id -u)" != 0 ]; then echo "e2e-systemd: skipped: needs root (systemd-nspawn, debootstrap)"; exit 0; fi; \
	./e2e/systemd/mkrootfs.sh build/e2e-systemd/bookworm-rootfs.tar && \
	INFERD_ROOTFS=$(abspath build/e2e-systemd/bookworm-rootfs.tar) \
	INFERD_DEB=$$(ls -t $(abspath dist)/inferd_*_amd64.deb | head -n1) \
	INFERD_RPM=$$(ls -t $(abspath dist)/inferd-[0-9]*.x86_64.rpm | head -n1) \
	$(GO) test -count=1 -timeout 20m -tags e2e_systemd -v ./e2e/systemd/

clean:
	rm -rf bin build dist
