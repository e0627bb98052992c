# SPDX-License-Identifier: MPL-2.0
# Sourced by the example pipelines: use the plugin built in target/release (run
# `cargo build --release` or ./pipelines/restore-clip.sh first) with a private registry.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GST_PLUGIN_PATH="$ROOT/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
export GST_REGISTRY="$ROOT/target/gst-registry-pipelines.bin"
if [ ! -f "$ROOT/target/release/libgstlightsrscale.so" ]; then
  echo "target/release/libgstlightsrscale.so is missing: run 'cargo build --release' first" >&2
  exit 1
fi
