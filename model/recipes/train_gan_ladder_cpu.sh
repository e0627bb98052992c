#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Reproduces the shipped x4 GAN phase on CPU: model/configs/<rung>_x4_gan_cpu.yml for the five x4
# rungs (1000 steps each from their `pre` checkpoints; about 70 min on 2 cores one after another),
# keeps each run's EMA weights, config and log in $DEST/<run>/ (slim_checkpoints.py --into), then
# re-exports the default bundle when DEST is model/checkpoints. An interrupted run resumes.
# Scores: model/recipes/score_checkpoints.py --full --scale 4 model/checkpoints/*_x4_gan_cpu/latest_ema.pth
# Quick check (2 steps per rung, nothing shipped is touched):
#   ITERS=2 PREFIX=dry_ DEST=/tmp/gan_dry model/recipes/train_gan_ladder_cpu.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd); cd "$ROOT"
PY=.venv/bin/python; LSR=.venv/bin/lightsr
ITERS=${ITERS:-1000}; PREFIX=${PREFIX:-}; DEST=${DEST:-model/checkpoints}
[ -f data/patches_p144.npz ] || { echo "data/patches_p144.npz missing: run .venv/bin/lightsr data all" >&2; exit 1; }
for rung in f2srgan light light_pruned mid fast; do
  run="${PREFIX}${rung}_x4_gan_cpu"
  resume=(); [ -f "runs/$run/checkpoints/latest.pth" ] && resume=(--resume)
  $LSR train "model/configs/${rung}_x4_gan_cpu.yml" --device cpu --out "runs/$run" --iters "$ITERS" \
    --workers 0 "${resume[@]}"
  $PY model/recipes/slim_checkpoints.py --into "$DEST" "$run"
done
if [ "$DEST" = model/checkpoints ] && [ -z "$PREFIX" ]; then
  $LSR export --config model/configs/ladder_default.yml --out model/bundles/default
fi
