#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# meson's bridge to cargo. `build OUT`: release build, copy the plugin to OUT.
# `test`: fixture bundles, then the release test suite.
# cargo runs from the source root so that .cargo/config.toml (LIBTORCH) applies.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=""
[ -n "${2:-}" ] && OUT=$(realpath -m "$2")   # meson passes it relative to the build dir
cd "$ROOT"
case "${1:-}" in
  build)
    cargo build --release -p gst-plugin-lightsrscale
    cp -f target/release/libgstlightsrscale.so "$OUT"
    ;;
  test)
    .venv/bin/python tests/fixtures/make_fixtures.py target/fixtures
    .venv/bin/python tests/fixtures/make_photo_fixture.py target/fixtures
    cargo test --release -p gst-plugin-lightsrscale
    ;;
  *)
    echo "usage: $0 build OUTPUT | test" >&2
    exit 2
    ;;
esac
