#!/usr/bin/env bash
# Fetches Microsoft's official ONNX Runtime CPU shared library (the one the npm package
# onnxruntime-node ships) into build/onnxruntime/, checks it against a pinned sha256, and does
# nothing when the right file is already there. Needs npm; no root.
set -euo pipefail

ORT_VERSION=1.29.0
ORT_SHA256=89688f5cf51c7e31befbb7b9101bc027799009b18d1baa9a5b1146a72e69538d
DEST=${1:-build/onnxruntime}
LIB="$DEST/libonnxruntime.so.1"

have_ok() { [ -f "$LIB" ] && echo "$ORT_SHA256  $LIB" | sha256sum --check --status; }

if have_ok; then
  exit 0
fi

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) echo "fetch-ort: arm64 is not pinned yet (only the x64 sha256 is known)" >&2; exit 1 ;;
  *) echo "fetch-ort: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

command -v npm >/dev/null || { echo "fetch-ort: npm is needed to fetch ONNX Runtime" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-ort: fetching onnxruntime-node@$ORT_VERSION" >&2
(cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
tar -xzf "$tmp/onnxruntime-node-$ORT_VERSION.tgz" -C "$tmp" "package/bin/napi-v6/linux/$arch/libonnxruntime.so.1"
got=$(sha256sum "$tmp/package/bin/napi-v6/linux/$arch/libonnxruntime.so.1" | cut -d' ' -f1)
if [ "$got" != "$ORT_SHA256" ]; then
  echo "fetch-ort: sha256 mismatch: got $got, want $ORT_SHA256" >&2
  exit 1
fi
mkdir -p "$DEST"
install -m 0644 "$tmp/package/bin/napi-v6/linux/$arch/libonnxruntime.so.1" "$LIB"
ln -sf libonnxruntime.so.1 "$DEST/libonnxruntime.so"
echo "fetch-ort: $LIB (ONNX Runtime $ORT_VERSION, sha256 ok)" >&2
