#!/usr/bin/env bash
# Set up (dev dependencies + Debian's Chromium), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh dev
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[test] installing Debian's chromium for the browser tests"
    apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null
  else
    echo "[test] the browser tests need Debian's Chromium: run" \
      "'sudo apt-get install -y chromium chromium-driver' and try again" >&2
    exit 1
  fi
fi
export TF_CPP_MIN_LOG_LEVEL=2 RAY_USAGE_STATS_ENABLED=0
venv="${UIF_VENV:-.venv}"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest "$@"
