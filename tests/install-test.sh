#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Installs the plugin with meson into a staging directory (--destdir), copies the installed tree
# to another path, and checks that the copy stands alone: no RUNPATH or resolved library inside
# this checkout (its .venv), nothing missing, then gst-inspect-1.0 and a pipeline that runs a
# learned rung, from the copy, with a clean environment. Prints what the install weighs.
# Run by tests/run-all.sh after the build; idempotent (a build dir under target/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD="$ROOT/target/meson-install-test"
WORK=$(mktemp -d /tmp/lightsrscale-install.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PREFIX=/opt/lightsrscale-test

if [ -f "$BUILD/build.ninja" ]; then
  meson setup --reconfigure "$BUILD" --prefix="$PREFIX" -Dcuda=disabled >/dev/null
else
  meson setup "$BUILD" --prefix="$PREFIX" -Dcuda=disabled >/dev/null
fi
meson compile -C "$BUILD" >/dev/null
meson install -C "$BUILD" --destdir "$WORK/stage" --quiet
cp -a "$WORK/stage$PREFIX" "$WORK/moved"          # the install, somewhere else
PLUGIN=$(find "$WORK/moved" -name libgstlightsrscale.so)
[ -n "$PLUGIN" ] || { echo "install-test: no plugin installed" >&2; exit 1; }

fail() { echo "install-test: $*" >&2; exit 1; }
rpath=$(readelf -d "$PLUGIN" | grep -E "RUNPATH|RPATH" || true)
case "$rpath" in *'$ORIGIN'*) ;; *) fail "plugin RUNPATH is not relative to it: $rpath" ;; esac
case "$rpath" in *"$ROOT"*) fail "plugin RUNPATH points into the checkout: $rpath" ;; esac
for lib in "$(dirname "$PLUGIN")"/../lightsrscale/*.so*; do
  readelf -d "$lib" | grep -q "$ROOT" && fail "$lib refers to the checkout"
done
deps=$(env -i PATH=/usr/bin:/bin ldd "$PLUGIN")
echo "$deps" | grep -q "not found" && fail "unresolved libraries: $(echo "$deps" | grep 'not found')"
echo "$deps" | grep -q "$ROOT" && fail "libraries resolved inside the checkout: $(echo "$deps" | grep "$ROOT")"
echo "$deps" | grep -q "libtorch_cpu.so => $WORK/moved" || fail "libtorch_cpu.so not taken from the install: $deps"

run() {
  env -i PATH=/usr/bin:/bin HOME="$WORK" GST_PLUGIN_PATH="$(dirname "$PLUGIN")" \
    GST_REGISTRY="$WORK/registry.bin" "$@"
}
run gst-inspect-1.0 lightsrscale > "$WORK/inspect.txt" || fail "gst-inspect-1.0 lightsrscale failed"
grep -q "Filename.*$WORK/moved" "$WORK/inspect.txt" || fail "gst-inspect did not load the installed copy"
run gst-launch-1.0 -q videotestsrc num-buffers=3 ! video/x-raw,format=NV12,width=160,height=90 \
  ! lightsrscale scale=4 variant=deep ! video/x-raw,width=640,height=360 \
  ! fakesink || fail "a pipeline through the installed copy failed"
echo "install-test: OK, the installed copy runs on its own; it weighs $(du -sh "$WORK/moved" | cut -f1)" \
  "(plugin $(du -h "$PLUGIN" | cut -f1), libtorch $(du -sh "$(dirname "$PLUGIN")/../lightsrscale" | cut -f1))"
