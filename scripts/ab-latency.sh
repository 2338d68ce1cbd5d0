#!/usr/bin/env bash
# Compares two inferd binaries at concurrency 1 on the demo MLP (configs/inferd.toml). Both serve
# at once, each on its own loopback port, and every round measures one then the other, JSON and
# binary, so that a noisy machine's drift hits both alike. Prints each round's p50 and, per
# format, both medians, the median of the paired differences (new − old) and how many rounds the
# new binary won. Needs curl; no root.
#
# usage: ab-latency.sh OLD_BIN NEW_BIN [ROUNDS (10)] [DURATION per measurement (4s)]
# OLD_ENV / NEW_ENV (space-separated VAR=value) are set for one server each: the same binary
# twice compares two settings, e.g. OLD_ENV=INFERD_ENGINE_ISOLATION=none
# NEW_ENV=INFERD_ENGINE_ISOLATION=process scripts/ab-latency.sh bin/inferd bin/inferd
# e.g.   git stash; make build; cp bin/inferd /tmp/old; git stash pop; make build
#        scripts/ab-latency.sh /tmp/old bin/inferd
set -euo pipefail

old=$1 new=$2 rounds=${3:-10} duration=${4:-4s}
cd "$(dirname "$0")/.."
export INFERD_ONNXRUNTIME_LIBRARY=${INFERD_ONNXRUNTIME_LIBRARY:-$PWD/build/onnxruntime/libonnxruntime.so.1}
export INFERD_LOG_LEVEL=warn
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$tmp"' EXIT

ports=(18181 18182)
bins=("$old" "$new")
envs=("${OLD_ENV:-}" "${NEW_ENV:-}")
for i in 0 1; do
  # shellcheck disable=SC2086 # word splitting of the VAR=value list is the point
  env ${envs[$i]} INFERD_SERVER_LISTEN=127.0.0.1:${ports[$i]} "${bins[$i]}" serve --config configs/inferd.toml >"$tmp/server$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:${ports[$i]}/v2/health/ready" >/dev/null && continue 2
    kill -0 "${pids[$i]}" 2>/dev/null || { cat "$tmp/server$i.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "ab-latency: ${bins[$i]} did not become ready" >&2
  exit 1
done

p50() { # p50 in µs of one concurrency-1 step against port $1, format $2
  "$new" perf -u "http://127.0.0.1:$1" -m mlp --concurrency 1 --duration "$duration" --warmup 1s --format "$2" |
    awk '$1 == "1" && NF > 6 { printf "%.1f\n", $6 * 1000 }'
}

for r in $(seq "$rounds"); do
  for f in json binary; do
    a=$(p50 "${ports[0]}" $f)
    b=$(p50 "${ports[1]}" $f)
    echo "round $r $f old ${a} µs new ${b} µs"
    echo "$f $a $b" >>"$tmp/results"
  done
done

for f in json binary; do
  awk -v f=$f '
    function median(v, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
      return n % 2 ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
    }
    $1 == f { n++; o[n] = $2; w[n] = $3; d[n] = $3 - $2; if ($3 < $2) won++ }
    END { printf "%-6s old median %.1f µs, new median %.1f µs, paired difference median %+.1f µs, new faster in %d of %d rounds\n",
          f, median(o, n), median(w, n), median(d, n), won, n }' "$tmp/results"
done
