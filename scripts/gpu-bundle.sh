#!/usr/bin/env bash
# Packs `make gpu-check` into one self-contained tarball for a GPU host that has no Go toolchain:
# the inferd binary, the compiled gpu-tagged test binary of e2e/gpu, ONNX Runtime 1.29.0 with its
# CUDA provider (make deps-cuda) and run.sh (scripts/gpu-check-run.sh). On the GPU host:
#
#   tar -xJf inferd-gpu-check.tar.xz && inferd-gpu-check/run.sh
#
# The tarball is xz-compressed (about 180 MiB; the CUDA provider is most of it) and the Go
# binaries are stripped. SPLIT=60M also cuts it into pieces of that size (split's suffixes .part-aa, -ab, ...),
# for links that carry files up to a size; cat them back together in order. A sha256 of the whole
# tarball is written beside it either way.
#
# usage: gpu-bundle.sh OUT_DIR ORT_CUDA_DIR
set -euo pipefail

OUT=${1:-build/gpu-bundle}
CUDA_DIR=${2:-build/onnxruntime-cuda}
GO=${GO:-go}
NAME=inferd-gpu-check

for f in libonnxruntime.so.1 libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so; do
  [ -f "$CUDA_DIR/$f" ] || { echo "gpu-bundle: $CUDA_DIR/$f missing: run make deps-cuda first" >&2; exit 1; }
done

stage=$OUT/$NAME
rm -rf "$stage" "$OUT/$NAME.tar."*
mkdir -p "$stage/onnxruntime"
"$GO" build -trimpath -ldflags "-s -w ${LDFLAGS:-}" -o "$stage/inferd" ./cmd/inferd
"$GO" test -c -tags gpu -trimpath -ldflags "-s -w" -o "$stage/gpucheck.test" ./e2e/gpu
cp "$CUDA_DIR"/libonnxruntime.so.1 "$CUDA_DIR"/libonnxruntime_providers_cuda.so \
  "$CUDA_DIR"/libonnxruntime_providers_shared.so "$stage/onnxruntime/"
install -m 0755 scripts/gpu-check-run.sh "$stage/run.sh"
(cd "$stage" && sha256sum inferd gpucheck.test onnxruntime/* >SHA256SUMS)

tar -C "$OUT" -cf - "$NAME" | xz -T0 -6 >"$OUT/$NAME.tar.xz"
rm -rf "$stage"
(cd "$OUT" && sha256sum "$NAME.tar.xz" >"$NAME.tar.xz.sha256")
if [ -n "${SPLIT:-}" ]; then
  split -b "$SPLIT" "$OUT/$NAME.tar.xz" "$OUT/$NAME.tar.xz.part-"
  rm "$OUT/$NAME.tar.xz"
  ls -l "$OUT"/$NAME.tar.xz.part-* >&2
  echo "gpu-bundle: on the GPU host: cat $NAME.tar.xz.part-* >$NAME.tar.xz && sha256sum -c $NAME.tar.xz.sha256" >&2
else
  ls -l "$OUT/$NAME.tar.xz" >&2
fi
echo "gpu-bundle: then: tar -xJf $NAME.tar.xz && $NAME/run.sh" >&2
