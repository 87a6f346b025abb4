#!/usr/bin/env bash
# Set up (first run only) and start the UIF Explorer app on http://127.0.0.1:${UIF_PORT:-8501}
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh runtime
export TF_CPP_MIN_LOG_LEVEL=2 RAY_USAGE_STATS_ENABLED=0
exec "${UIF_VENV:-.venv}/bin/python" -m streamlit run app.py \
  --server.headless=true --server.address=127.0.0.1 --server.port="${UIF_PORT:-8501}" \
  --server.fileWatcherType=none --browser.gatherUsageStats=false "$@"
