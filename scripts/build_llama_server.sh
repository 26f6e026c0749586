#!/usr/bin/env bash
# llama.cpp's native `llama-server` (CPU), built by scripts/build_llama_cpp.sh (one llama.cpp build, cached,
# that also gives llama-cpp-python its libraries); prints the binary's path. `bash scripts/build_llama_server.sh
# .venv/bin/python` installs llama-cpp-python there too.
BENCH_SKIP_LLAMA_SERVER=0 exec bash "$(dirname "$0")/build_llama_cpp.sh" "$@"
