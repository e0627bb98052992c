#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Trains the default ladder's learned rungs on one CUDA GPU in about 9.5 minutes of wall time,
# eight runs sharing the card in two phases (see model/configs/gpu/*.yml):
#   phase 1 (T1 s): F2SRGAN x4/x2 `pre` (L1)           | fast x4/x2 (L1, runs through both phases)
#   phase 2 (T2 s): F2SRGAN x4/x2 `full` (GAN) from pre | Light x4/x2 distilled (AT) from the pre teachers
# Runs are stopped by wall time; each keeps checkpoints every 500 steps (runs/gpu_*/checkpoints).
# Usage: model/recipes/train_ladder_gpu.sh [OUT_DIR]   (needs data/patches_p144.npz: `lightsr data all`)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd); cd "$ROOT"
OUTDIR=${1:-runs}
T1=${T1:-280}; T2=${T2:-250}
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/model${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p runs "$OUTDIR"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; $PY -c 'import torch;print("torch", torch.__version__)'; } > "$OUTDIR/hardware.txt" 2>&1
launch() { # seconds command config...
  local secs=$1 cmd=$2 cfg=$3 name; name=$(basename "$cfg" .yml)
  timeout --signal=TERM "$secs" $PY -m lightsr.cli "$cmd" "$cfg" --device cuda > "runs/gpu_${name}.log" 2>&1 &
}
launch $T1 train model/configs/gpu/f2srgan_x4_pre.yml; P1=$!
launch $T1 train model/configs/gpu/f2srgan_x2_pre.yml; P2=$!
launch $((T1 + T2 + 10)) train model/configs/gpu/fast_x4_pre.yml
launch $((T1 + T2 + 10)) train model/configs/gpu/fast_x2_pre.yml
wait $P1 $P2
launch $T2 train model/configs/gpu/f2srgan_x4_full.yml
launch $T2 train model/configs/gpu/f2srgan_x2_full.yml
launch $T2 distill model/configs/gpu/light_x4_distill_at.yml
launch $T2 distill model/configs/gpu/light_x2_distill_at.yml
wait
for f in runs/gpu_*.log; do echo "== $f"; grep -v '^\s*$' "$f" | tr '\r' '\n' | grep -E 'val|Error|error|Traceback' | tail -4; done
tar -cf "$OUTDIR/gpu_runs.tar" runs/gpu_*.log runs/gpu_*/config.yml runs/gpu_*/log.jsonl runs/gpu_*/checkpoints/latest.pth "$OUTDIR/hardware.txt" 2>/dev/null
ls -la "$OUTDIR"
