#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Frames that stay on the GPU (NVIDIA driver + GStreamer's nvcodec plugin, gst-plugins-bad):
#   ./pipelines/restore-on-gpu.sh                  # test pattern: cudaupload ! lightsrscale ! cudadownload
#   ./pipelines/restore-on-gpu.sh IN.mp4 OUT.mp4   # H.264 file: nvh264dec ! lightsrscale ! nvh264enc
# SCALE (default 2) picks the ladder. `stats` reports gpu-memory-frames: frames that were read
# and written in CUDA memory in place.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if ! gst-inspect-1.0 cudaupload >/dev/null 2>&1; then
  echo "cudaupload is missing: this needs an NVIDIA driver and gst-plugins-bad's nvcodec plugin" \
    "(apt install gstreamer1.0-plugins-bad)" >&2
  exit 1
fi
scale=${SCALE:-2}
if [ $# -eq 0 ]; then
  # cudaupload passes system memory through when downstream takes it: ask for CUDA memory
  gst-launch-1.0 -v videotestsrc num-buffers="${FRAMES:-100}" pattern=smpte \
    ! video/x-raw,format=NV12,width=960,height=540,framerate=25/1 \
    ! cudaupload ! "video/x-raw(memory:CUDAMemory)" \
    ! lightsrscale scale="$scale" device=cuda \
    ! cudadownload ! fakesink sync=false 2>&1 \
    | grep -E "lightsrscale0.GstPad:src: caps|Execution ended|ERROR|WARNING"
else
  in=$1 out=${2:-restored.mp4}
  # data-centre GPUs (A100, H100, H200) have a decoder but no encoder: x264 encodes there
  if gst-inspect-1.0 nvh264enc >/dev/null 2>&1; then
    encode="video/x-raw(memory:CUDAMemory) ! nvh264enc"
  else
    echo "no nvh264enc (this GPU has no NVENC): encoding with x264enc" >&2
    encode="cudadownload ! videoconvert ! x264enc"
  fi
  gst-launch-1.0 filesrc location="$in" ! qtdemux ! h264parse ! nvh264dec \
    ! "video/x-raw(memory:CUDAMemory)" ! lightsrscale scale="$scale" device=cuda \
    ! $encode ! h264parse ! mp4mux ! filesink location="$out"
  echo "wrote $out"
fi
