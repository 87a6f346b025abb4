#!/usr/bin/env bash
# Set up (first run only) and start the UIF Explorer app on http://127.0.0.1:${UIF_PORT:-8501}
#   ./run.sh --trust-pickle   also accept uploads of whole pickled nn.Modules (runs their code:
#                             only for files you trust; see docs/security.md)
# Other arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")"
args=()
for arg in "$@"; do
  if [[ "$arg" == "--trust-pickle" ]]; then export UIF_TRUST_PICKLE=1; else args+=("$arg"); fi
done
scripts/setup_env.sh runtime
export TF_CPP_MIN_LOG_LEVEL=2 RAY_USAGE_STATS_ENABLED=0
exec "${UIF_VENV:-.venv}/bin/python" -m streamlit run app.py \
  --server.headless=true --server.address=127.0.0.1 --server.port="${UIF_PORT:-8501}" \
  --server.fileWatcherType=none --browser.gatherUsageStats=false \
  --server.maxUploadSize="${UIF_MAX_UPLOAD_MB:-500}" ${args[@]+"${args[@]}"}
