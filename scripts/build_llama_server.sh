#!/usr/bin/env bash
# Build llama.cpp's native `llama-server` (CPU) from the llama.cpp source that the llama-cpp-python
# sdist on PyPI vendors, into a cache folder; print the binary's path. Skips the build when the
# binary is already there. About 5 minutes on 2 cores. Labs with CUDA use their own build instead:
# `bench run --llama-server /path/to/llama-server --gpu-layers 99`.
set -euo pipefail
version="${LLAMA_CPP_PYTHON_SDIST_VERSION:-0.3.36}"
cache="${BENCH_CACHE:-$HOME/.cache/selfhost-bench}/llama-server-$version"
binary="$cache/build/bin/llama-server"
if [ -x "$binary" ]; then echo "$binary"; exit 0; fi
command -v cmake >/dev/null || { echo "error: cmake is needed (apt-get install cmake)" >&2; exit 2; }
rm -rf "$cache" && mkdir -p "$cache"
python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
  "llama-cpp-python==$version" -d "$cache/sdist" >&2
tar -xzf "$cache"/sdist/llama_cpp_python-"$version".tar.gz -C "$cache"
src="$cache/llama_cpp_python-$version/vendor/llama.cpp"
echo "== building llama-server from $src (minutes)" >&2
cmake -S "$src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >"$cache/cmake.log" 2>&1 \
  || { tail -20 "$cache/cmake.log" >&2; exit 1; }
cmake --build "$cache/build" --target llama-server -j"$(nproc)" >"$cache/build.log" 2>&1 \
  || { tail -30 "$cache/build.log" >&2; exit 1; }
rm -rf "$cache/sdist" "$cache/llama_cpp_python-$version"
echo "$binary"
