#!/usr/bin/env bash
# Create/refresh the project's virtualenv. Usage: scripts/setup_env.sh [runtime|dev]
# Skips pip when the requirements' hash matches the stamp of the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-runtime}"
venv="${UIF_VENV:-.venv}"
files=(requirements.txt pyproject.toml)
[ "$mode" = dev ] && files+=(requirements-dev.txt)
stamp="$venv/.uif-stamp-$mode"
want=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv $venv"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements ($mode) - first run takes a few minutes"
  reqs=(-r requirements.txt)
  [ "$mode" = dev ] && reqs+=(-r requirements-dev.txt)
  "$venv/bin/pip" install -q "${reqs[@]}"
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e .
  # environment.md: triton (pulled in by torch) segfaults when torch._dynamo loads after
  # TensorFlow in one process; it is only needed for CUDA kernels, so remove it every time.
  "$venv/bin/pip" uninstall -y -q triton >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
  if [ "$mode" = dev ]; then  # dev is a superset: ./run.sh need not install again
    cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1 > "$venv/.uif-stamp-runtime"
  fi
fi
