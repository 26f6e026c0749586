#!/usr/bin/env bash
# README command 2: set up on a fresh machine, then lint and run every test, real engines included.
# llama.cpp is compiled once from source into ~/.cache/selfhost-bench on first run (about 5 minutes; cached
# after): that one build gives llama.cpp's native llama-server and llama-cpp-python's libraries
# (scripts/build_llama_cpp.sh), and vLLM for the CPU goes into .venv-vllm (about 1-2.5 minutes, 3.4 GB).
# BENCH_SKIP_LLAMA_CPP_PYTHON=1, BENCH_SKIP_LLAMA_SERVER=1 or BENCH_SKIP_VLLM=1 leaves one out: its
# tests then skip, saying how to install it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="llamacpp,test"  # llama-cpp-python (the llamacpp-python extra) comes from scripts/build_llama_cpp.sh below
echo "== installing selfhost-bench[$extras]" >&2
bash scripts/setup.sh "$extras"
# litellm only for the price map file it bundles (`bench prices import`); its own dependencies are not needed
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps "litellm>=1.50"
# headless Chromium renders the HTML report in a test; skipped with a note where apt-get cannot install it
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== chromium (apt-get, for the report rendering test)" >&2
  { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
    || echo "warning: chromium could not be installed; the report rendering test will skip" >&2
fi
# tcpdump for `bench calibrate --wire` and its tests (the client's error against the captured packets); without
# it a raw socket serves as root, and the tests of the fallback run either way
if ! command -v tcpdump >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "== tcpdump (apt-get, for bench calibrate --wire)" >&2
  { apt-get install -y -q tcpdump || { apt-get update -q && apt-get install -y -q tcpdump; }; } >/dev/null 2>&1 \
    || echo "warning: tcpdump could not be installed; bench calibrate --wire uses a raw socket (root) instead" >&2
fi
# vLLM's environment and the embedding model need nothing from llama.cpp and are mostly unpacking: they are made
# beside the llama.cpp compile (a first run's set-up 8 min 35 s here, 10 min 25 s one after the other), and the
# tests start when both are done.
# The embedding model (all-MiniLM-L6-v2 from PyPI, converted to GGUF with .venv-vllm's torch) is made once and
# cached in ~/.cache/selfhost-bench (about 40 s the first time, nothing after); without it its tests skip.
(
  if [ "${BENCH_SKIP_VLLM:-0}" != 1 ]; then
    echo "== vLLM (CPU) in .venv-vllm (beside the llama.cpp build)" >&2
    bash scripts/setup_vllm.sh >/dev/null
  fi
  echo "== embedding model (all-MiniLM-L6-v2: GGUF for llama.cpp, its folder for vLLM)" >&2
  .venv/bin/python scripts/make_embedding_model.py >/dev/null \
    || echo "warning: the embedding model could not be made; its tests will skip" >&2
) &
beside=$!
# a failed step below ends this script only once the set-up beside it has ended too (no pip left writing)
trap 'kill -0 "$beside" 2>/dev/null && echo "== waiting for the vLLM set-up beside the build to end" >&2; wait' EXIT
skip_server="${BENCH_SKIP_LLAMA_SERVER:-0}"
[ -z "${BENCH_LLAMA_SERVER:-}" ] || skip_server=1  # a llama-server of one's own
if [ "$skip_server" != 1 ] || [ "${BENCH_SKIP_LLAMA_CPP_PYTHON:-0}" != 1 ]; then
  echo "== llama.cpp: llama-server and llama-cpp-python (compiled once, then cached)" >&2
  server="$(BENCH_SKIP_LLAMA_SERVER="$skip_server" bash scripts/build_llama_cpp.sh .venv/bin/python)"
  if [ "$skip_server" != 1 ]; then export BENCH_LLAMA_SERVER="$server"; fi
fi
wait "$beside" || { echo "error: setting up vLLM failed (above); BENCH_SKIP_VLLM=1 leaves it out" >&2; exit 1; }
export HF_HUB_OFFLINE=1
export BENCH_REQUIRE_COMPILED=1  # the set-up above must have built the compiled read: its tests fail, not skip, without it
.venv/bin/ruff check bench tests
.venv/bin/hadolint Dockerfile.gpu  # the GPU image cannot be built here; it is linted
.venv/bin/python -m pytest -ra --durations=15 tests "$@"  # the 15 slowest tests close the log
