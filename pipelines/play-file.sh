#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Plays any video file upscaled on screen: ./pipelines/play-file.sh FILE [SCALE] [MODEL]
# (MODEL: a bundle directory; empty = the embedded default).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
FILE=${1:?usage: $0 FILE [SCALE] [MODEL]}
[ -f "$FILE" ] || { echo "$FILE: no such file" >&2; exit 1; }
gst-launch-1.0 filesrc location="$FILE" ! decodebin ! videoconvert \
  ! lightsrscale scale="${2:-0}" model="${3:-}" ! videoconvert ! autovideosink
