#!/usr/bin/env bash
# README command 2: set up on a fresh machine, then lint and run every test, real engines included.
# llama-cpp-python compiles llama.cpp from source on first install (minutes; pip caches the wheel).
# Set BENCH_SKIP_LLAMA_CPP_PYTHON=1 to leave it out (its tests then skip, saying how to install it).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="llamacpp,test"
[ "${BENCH_SKIP_LLAMA_CPP_PYTHON:-0}" = 1 ] || extras="$extras,llamacpp-python"
echo "== installing selfhost-bench[$extras]" >&2
bash scripts/setup.sh "$extras"
export HF_HUB_OFFLINE=1
.venv/bin/ruff check bench tests
.venv/bin/python -m pytest -ra tests "$@"
