#!/usr/bin/env bash
# Fetches ONNX Runtime 1.29.0's CUDA execution provider (built against CUDA 13, from the npm
# package com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9: libonnxruntime_providers_cuda.so and
# libonnxruntime_providers_shared.so, about 230 MB) into DEST, next to a copy of the CPU build's
# libonnxruntime.so.1 (ORT loads its provider libraries from the directory of the core library).
# Each file is checked against a pinned sha256; nothing happens when the right files are there.
# Needs npm, or ORT_CUDA_TGZ naming the package tarball already downloaded (offline GPU hosts).
# No root. Only `make deps-cuda` runs it: CPU builds never download it.
#
# usage: fetch-ort-cuda.sh DEST CPU_LIB_DIR
set -euo pipefail

PKG=com.github.asus4.onnxruntime.linux-x64-gpu
PKG_VERSION=0.4.9
CUDA_SHA256=56cf3254b118ad837ccc4ed8f6d1b23504bbf7ef91b34cbc0b289cb7f10b3037
SHARED_SHA256=c6a12593396095f5670160e284c35d1700b7708cf3037b7042e2a5200ccae772
DEST=${1:-build/onnxruntime-cuda}
CPU_DIR=${2:-build/onnxruntime}
CORE="$CPU_DIR/libonnxruntime.so.1"

ok() { [ -f "$2" ] && echo "$1  $2" | sha256sum --check --status; }

[ -f "$CORE" ] || { echo "fetch-ort-cuda: $CORE missing: run scripts/fetch-ort.sh (make deps) first" >&2; exit 1; }

if ok "$CUDA_SHA256" "$DEST/libonnxruntime_providers_cuda.so" &&
   ok "$SHARED_SHA256" "$DEST/libonnxruntime_providers_shared.so" &&
   cmp -s "$CORE" "$DEST/libonnxruntime.so.1"; then
  exit 0
fi

[ "$(uname -m)" = x86_64 ] || { echo "fetch-ort-cuda: only linux x86_64 is pinned" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tgz=${ORT_CUDA_TGZ:-}
if [ -z "$tgz" ]; then
  command -v npm >/dev/null || { echo "fetch-ort-cuda: npm is needed (or set ORT_CUDA_TGZ to the package tarball)" >&2; exit 1; }
  echo "fetch-ort-cuda: fetching $PKG@$PKG_VERSION (about 180 MB)" >&2
  (cd "$tmp" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null)
  tgz="$tmp/$PKG-$PKG_VERSION.tgz"
fi
src=package/Plugins/Linux/x64
tar -xzf "$tgz" -C "$tmp" "$src/libonnxruntime_providers_cuda.so" "$src/libonnxruntime_providers_shared.so"
for pair in "$CUDA_SHA256 libonnxruntime_providers_cuda.so" "$SHARED_SHA256 libonnxruntime_providers_shared.so"; do
  set -- $pair
  if ! ok "$1" "$tmp/$src/$2"; then
    echo "fetch-ort-cuda: sha256 mismatch for $2: got $(sha256sum "$tmp/$src/$2" | cut -d' ' -f1), want $1" >&2
    exit 1
  fi
done
mkdir -p "$DEST"
install -m 0644 "$tmp/$src/libonnxruntime_providers_cuda.so" "$tmp/$src/libonnxruntime_providers_shared.so" "$DEST/"
# A copy, not a symlink: ORT looks for the providers next to the path it was loaded from.
install -m 0644 "$CORE" "$DEST/libonnxruntime.so.1"
ln -sf libonnxruntime.so.1 "$DEST/libonnxruntime.so"
echo "fetch-ort-cuda: $DEST (ONNX Runtime 1.29.0 CUDA 13 provider, sha256 ok)" >&2
