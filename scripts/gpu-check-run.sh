#!/usr/bin/env bash
# run.sh of the gpu-check bundle (scripts/gpu-bundle.sh, make gpu-bundle): runs the compiled
# e2e/gpu tests on this host, with no Go toolchain, against the bundled inferd binary and ONNX
# Runtime. Arguments go to the test binary (-test.run=Inventory, say).
#
# ORT's CUDA provider needs the NVIDIA driver (libcuda.so.1, libnvidia-ml.so.1) and CUDA 13's
# cudart, cuBLAS, cuBLASLt and cuRAND, and cuDNN 9. Where the dynamic linker does not find them,
# this script looks in CUDA_LIBRARY_PATH (a colon-separated list), the driver's folder
# /usr/local/nvidia/lib64, /usr/local/cuda*/lib64 and the lib folders of Python's nvidia-* wheels
# (nvidia-cublas, nvidia-cudnn-cu13, ...), and adds the folders that hold them to
# LD_LIBRARY_PATH. What is still missing is printed; the tests then say what they could not check.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
sha256sum --check --quiet SHA256SUMS

provider=$here/onnxruntime/libonnxruntime_providers_cuda.so
wanted="libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9"

missing() { # the wanted libraries the dynamic linker cannot find with the current LD_LIBRARY_PATH
  local out
  out=$(ldd "$provider" 2>/dev/null || true)
  for lib in $wanted; do
    case $lib in
      libcudnn*) ldconfig -p 2>/dev/null | grep -q "$lib" || find_in_path "$lib" || echo "$lib" ;;
      *) grep -q "$lib => /" <<<"$out" || echo "$lib" ;;
    esac
  done
}
find_in_path() {
  local d
  IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}"; do [ -n "$d" ] && [ -e "$d/$1" ] && return 0; done
  return 1
}

candidates=()
IFS=: read -ra extra <<<"${CUDA_LIBRARY_PATH:-}"
candidates+=("${extra[@]}")
for d in /usr/local/nvidia/lib64 /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib; do candidates+=("$d"); done
for py in python3 /opt/*/.venv/bin/python3; do
  command -v "$py" >/dev/null 2>&1 || continue
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) || continue
  [ -d "$site/nvidia" ] || continue
  while IFS= read -r d; do candidates+=("$d"); done < <(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u)
done

need=$(missing | xargs)
if [ -n "$need" ]; then
  for d in "${candidates[@]}"; do
    [ -d "$d" ] || continue
    for lib in $need; do
      if [ -e "$d/$lib" ]; then
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        break
      fi
    done
    need=$(missing | xargs)
    [ -z "$need" ] && break
  done
fi
echo "run.sh: LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
if [ -n "$need" ]; then
  echo "run.sh: not found for the CUDA provider: $need (set CUDA_LIBRARY_PATH to their folders); CUDA checks will fail or skip"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv || echo "run.sh: no nvidia-smi"

export INFERD_TEST_BINARY=$here/inferd
export INFERD_ONNXRUNTIME_LIBRARY=$here/onnxruntime/libonnxruntime.so.1
"$here/inferd" version
"$here/inferd" devices || echo "run.sh: inferd devices reports a failed CUDA check (above)"
exec "$here/gpucheck.test" -test.v -test.count=1 -test.timeout=15m "$@"
