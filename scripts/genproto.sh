#!/bin/sh
# Regenerates kserve/kservepb's Go code from inference.proto (make proto). protoc comes from the
# system (Debian: protobuf-compiler); the two Go plugins are the versions pinned in go.mod's tool
# directive, so the output depends only on the protoc version, which the generated files name.
#   genproto.sh [OUTDIR]   write into OUTDIR instead of kserve/kservepb (the staleness test does)
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=${1:-kserve/kservepb}
command -v protoc >/dev/null || { echo "genproto.sh: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }
gen_go=$($GO tool -n protoc-gen-go)
gen_grpc=$($GO tool -n protoc-gen-go-grpc)
mkdir -p "$out"
protoc -I kserve/kservepb \
  --plugin=protoc-gen-go="$gen_go" --plugin=protoc-gen-go-grpc="$gen_grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  kserve/kservepb/inference.proto
