#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# NV12 480x270 test pattern -> x4 -> 1920x1080, as a decoder would feed it; prints the
# negotiated caps and how long 25 frames took.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
gst-launch-1.0 videotestsrc num-buffers="${FRAMES:-25}" pattern=smpte \
  ! video/x-raw,format=NV12,width=480,height=270,framerate=25/1 \
  ! lightsrscale scale=4 device="${DEVICE:-auto}" ! video/x-raw,width=1920,height=1080 \
  ! fakesink sync=false -v 2>&1 | grep -E "lightsrscale0.GstPad:src: caps|Execution ended|ERROR|WARNING"
