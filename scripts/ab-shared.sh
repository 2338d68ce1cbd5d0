#!/usr/bin/env bash
# Compares two inferd binaries on make bench's "both models at once" server
# (build/bench/servers/shared: the MLP and PaddleOCR's classifier with the calibration profiles
# that make bench kept): each round serves it with one binary and loads both models at once,
# binary tensors, concurrency 64 each, then the other binary; prints each round's rows/s per
# model. Both binaries read the same profiles, so a difference is the code's, not calibration's.
# Needs curl and a prior make bench; no root.
#
# usage: ab-shared.sh OLD_BIN NEW_BIN [ROUNDS (2)] [DURATION per measurement (8s)]
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2") rounds=${3:-2} dur=${4:-8s}
src=build/bench/servers/shared
[ -d "$src" ] || { echo "ab-shared: $src is missing: run make bench first" >&2; exit 1; }
lib=$(pwd)/build/onnxruntime/libonnxruntime.so.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
one() { # BIN LABEL
  rm -rf "$work/srv" && cp -r "$src" "$work/srv"
  sed -i 's/^listen = .*/listen = "127.0.0.1:18800"/' "$work/srv/inferd.toml"
  (cd "$work/srv" && INFERD_ONNXRUNTIME_LIBRARY=$lib exec "$1" serve --config inferd.toml >"$work/log-$2" 2>&1) &
  local srv=$!
  for _ in $(seq 240); do curl -sf 127.0.0.1:18800/v2/health/ready >/dev/null && break; sleep 0.5; done
  "$1" perf -u http://127.0.0.1:18800 -m mlp --shape input=1,1024 --format binary --concurrency 64 --duration "$dur" --warmup 2s >"$work/mlp" 2>&1 &
  local a=$!
  "$1" perf -u http://127.0.0.1:18800 -m ocr_cls --shape x=1,3,48,192 --format binary --concurrency 64 --duration "$dur" --warmup 2s >"$work/ocr" 2>&1 &
  local b=$!
  wait $a $b
  echo "$2: mlp $(tail -n1 "$work/mlp" | awk '{print $5}') rows/s, ocr_cls $(tail -n1 "$work/ocr" | awk '{print $5}') rows/s"
  kill $srv; wait $srv 2>/dev/null || true
}
for r in $(seq "$rounds"); do
  one "$old" "round $r old"
  one "$new" "round $r new"
done
