#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install selfhost-bench with the extras named in $1 (e.g. "llamacpp,test").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-llamacpp}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: $python is not Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
# the client's hot paths are compiled where they can be (setup.py; optional: the install goes on without them)
if [ "$(uname -s)" = Linux ] && ! .venv/bin/python -c "import bench.clients._stamped" 2>/dev/null; then
  echo "warning: the client's compiled read (bench/clients/_stamped.c) was not built: it needs a C compiler and" \
    "Python's headers (apt-get install build-essential python3-dev). The client reads in Python instead, at more" \
    "CPU per token; pip install -v -e . shows why the build failed" >&2
fi
if ! .venv/bin/python -c "import bench.clients._sse" 2>/dev/null; then
  echo "warning: the client's compiled decode (bench/clients/_sse.c) was not built: it needs a C compiler and" \
    "Python's headers. Finished streams are decoded in Python instead, at more CPU per token" >&2
fi
# matplotlib builds its font cache on first import (10-20 s): part of the install, not of the first report
.venv/bin/python -c "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot" >/dev/null 2>&1 || true
