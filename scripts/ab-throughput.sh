#!/usr/bin/env bash
# Compares two inferd binaries' throughput on make bench's MLP 1024→4096→4096→1024 (batching on,
# binary tensors, concurrency 64): the question "did this change cost throughput?" asked on one
# machine, where make bench's efficiency figure also moves with the CPU (its raw ceiling is the
# machine's GEMM speed). The servers run one at a time (each saturates the cores), alternating
# old, new, old, new... so that drift hits both alike. Prints each round's rows/s, both medians
# and the median of the per-round ratios new ÷ old. Needs curl and a prior make bench (for
# build/bench/servers/mlp-batched); no root.
#
# usage: ab-throughput.sh OLD_BIN NEW_BIN [ROUNDS (6)] [DURATION per measurement (8s)]
# OLD_ENV / NEW_ENV (space-separated VAR=value) are set for one server each: the same binary
# twice compares two settings (see ab-latency.sh).
# e.g.   git worktree add /tmp/base <commit> && (cd /tmp/base && go build -o /tmp/old ./cmd/inferd)
#        scripts/ab-throughput.sh /tmp/old bin/inferd
set -euo pipefail

old=$1 new=$2 rounds=${3:-6} duration=${4:-8s}
cd "$(dirname "$0")/.."
export INFERD_ONNXRUNTIME_LIBRARY=${INFERD_ONNXRUNTIME_LIBRARY:-$PWD/build/onnxruntime/libonnxruntime.so.1}
export INFERD_LOG_LEVEL=warn
server=$PWD/build/bench/servers/mlp-batched
[ -d "$server/models" ] || { echo "no $server/models: run make bench first" >&2; exit 1; }
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
printf '[server]\nlisten = "127.0.0.1:18183"\n[models]\nrepository = "%s/models"\n' "$server" >"$tmp/inferd.toml"

measure() { # BIN ENV -> rows/s
  # shellcheck disable=SC2086 # word splitting of the VAR=value list is the point
  env $2 "$1" serve --config "$tmp/inferd.toml" >"$tmp/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    curl -sf http://127.0.0.1:18183/v2/health/ready >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
    sleep 0.1
  done
  "$new" perf -u http://127.0.0.1:18183 -m mlp --format binary --concurrency 64 --duration "$duration" \
    --json "$tmp/perf.json" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  grep -o '"rows_per_sec": *[0-9.]*' "$tmp/perf.json" | head -1 | cut -d: -f2 | tr -d ' '
}

olds=() news=() ratios=()
for r in $(seq "$rounds"); do
  o=$(measure "$old" "${OLD_ENV:-}"); n=$(measure "$new" "${NEW_ENV:-}")
  olds+=("$o"); news+=("$n"); ratios+=("$(echo "$n / $o" | bc -l)")
  printf 'round %d: old %.1f rows/s, new %.1f rows/s, new ÷ old %.3f\n' "$r" "$o" "$n" "${ratios[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf 'median: old %.1f rows/s, new %.1f rows/s; median of the ratios new ÷ old: %.3f\n' \
  "$(median "${olds[@]}")" "$(median "${news[@]}")" "$(median "${ratios[@]}")"
