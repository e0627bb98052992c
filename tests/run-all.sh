#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# The README's test command: set-up, fixture bundles, release build, Rust tests (unit, engine,
# element, pipelines), Python model tests, a gst-inspect + gst-launch smoke run of the built
# plugin, then an install into a staging prefix that must run on its own
# (tests/install-test.sh). Idempotent; safe to re-run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }

step "set-up"
./tests/setup.sh

step "fixture bundles (tests/fixtures/make_fixtures.py -> target/fixtures)"
.venv/bin/python tests/fixtures/make_fixtures.py target/fixtures
.venv/bin/python tests/fixtures/make_photo_fixture.py target/fixtures

step "cargo build --release"
nice cargo build --release

step "cargo test --release"
nice cargo test --release

step "Python model tests"
if compgen -G "model/tests/test_*.py" > /dev/null; then
  nice .venv/bin/python -m pytest -q model/tests
else
  echo "model/tests has no tests yet: skipped"
fi

step "smoke run of the built plugin (GST_PLUGIN_PATH=target/release)"
# A private registry under target/, so a failed load cached elsewhere never sticks.
export GST_REGISTRY="$ROOT/target/gst-registry-run-all.bin"
export GST_PLUGIN_PATH="$ROOT/target/release"
rm -f "$GST_REGISTRY"
gst-inspect-1.0 lightsrscale > target/gst-inspect-lightsrscale.txt
grep -q "active-variant" target/gst-inspect-lightsrscale.txt
gst-launch-1.0 -q videotestsrc num-buffers=3 ! video/x-raw,format=NV12,width=480,height=270 \
  ! lightsrscale scale=4 ! video/x-raw,width=1920,height=1080 ! fakesink
gst-launch-1.0 -q videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=321,height=181 \
  ! lightsrscale scale=2 model="$ROOT/target/fixtures/ladder" variant=nearest ! video/x-raw,width=642 ! fakesink

step "stream server test (pipelines/restore-server.py on 127.0.0.1: SRT in, restore, SRT + HLS out)"
nice .venv/bin/python tests/stream-server-test.py | grep -v "^restore-server:  *[0-9]"

step "install test (meson install --destdir, then the installed copy on its own)"
./tests/install-test.sh

printf '\nrun-all: OK (fixtures, build, Rust tests, Python tests, gst-inspect/gst-launch smoke, stream server, install)\n'
