#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The GPU checks, in one go, on a machine with an NVIDIA GPU and torch 2.11 but no Rust
# toolchain and no GStreamer: run tests/gpu/prepare.sh on the build machine first and carry
# target/gpu-kit.tar.xz (unpacked here into target/gpu-kit). Runs the Rust unit, engine (CUDA vs
# CPU parity of every embedded rung), element and pipeline tests with CUDA as the default
# device, the Python CUDA tests if pytest is there, then the benchmarks: per-frame cost per
# rung at 320x180 -> x4, 960x540 -> x4 and 1920x1080 -> x2 (frames in system memory, fps =
# 1000 / ms), and the live deadline run; last the levers (tests/gpu/levers.py) and a rung's
# first-frame cost per thread (tests/gpu/threads.py).
# Writes everything to $OUT (default target/gpu-report) and a summary to stdout. Every step
# has a time limit; a failed step is reported and the others still run.
#   device run: command "./tests/gpu/run.sh", carry ["target/gpu-kit.tar.xz"], timeout_s 540
#   a dry run of the mechanics here: PYTHON=.venv/bin/python BENCH_DEVICE=cpu BENCH_FRAMES=3 \
#     DEADLINE_FRAMES=50 OUT=/tmp/gpu-report ./tests/gpu/run.sh
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KIT="$ROOT/target/gpu-kit"
OUT="${OUT:-$ROOT/target/gpu-report}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
if [ -f "$KIT.tar.xz" ] && ! [ "$KIT/bin/test-engine" -nt "$KIT.tar.xz" ]; then
  # python's tarfile rather than tar -J: the GPU machine's image may lack xz
  "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
    "$KIT.tar.xz" "$ROOT/target" || { echo "gpu: cannot unpack $KIT.tar.xz" >&2; exit 2; }
fi
[ -x "$KIT/bin/test-engine" ] || { echo "gpu: $KIT is missing: run tests/gpu/prepare.sh and carry target/gpu-kit.tar.xz" >&2; exit 2; }

TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') \
  || { echo "gpu: $PYTHON cannot import torch (torch==2.11.0 is needed)" >&2; exit 2; }
export LD_LIBRARY_PATH="$KIT/lib:$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GST_PLUGIN_SYSTEM_PATH="$KIT/gst-plugins" GST_PLUGIN_PATH="$KIT/plugin"
export GST_REGISTRY="$OUT/registry.bin" LIGHTSRSCALE_FIXTURES="$KIT/fixtures"
[ -x "$KIT/bin/gst-plugin-scanner" ] && export GST_PLUGIN_SCANNER="$KIT/bin/gst-plugin-scanner"
rm -f "$GST_REGISTRY"

{
  date -u
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  echo "driver video libraries (GStreamer's nvcodec registers its CUDA elements only with one):" \
    $(ldconfig -p 2>/dev/null | grep -oE "lib(nvcuvid|nvidia-encode)\.so\.1" | sort -u)
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

failed=()
BUDGET="${BUDGET:-480}"  # seconds: later steps are skipped past it, so the call ends in time
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  if [ -n "${ONLY:-}" ] && ! [[ " $ONLY " =~ \ ${name%%-*}\  ]]; then
    return  # not asked for (ONLY="engine element overhead ...": the steps to run, by first word)
  fi
  if [ $((SECONDS + 10)) -gt "$BUDGET" ]; then
    echo "gpu: $name SKIPPED (time budget of $BUDGET s spent)"
    failed+=("$name(skipped)")
    return
  fi
  [ $((SECONDS + limit)) -gt "$BUDGET" ] && limit=$((BUDGET - SECONDS))
  if timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; then
    echo "gpu: $name ok ($((SECONDS - start)) s)"
  else
    echo "gpu: $name FAILED (status $?, $((SECONDS - start)) s): $OUT/$name.txt"
    failed+=("$name")
    tail -n 12 "$OUT/$name.txt" | cut -c1-300 | sed 's/^/    | /'
  fi
  grep -E "^test result|passed|failed|skipped|panicked" "$OUT/$name.txt" | head -5 | sed 's/^/    /'
}

