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
# matplotlib builds its font cache on first import (10-20 s): part of the install, not of the first report
.venv/bin/python -c "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot" >/dev/null 2>&1 || true
