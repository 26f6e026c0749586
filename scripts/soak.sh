#!/usr/bin/env bash
# Soak (not part of CI): steady load on the demo model for SOAK_MINUTES (default 30); prints requests sent and
# records written (they must be equal), errors, and the client's and the engine's RSS at start, middle and end.
# Extra arguments go to `bench run`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/soak.py --minutes "${SOAK_MINUTES:-30}" "$@"