step engine 120 "$KIT/bin/test-engine" --test-threads 1
step element 120 "$KIT/bin/test-lightsrscale" --test-threads 1
step pipeline 90 "$KIT/bin/test-pipeline" --test-threads 1 --nocapture
step unit 60 "$KIT/bin/unit-gstlightsrscale" --test-threads 2 --nocapture
step deadline 60 "$KIT/bin/test-deadline" --test-threads 1
if "$PYTHON" -c "import pytest, yaml" 2>/dev/null; then
  PYTHONPATH="$ROOT/model" step python-cuda 90 "$PYTHON" -m pytest -q "$ROOT/model/tests/test_export.py" -k cuda
else
  echo "gpu: python-cuda skipped (no pytest / pyyaml for $PYTHON)"
fi

export LIGHTSRSCALE_BENCH_DEVICE="${BENCH_DEVICE:-cuda}" LIGHTSRSCALE_BENCH_MODEL="$ROOT/model/bundles/default"
export FRAMES="${BENCH_FRAMES:-50}"
in_ladder() {  # in_ladder SCALE VARIANT: whether the default bundle's ladder of SCALE has VARIANT
  "$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1]))
sys.exit(0 if any(l["scale"] == int(sys.argv[2]) and any(v["name"] == sys.argv[3] for v in l["variants"])
                  for l in m["ladders"]) else 1)' "$LIGHTSRSCALE_BENCH_MODEL/manifest.json" "$1" "$2"
}
for run in ${OVERHEAD_RUNS:-320x180:4 960x540:4 1920x1080:2}; do
  set -- ${run/:/ }
  for variant in ${OVERHEAD_VARIANTS:-fourier deep-wide deep deep-thin bicubic}; do
    in_ladder "$2" "$variant" || continue
    LIGHTSRSCALE_BENCH_SIZE=$1 LIGHTSRSCALE_BENCH_SCALE=$2 LIGHTSRSCALE_BENCH_VARIANT=$variant \
      step "overhead-$1-x$2-$variant" 60 "$KIT/bin/bench-overhead"
  done
done
FRAMES="${DEADLINE_FRAMES:-250}" CONFIGS=adaptive step deadline-x4 60 "$KIT/bin/bench-deadline"
# the sizes a GPU serves live: 960x540 -> x4 (3840x2160) and -> x2 (1920x1080)
FRAMES="${DEADLINE_FRAMES:-250}" CONFIGS=adaptive SIZE=960x540 step deadline-x4-540p 60 "$KIT/bin/bench-deadline"
FRAMES="${DEADLINE_FRAMES:-250}" CONFIGS=adaptive SIZE=960x540 SCALE=2 step deadline-x2-540p 60 "$KIT/bin/bench-deadline"
# last: the levers are exploration (torch.compile can take minutes), the steps above are the checks
step levers 150 "$PYTHON" "$ROOT/tests/gpu/levers.py" "$ROOT/model/bundles/default" --out "$OUT" ${LEVERS_ARGS:-}
step threads 90 "$PYTHON" "$ROOT/tests/gpu/threads.py" "$ROOT/model/bundles/default" fourier deep

echo
echo "== benchmark figures"
grep -h "^levers:" "$OUT/levers.txt" 2>/dev/null
grep -h "^threads:" "$OUT/threads.txt" 2>/dev/null
for f in "$OUT"/overhead-*.txt "$OUT"/deadline-x*.txt; do
  [ -f "$f" ] && grep -E "overhead:|direct|compute floor|element,|no CUDA memory|deadline:|on time|learned|drops|per variant" "$f"
done
# the device tool brings back at most 8 files: the step logs travel as one archive
rm -f "$OUT/registry.bin" "$OUT/logs.tar.gz"
tar -C "$OUT" -czf "${TMPDIR:-/tmp}/gpu-logs.$$.tar.gz" . && mv "${TMPDIR:-/tmp}/gpu-logs.$$.tar.gz" "$OUT/logs.tar.gz" \
  && find "$OUT" -maxdepth 1 -name "*.txt" ! -name device.txt -delete
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu: failed steps: ${failed[*]}"
  exit 1
fi
echo "gpu: all steps passed"
