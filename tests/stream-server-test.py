# SPDX-License-Identifier: MPL-2.0
"""End-to-end test of pipelines/restore-server.py on the loopback interface only.

A sender streams a low-bitrate H.264 clip (a moving pattern at QP 34, 176x144, 25 fps, 3 s) live
over SRT to the server, keeping a copy of what it sent, goes away, and comes back with it; the server restores it x4 with lightsrscale (adaptive),
re-encodes it and serves it over SRT and HLS; a client reads the SRT output. Checked:
* the server stops by itself (--idle-exit) within a bounded time, with exit status 0, having seen
  both senders, and restored frames after the second one came;
* every frame it decoded was restored or counted as dropped by the element, and every restored
  frame is in its HLS output (704x576);
* the SRT client received the restored stream at 704x576;
* each output frame is the restored picture: within the re-encode's loss of lightsrscale run
  offline on the same decoded input frames (the rungs the server may have used), and further
  from a plain nearest-neighbour upscale of them.
Run by tests/run-all.sh with the venv's Python (numpy, PyAV and the lightsr package: its decoder
and PSNR-Y); the server runs on the system Python (PyGObject).
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from lightsr.bundle import load_manifest
from lightsr.degradations import decode_bitstream as decode
from lightsr.iqa import psnr_y as psnr

ROOT = Path(__file__).resolve().parents[1]
W, H, S, FRAMES = 176, 144, 4, 75
ENV = dict(os.environ, GST_PLUGIN_PATH=str(ROOT / "target" / "release"),
           GST_REGISTRY=str(ROOT / "target" / "gst-registry-stream-test.bin"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gst(*pipeline: str, timeout: float = 60) -> None:
    subprocess.run(["gst-launch-1.0", "-q", *" ".join(pipeline).split()], env=ENV, check=True, timeout=timeout)


def read_raw(path: Path, w: int, h: int) -> list[np.ndarray]:
    data = np.fromfile(path, dtype=np.uint8)
    return list(data.reshape(-1, h, w, 3)) if data.size else []


def fail(message: str) -> None:
    print(f"stream-server-test: FAILED: {message}", file=sys.stderr)
    sys.exit(1)



def ladder_rungs(scale: int) -> list[str]:
    """The embedded default ladder's rungs at `scale` (any of them may run adaptively)."""
    _, manifest = load_manifest(Path(__file__).resolve().parent.parent / "model/bundles/default")
    return [v["name"] for ladder in manifest["ladders"] if ladder["scale"] == scale for v in ladder["variants"]]

