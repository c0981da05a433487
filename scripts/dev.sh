#!/usr/bin/env bash
# One entry point for a fresh machine: creates or reuses .venv/, installs everything, then runs.
#   bash scripts/dev.sh run    # the main job: the whole Kubeflow pipeline locally on tiny models
#   bash scripts/dev.sh test   # lint, import contracts and the full test suite (sets up podman first)
#   bash scripts/dev.sh containers  # podman + runc + debootstrap and their configuration only
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

containers() {
  # Real OCI images and containers (stream-r1 images build, run-local --runner docker): Debian's podman with
  # runc. Needs root (apt, rootful podman); without it the container tests skip with the reason.
  if [ "$(id -u)" != 0 ]; then
    echo "[dev] not root: skipping podman setup (container tests will say what is missing)"
    return 0
  fi
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "[dev] apt-get install podman runc debootstrap (~1 min)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  fi
  # The default nofile/nproc ulimits exceed a VM's hard limits ("setrlimit RLIMIT_NOFILE: Operation not
  # permitted"), and crun refuses a hybrid cgroup layout: no default ulimits, runc.
  local conf=/etc/containers/containers.conf
  if ! grep -q '^runtime = "runc"' "$conf" 2>/dev/null; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$conf"
    echo "[dev] wrote $conf"
  fi
  # The container tests fail (instead of skipping) when the engine is expected to work.
  export STREAM_R1_REQUIRE_CONTAINERS=1
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  containers) containers ;;
  run)
    setup
    # The main job trains in the shapes world (docs/shapes.md): built on the first run, then reused;
    # `--world tiny` runs the same DAG on random tiny checkpoints instead (seconds, nothing learnt).
    exec "$VENV/bin/stream-r1" pipeline run-local --world shapes "$@"
    ;;
  test)
    setup
    containers
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
