#!/usr/bin/env bash
# One GPU, at most ~8 minutes, one table: what this repository can only measure on an accelerator.
#   1. full-size streaming FPS: Wan2.1-1.3B geometry, 832x480 (60x104 latents), bf16, rolling window
#      9 / sink 3, streaming VAE decode included (benchmarks/streaming_latency.py --full-size);
#   2. the `gpu` test marker (flash-attn / flex paths that CPU CI skips);
#   3. a few one-GPU smoke training steps of `wan2.1_1gpu_smoke` on random weights at the real geometry
#      (benchmarks/gpu_smoke_checkpoints.py): step time and peak CUDA memory.
# Usage, from the repository root on the lent machine (a venv with the project installed):
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # GPU_CHECK_GEOMETRY=tiny runs the same on CPU
# Each stage has its own time limit; a failed stage is reported in the table and the rest still run.
# Record the printed table in docs/benchmarks.md ("GPU check").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu-check}}
GEOMETRY=${GPU_CHECK_GEOMETRY:-full}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export STREAM_R1_PROGRESS=0 PYTHONUNBUFFERED=1
status() { echo "$1=$2" >> "$OUT/status.env"; }
: > "$OUT/status.env"

if [ "$GEOMETRY" = full ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
  STREAM_ARGS=(--device cuda --full-size --frames 21 60 --modes window --repeats 1)
  TRAIN_OVERRIDES=()
  PYTEST_MARK=gpu
else
  echo "cpu (GPU_CHECK_GEOMETRY=tiny)" | tee "$OUT/gpu.txt"
  STREAM_ARGS=(--frames 12 --modes window --repeats 1 --with-vae)
  TRAIN_OVERRIDES=(--set model.text_len_tokens=16 --set rollout.latent_height=4 --set rollout.latent_width=4
                   --set model.dtype=float32 --set parallel.param_dtype=float32 --set reward.min_pixels=784
                   --set reward.max_pixels=3136 --set train.num_optimizer_steps=1)
  PYTEST_MARK=""  # the marker's tests need CUDA: stage 2 is skipped
fi

echo "== 1/3 streaming FPS"
timeout 240 "$PY" benchmarks/streaming_latency.py "${STREAM_ARGS[@]}" --output "$OUT/streaming.json" \
  > "$OUT/streaming.log" 2>&1; status streaming $?
tail -n 4 "$OUT/streaming.log"

echo "== 2/3 pytest -m gpu"
if [ -n "$PYTEST_MARK" ]; then
  timeout 150 "$PY" -m pytest -q -m "$PYTEST_MARK" tests -p no:cacheprovider > "$OUT/pytest.log" 2>&1
  status pytest $?
else
  echo "skipped: no CUDA (GPU_CHECK_GEOMETRY=tiny)" > "$OUT/pytest.log"; status pytest 0
fi
tail -n 2 "$OUT/pytest.log"

echo "== 3/3 smoke training"
rm -rf "$OUT/ckpt" "$OUT/train"
timeout 180 "$PY" benchmarks/gpu_smoke_checkpoints.py "$OUT/ckpt" --geometry "$GEOMETRY" > "$OUT/ckpt.log" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  timeout 240 "$PY" -m stream_r1 train --config wan2.1_1gpu_smoke --output "$OUT/train" \
    --set "checkpoints.root=$OUT/ckpt" --set "data.prompts=$OUT/ckpt/prompts.txt" "${TRAIN_OVERRIDES[@]}" \
    > "$OUT/train.log" 2>&1
  rc=$?
fi
status train $rc
tail -n 3 "$OUT/train.log" 2>/dev/null

"$PY" benchmarks/gpu_check_table.py "$OUT"
