#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Builds here what the GPU checks need on a machine that has a GPU and torch 2.11 but no Rust
# toolchain and no GStreamer: target/gpu-kit/ with the release test and bench executables
# (stripped), the plugin, the fixture bundles, and the GStreamer / GLib libraries and plugins
# they load (not libtorch: the GPU machine's torch wheel provides it), packed as
# target/gpu-kit.tar.xz (about 16 MB; unpacked it is over the device tool's 64 MiB). tests/gpu/run.sh
# unpacks and runs them there. With the `device` tool:
#   ./tests/gpu/prepare.sh            # here
#   ./tests/gpu/run.sh                # there (carry: ["target/gpu-kit.tar.xz"]); report in $OUT
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
KIT="$ROOT/target/gpu-kit"
rm -rf "$KIT"
mkdir -p "$KIT"/{bin,lib,gst-plugins,plugin}

.venv/bin/python tests/fixtures/make_fixtures.py "$KIT/fixtures" >/dev/null
.venv/bin/python tests/fixtures/make_photo_fixture.py "$KIT/fixtures" >/dev/null
cargo build --release -q
# executables of the unit tests, the integration tests and the benches: unit-*, test-*, bench-*
list() { cargo "$@" --no-run --message-format=json 2>/dev/null \
  | .venv/bin/python -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kind = {"lib": "unit", "cdylib": "unit"}.get(m["target"]["kind"][0], m["target"]["kind"][0])
        print(kind + "-" + m["target"]["name"], m["executable"])'; }
{ list test --release; list bench; } | sort -u | while read -r name exe; do
  cp "$exe" "$KIT/bin/$name"
  strip --strip-all "$KIT/bin/$name"  # the kit travels under a 64 MiB limit
done
cp target/release/libgstlightsrscale.so "$KIT/plugin/"
strip --strip-unneeded "$KIT/plugin/libgstlightsrscale.so"

# GStreamer plugins the tests and benches use
PLUGINS=$(pkg-config --variable=pluginsdir gstreamer-1.0)
for p in coreelements videotestsrc videoconvertscale app; do
  cp "$PLUGINS/libgst$p.so" "$KIT/gst-plugins/"
done
# GStreamer's CUDA elements (cudaupload / cudadownload, nvh264dec / nvh264enc where the driver
# has the codec libraries), for the CUDA memory tests: gst-plugins-bad, where installed
# and an H.264 encoder and parser to feed nvh264dec with (gst-plugins-ugly / -bad)
for p in nvcodec x264 videoparsersbad; do
  [ -f "$PLUGINS/libgst$p.so" ] && cp "$PLUGINS/libgst$p.so" "$KIT/gst-plugins/"
done
# every shared library they resolve, except those of the torch wheel (the GPU machine has
# them) and the C runtime (it has its own)
skip='^(libtorch|libc10|libcudart|libcupti|libgomp|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|ld-linux|libgcc_s|libstdc\+\+)'
for f in "$KIT"/bin/* "$KIT"/plugin/*.so "$KIT"/gst-plugins/*.so; do
  ldd "$f" | awk '/=> \// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ "$name" =~ $skip ]] && continue
  case "$path" in */site-packages/*|*/.venv/*) continue ;; esac  # the torch wheel's own
  cp -L "$path" "$KIT/lib/$name"
done
# the registry helper, so that plugins are scanned out of process as usual
SCANNER=$(pkg-config --variable=pluginscannerdir gstreamer-1.0 2>/dev/null || true)
[ -x "$SCANNER/gst-plugin-scanner" ] && cp "$SCANNER/gst-plugin-scanner" "$KIT/bin/"
echo "gpu-kit: $(ls "$KIT/bin" | wc -l) executables, $(ls "$KIT/lib" | wc -l) libraries, $(du -sh "$KIT" | cut -f1) in $KIT"
tar -C "$ROOT/target" -cf - gpu-kit | xz -T0 -6 > "$KIT.tar.xz"
echo "gpu-kit: packed as $KIT.tar.xz ($(du -h "$KIT.tar.xz" | cut -f1)): carry that"