def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="lightsrscale-stream-"))
    ingest, serve = free_port(), free_port()
    hls = work / "hls"
    server = subprocess.Popen(
        ["/usr/bin/python3", str(ROOT / "pipelines" / "restore-server.py"), "--ingest-port", str(ingest),
         "--serve-port", str(serve), "--hls", str(hls), "--scale", str(S), "--stats-every", "1",
         "--idle-exit", "4", "--duration", "120", "--bitrate", "6000"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the client and the sender connect once the server listens (it prints so when PLAYING)
    head = []
    deadline = time.monotonic() + 90
    while not any("SRT ingest on" in line for line in head):
        line = server.stdout.readline()
        if not line or time.monotonic() > deadline:
            server.kill()
            fail("the server did not start: " + "".join(head))
        head.append(line)
    time.sleep(0.5)
    client_raw = work / "client.raw"
    client = subprocess.Popen(
        ["gst-launch-1.0", "-q", "srtsrc", f"uri=srt://127.0.0.1:{serve}?mode=caller", "!", "tsdemux", "!",
         "h264parse", "!", "avdec_h264", "!", "videoconvert", "!", "video/x-raw,format=RGB", "!",
         "filesink", f"location={client_raw}"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    sent = []
    for i in range(2):  # the sender streams the clip live, goes away, comes back; what it sent is kept
        sent.append(work / f"sent{i}.ts")
        gst(f"videotestsrc is-live=true num-buffers={FRAMES} pattern=ball motion=sweep",
            f"! video/x-raw,format=I420,width={W},height={H},framerate=25/1",
            f"! x264enc quantizer=34 pass=qual key-int-max=15 tune=zerolatency ! video/x-h264,profile=high",
            f"! mpegtsmux ! tee name=t t. ! queue ! srtsink uri=srt://127.0.0.1:{ingest}?mode=caller",
            f"t. ! queue ! filesink location={sent[-1]}")
        time.sleep(2)
    started = time.monotonic()
    try:
        log, _ = server.communicate(timeout=60)
        log = "".join(head) + log
    except subprocess.TimeoutExpired:
        server.kill()
        fail("the server did not stop by itself within 60 s of the last sender")
    stopped_after = time.monotonic() - started
    client.terminate()
    client.wait(timeout=10)
    print(log)
    if server.returncode != 0:
        fail(f"the server exited with {server.returncode}")
    if "sender connected (2 so far)" not in log or "no sender for 4 s, stopping" not in log:
        fail("the server did not see the sender leave and come back, or did not stop by itself")
    status = [m.groups() for m in re.finditer(r"decoded (\d+) restored (\d+) dropped (\d+)", log)]
    decoded, restored, dropped = map(int, status[-1])
    reconnect = log.index("sender connected (2 so far)")
    before = [int(m.group(1)) for m in re.finditer(r"decoded (\d+)", log[:reconnect])]
    if not before or decoded <= max(before):
        fail("no frame was decoded after the sender came back")
    if decoded != restored + dropped:
        fail(f"decoded {decoded} != restored {restored} + dropped {dropped}: frames unaccounted for")
    if restored < FRAMES:  # two passes of the clip, less what SRT's connection set-up lost
        fail(f"only {restored} of 2 x {FRAMES} frames restored")

    segments = sorted(hls.glob("segment*.ts"))
    served = [f for seg in segments for f in decode(seg)]
    if len(served) != restored:
        fail(f"HLS holds {len(served)} frames, the server restored {restored}")
    if served[0].shape != (H * S, W * S, 3):
        fail(f"HLS frames are {served[0].shape}, expected {(H * S, W * S, 3)}")
    received = read_raw(client_raw, W * S, H * S)
    if len(received) < restored - 2:  # the last frames may still be in flight when the server stops
        fail(f"the SRT client received {len(received)} frames of {restored}")

    # Offline: the same decoded input through lightsrscale, with each rung the server may run.
    inputs = [f for clip in sent for f in decode(clip)]
    references = {}
    for variant in ladder_rungs(S):
        references[variant] = []
        for i, clip in enumerate(sent):
            raw = work / f"offline-{variant}-{i}.raw"
            gst(f"filesrc location={clip} ! tsdemux ! h264parse ! avdec_h264 ! videoconvert",
                f"! video/x-raw,format=NV12 ! lightsrscale scale={S} variant={variant} ! videoconvert",
                f"! video/x-raw,format=RGB ! filesink location={raw}")
            references[variant] += read_raw(raw, W * S, H * S)
    nearest = [np.repeat(np.repeat(f, S, 0), S, 1) for f in inputs]
    candidates = [r for refs in references.values() for r in refs]

    def closest(frame, pool):
        """PSNR to the closest image of `pool` (chosen on a subsampled grid, then measured whole)."""
        small = frame[::4, ::4].astype(np.int32)
        errors = [np.mean((small - p[::4, ::4].astype(np.int32)) ** 2) for p in pool]
        return max(psnr(frame, pool[i]) for i in np.argsort(errors)[:3])

    worst, margins = 99.0, []
    for frame in served[:: max(1, len(served) // 40)]:
        best = closest(frame, candidates)
        worst = min(worst, best)
        margins.append(best - closest(frame, nearest))
    print(f"stream-server-test: {len(served)} frames served, {len(received)} received by the SRT client; "
          f"against the offline restoration: worst PSNR-Y {worst:.1f} dB, {np.mean(margins):.1f} dB closer "
          f"than nearest-neighbour on average; stopped {stopped_after:.1f} s after the last sender")
    if worst < 30.0:
        fail(f"an output frame is only {worst:.1f} dB from every offline restoration of the input")
    if np.mean(margins) < 1.0:
        fail("the output is no closer to lightsrscale's restoration than to a nearest-neighbour upscale")
    print("stream-server-test: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
