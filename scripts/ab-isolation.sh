#!/usr/bin/env bash
# Issue 15's numbers for engine workers: one binary, isolation = "none" (in-process) against
# isolation = "process" (a worker per model version), in one run on this machine:
#   1. MLP 1024→4096→4096→1024 at concurrency 64, binary: throughput ratio (ab-throughput.sh);
#   2. the demo MLP at concurrency 1: p50 difference (ab-latency.sh);
#   3. load time of the three PaddleOCR models (cold start of a daemon serving them, from each
#      "model version ready" log line), alternating;
#   4. the daemon's idle RSS with no model (VmRSS once ready), alternating.
# Needs a prior make bench (its generated MLP) and make ocr-models; no root.
#
# usage: ab-isolation.sh [BIN (bin/inferd)] [ROUNDS (6)]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/inferd} rounds=${2:-6}
export INFERD_ONNXRUNTIME_LIBRARY=${INFERD_ONNXRUNTIME_LIBRARY:-$PWD/build/onnxruntime/libonnxruntime.so.1}
none=INFERD_ENGINE_ISOLATION=none process=INFERD_ENGINE_ISOLATION=process

echo "== 1. MLP throughput, binary, c=64 (old = none, new = process)"
OLD_ENV=$none NEW_ENV=$process scripts/ab-throughput.sh "$bin" "$bin" "$rounds"
echo "== 2. demo MLP p50, c=1 (old = none, new = process)"
OLD_ENV=$none NEW_ENV=$process scripts/ab-latency.sh "$bin" "$bin" "$rounds"

tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir "$tmp/empty"
start() { # ENV REPOSITORY -> starts a server on 127.0.0.1:18184, waits until ready
  printf '[server]\nlisten = "127.0.0.1:18184"\n[models]\nrepository = "%s"\ncontrol = "none"\n[log]\nformat = "json"\n' "$2" >"$tmp/inferd.toml"
  # shellcheck disable=SC2086
  env $1 "$bin" serve --config "$tmp/inferd.toml" >"$tmp/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:18184/v2/health/ready >/dev/null && return
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "not ready: $(tail -3 "$tmp/server.log")" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "== 3. PaddleOCR load time (ms per model: cls det rec)"
for r in $(seq "$rounds"); do
  for mode in none process; do
    e=$none; [ $mode = process ] && e=$process
    start "$e" "$PWD/build/ocr-models"
    times=$(grep '"model version ready"' "$tmp/server.log" | sort |
      sed -E 's/.*"model":"([a-z_]+)".*"load_time":([0-9]+).*/\1 \2/' | sort | awk '{printf "%s=%.0f ", $1, $2/1e6}')
    echo "round $r $mode $times"
    echo "$mode $times" >>"$tmp/load"
    stop
  done
done
echo "== 4. idle RSS of the daemon with no model (KiB)"
for r in $(seq "$rounds"); do
  for mode in none process; do
    e=$none; [ $mode = process ] && e=$process
    start "$e" "$tmp/empty"
    echo "round $r $mode $(awk '/^VmRSS/ {print $2}' /proc/$pid/status)"
    stop
  done
done
