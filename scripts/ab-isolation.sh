#!/usr/bin/env bash
# Issue 15's numbers for engine workers: one binary, isolation = "none" (in-process) against
# isolation = "process" (a worker per model version), in one run on this machine:
#   1. MLP 1024→4096→4096→1024 at concurrency 64, binary: throughput ratio (ab-throughput.sh);
#   2. the demo MLP at concurrency 1: p50 difference (ab-latency.sh);
#   3. load time of the three PaddleOCR models (cold start of a daemon serving them, from each
#      "model version ready" log line), alternating;
#   4. the daemon's idle RSS with no model (VmRSS once ready), alternating.
# Needs a prior make bench (its generated MLP) and scripts/fetch-ocr-models.sh build/ocr-models; no root.
#
# usage: ab-isolation.sh [BIN (bin/inferd)] [ROUNDS (6)]
# PARTS (default "1 2 3 4") picks the parts to run, e.g. PARTS="3 4".
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-bin/inferd} rounds=${2:-6}
export INFERD_ONNXRUNTIME_LIBRARY=${INFERD_ONNXRUNTIME_LIBRARY:-$PWD/build/onnxruntime/libonnxruntime.so.1}
none=INFERD_ENGINE_ISOLATION=none process=INFERD_ENGINE_ISOLATION=process
parts=" ${PARTS:-1 2 3 4} "
part() { [[ $parts == *" $1 "* ]]; }

if part 1; then
  echo "== 1. MLP throughput, binary, c=64 (old = none, new = process)"
  OLD_ENV=$none NEW_ENV=$process scripts/ab-throughput.sh "$bin" "$bin" "$rounds"
fi
if part 2; then
  echo "== 2. demo MLP p50, c=1 (old = none, new = process)"
  OLD_ENV=$none NEW_ENV=$process scripts/ab-latency.sh "$bin" "$bin" "$rounds"
fi

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

part 3 && echo "== 3. PaddleOCR load time (ms per model: cls det rec)"
part 3 && for r in $(seq "$rounds"); do
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
part 4 && echo "== 4. idle RSS of the daemon with no model (KiB)"
part 4 && for r in $(seq "$rounds"); do
  for mode in none process; do
    e=$none; [ $mode = process ] && e=$process
    start "$e" "$tmp/empty"
    rss=$(awk '/^VmRSS/ {print $2}' /proc/$pid/status)
    echo "round $r $mode $rss"
    echo "$mode rss=$rss" >>"$tmp/load"
    stop
  done
done
# Medians per mode and measure (load times per model, RSS), and process ÷ none.
if [ -s "$tmp/load" ]; then
  echo "== medians (process ÷ none)"
  tr ' ' '\n' <"$tmp/load" | awk '
    /^(none|process)$/ { mode = $0; next }
    /=/ { split($0, kv, "="); v[kv[1] SUBSEP mode] = v[kv[1] SUBSEP mode] " " kv[2]; keys[kv[1]] = 1 }
    function median(list,   a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    END { for (k in keys) { n = median(v[k SUBSEP "none"]); p = median(v[k SUBSEP "process"]); printf "%s: none %g, process %g, ratio %.3f\n", k, n, p, p / n } }' | sort
fi
