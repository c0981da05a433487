#!/usr/bin/env bash
# One entry point for a fresh machine: creates or reuses .venv/, installs everything, then runs.
#   bash scripts/dev.sh run    # the main job: the whole Kubeflow pipeline locally on tiny models
#   bash scripts/dev.sh test   # lint, import contracts and the full test suite
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "[dev] creating $VENV"
    "$PY" -m venv "$VENV"
  fi
  # Reinstall only when the dependency spec changed (stamp = sha256 of pyproject.toml).
  local stamp="$VENV/.stream-r1-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[dev] installing stream-r1[ops,dev,deepspeed] into $VENV (first run: ~3-4 min)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # DeepSpeed's ops are JIT-built on first use (its CPU shm op, ~1 min, cached in ~/.cache/torch_extensions);
    # DS_BUILD_OPS=0 keeps the install from compiling CUDA kernels this machine cannot build.
    DS_BUILD_OPS=0 "$VENV/bin/python" -m pip install -q -e ".[ops,dev,deepspeed]"
    echo "$want" > "$stamp"
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  run)
    setup
    exec "$VENV/bin/stream-r1" pipeline run-local "$@"
    ;;
  test)
    setup
    export PATH="$VENV/bin:$PATH" STREAM_R1_PROGRESS=0
    echo "[dev] ruff"
    ruff check stream_r1 components pipelines tests benchmarks
    echo "[dev] import contracts"
    lint-imports --no-cache
    echo "[dev] pytest"
    exec python -m pytest "$@"
    ;;
  *)
    echo "usage: bash scripts/dev.sh run|test|setup [args...]" >&2
    exit 2
    ;;
esac
