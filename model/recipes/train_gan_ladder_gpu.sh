#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The perceptual (GAN) ladder on one CUDA GPU in about 9 minutes of wall time: thirteen runs
# share the card in two phases (configs: model/configs/gpu/*_{pre_warm,gan,pre}.yml).
#   phase 1 (T1 s): F2SRGAN x4/x2 teacher `pre`, warm-started from the Light `pre` checkpoints
#   phase 2 (T2 s): F2SRGAN x4/x2 GAN | Light x4/x2 distilled (AT) from the phase-1 teacher + GAN
#   mid x4/x2     : `pre` from scratch for T1 + T2/2, then GAN for the rest
#   both phases   : light-pruned x4/x2 GAN | fast x4/x2 GAN (+ two other GAN weights for fast x4)
# Every run stops itself cleanly after its minutes (--max-minutes, checkpoint saved); `timeout`
# is only the backstop. The EMA weights, configs and logs are packed (slim_checkpoints.py) into
# OUT_DIR/gan_ladder_x{4,2}.tar: a few MB, what a GPU machine hands back.
# Usage: model/recipes/train_gan_ladder_gpu.sh [OUT_DIR]   (needs data/patches_p144.npz)
#        T1=10 T2=20 DEV=cpu PYTHON=.venv/bin/python model/recipes/train_gan_ladder_gpu.sh /tmp/dry
#        (2 min on CPU) checks that every config loads and the phases chain.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd); cd "$ROOT"
OUTDIR=${1:-runs}
T1=${T1:-210}; T2=${T2:-260}
PY=${PYTHON:-python3}
DEV=${DEV:-cuda}
export PYTHONPATH="$ROOT/model${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p runs "$OUTDIR"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  $PY -c 'import torch;print("torch", torch.__version__)'; nproc; } > "$OUTDIR/hardware.txt" 2>&1
run() { # seconds command config [run-name-suffix [extra args...]]   (foreground)
  local secs=$1 cmd=$2 cfg=$C/$3.yml suffix=${4:-} name; name=gpu_$3$suffix
  shift 3; [ $# -gt 0 ] && shift
  timeout --signal=TERM $((secs + 60)) $PY -m lightsr.cli "$cmd" "$cfg" --device "$DEV" --threads 1 \
    --out "runs/$name" --max-minutes "$(awk "BEGIN{print $secs / 60}")" "$@" > "runs/$name.log" 2>&1
  echo "$(date -u +%T) $name: exit $?" >> "$OUTDIR/progress.txt"
}
after() { # flag: wait until a chain has touched it
  while [ ! -e "runs/$1.done" ]; do sleep 2; done
}
C=model/configs/gpu
rm -f runs/*.done
ALL=$((T1 + T2 + 15)); HALF=$((T2 / 2))
for s in 4 2; do
  ( run $T1 train f2srgan_x${s}_pre_warm; touch runs/teacher_x$s.done; run $T2 train f2srgan_x${s}_gan ) &
  ( after teacher_x$s; run $T2 distill light_x${s}_distill_gan ) &
  ( run $((T1 + HALF)) train mid_x${s}_pre; run $((T2 - HALF)) train mid_x${s}_gan ) &
  run $ALL train light_x${s}_pruned_gan &
  run $ALL train fast_x${s}_gan &
done
run $ALL train fast_x4_gan _w0.01 --set train.gan_opt.loss_weight=0.01 &
run $ALL train fast_x4_gan _w0.2 --set train.gan_opt.loss_weight=0.2 &
wait
for f in runs/gpu_*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -E 'val|stopped|Error|error|Traceback' | tail -3; done
$PY model/recipes/slim_checkpoints.py "$OUTDIR/gan_ladder_x4.tar" 'gpu_*x4*'
$PY model/recipes/slim_checkpoints.py "$OUTDIR/gan_ladder_x2.tar" 'gpu_*x2*'
ls -la "$OUTDIR"
