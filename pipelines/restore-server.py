#!/usr/bin/python3
# SPDX-License-Identifier: MPL-2.0
"""A restoring stream server: takes a live low-bitrate H.264 stream over SRT, restores and
upscales it with `lightsrscale` (adaptive: it keeps the live rate, falling back to lighter rungs
when the CPU or GPU cannot keep up), re-encodes it and serves it as HLS (for players) and SRT
(for low-latency monitoring or a next hop). Every few seconds it prints frames in and out, the
element's drops, its active rung and costs, the pipeline latency and QoS messages.

    pipelines/restore-server.py                       # SRT in on :7001, out on :7002, HLS in out/hls
    pipelines/restore-server.py --scale 2 --hls /var/www/live --bitrate 6000

Send it a stream (any SRT caller with H.264 in MPEG-TS), e.g. from a camera or a file:

    gst-launch-1.0 filesrc location=in.mp4 ! qtdemux ! h264parse ! mpegtsmux \\
        ! srtsink uri="srt://SERVER:7001?mode=caller"

and watch it: `gst-play-1.0 "srt://SERVER:7002?mode=caller"`, or serve the HLS directory with any
web server (`python3 -m http.server -d out/hls`) and open playlist.m3u8. The sender may go away
and come back: the server keeps listening and resumes. `--duration` / `--idle-exit` stop it by
itself (tests, cron); Ctrl-C stops it cleanly. It uses the system's PyGObject (python3-gi) and
the installed plugin, or the checkout's target/release when run from a checkout.
"""
import argparse
import os
import warnings
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "target" / "release" / "libgstlightsrscale.so").exists():  # run from a checkout
    os.environ["GST_PLUGIN_PATH"] = os.pathsep.join(
        p for p in (str(ROOT / "target" / "release"), os.environ.get("GST_PLUGIN_PATH")) if p)
    os.environ.setdefault("GST_REGISTRY", str(ROOT / "target" / "gst-registry-pipelines.bin"))

import gi  # noqa: E402

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)  # GValueArray.get_nth


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ingest-port", type=int, default=7001, help="SRT listener port for the sender")
    p.add_argument("--serve-port", type=int, default=7002, help="SRT listener port for viewers (0: off)")
    p.add_argument("--hls", default=str(ROOT / "out" / "hls"), help="HLS directory ('' : off)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--bitrate", type=int, default=4000, help="output H.264 bitrate, kbit/s")
    p.add_argument("--latency", type=int, default=120, help="SRT latency, ms")
    p.add_argument("--model", default="", help="lightsrscale model bundle (default: embedded)")
    p.add_argument("--variant", default="auto", help="lightsrscale variant (default: auto, adaptive)")
    p.add_argument("--stats-every", type=float, default=2.0, help="seconds between status lines")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: never)")
    p.add_argument("--idle-exit", type=float, default=0,
                   help="stop after this many seconds without a sender, once one came (0: never)")
    return p.parse_args(argv)


def describe(a) -> str:
    outputs = []
    if a.serve_port:
        outputs.append(f"t. ! queue ! mpegtsmux alignment=7 ! srtsink name=serve "
                       f"uri=\"srt://:{a.serve_port}?mode=listener\" latency={a.latency} "
                       f"wait-for-connection=false sync=false async=false")
    if a.hls:
        Path(a.hls).mkdir(parents=True, exist_ok=True)
        outputs.append(f"t. ! queue ! hlssink2 name=hls target-duration=2 max-files=15 playlist-length=6 "
                       f"location=\"{a.hls}/segment%05d.ts\" playlist-location=\"{a.hls}/playlist.m3u8\"")
    if not outputs:
        raise SystemExit("restore-server: nothing to serve: give --serve-port or --hls")
    model = f" model=\"{a.model}\"" if a.model else ""
    return (
        f"srtsrc name=ingest uri=\"srt://:{a.ingest_port}?mode=listener\" keep-listening=true "
        f"latency={a.latency} ! queue ! tsdemux ! h264parse ! avdec_h264 name=decode ! videoconvert "
        f"! video/x-raw,format=NV12 ! lightsrscale name=sr scale={a.scale} variant={a.variant}{model} "
        f"! videoconvert ! x264enc name=encode tune=zerolatency speed-preset=ultrafast "
        f"bitrate={a.bitrate} key-int-max=50 ! h264parse config-interval=-1 ! tee name=t "
        + " ".join(outputs))


class Server:
    def __init__(self, args):
        self.args = args
        self.pipeline = Gst.parse_launch(describe(args))
        self.sr = self.pipeline.get_by_name("sr")
        self.decoded = self.restored = self.qos_messages = 0
        self.senders = 0
        self.connected = False
        self.last_sender_seen = None
        self.started = time.monotonic()
        self.loop = GLib.MainLoop()
        self.exit_code = 0
        self.count(self.pipeline.get_by_name("decode").get_static_pad("src"), "decoded")
        self.count(self.sr.get_static_pad("src"), "restored")
        ingest = self.pipeline.get_by_name("ingest")
        ingest.connect("caller-added", self.on_caller, True)
        ingest.connect("caller-removed", self.on_caller, False)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)

    def count(self, pad, field):
        def probe(_pad, _info):
            setattr(self, field, getattr(self, field) + 1)
            return Gst.PadProbeReturn.OK
        pad.add_probe(Gst.PadProbeType.BUFFER, probe)

    def on_caller(self, _src, *args):
        added = args[-1]
        GLib.idle_add(self.caller_changed, added)

    def caller_changed(self, added):
        self.connected = added
        self.last_sender_seen = time.monotonic()
        if added:
            self.senders += 1
        print(f"restore-server: sender {'connected' if added else 'gone'} "
              f"({self.senders} so far)", flush=True)
        return False

    def on_message(self, _bus, message):
        t = message.type
        if t == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            print(f"restore-server: ERROR from {message.src.get_name()}: {err.message} ({debug})",
                  file=sys.stderr, flush=True)
            self.exit_code = 1
            self.loop.quit()
        elif t == Gst.MessageType.WARNING:
            err, _ = message.parse_warning()
            print(f"restore-server: warning from {message.src.get_name()}: {err.message}", flush=True)
        elif t == Gst.MessageType.QOS:
            self.qos_messages += 1
        elif t == Gst.MessageType.ELEMENT and message.get_structure().get_name() == "lightsrscale-variant":
            s = message.get_structure()
            print(f"restore-server: rung {s.get_value('from') or '-'} -> {s.get_value('to')} "
                  f"({s.get_value('reason')})", flush=True)
        elif t == Gst.MessageType.LATENCY:  # lightsrscale's latency changed (frame rate)
            self.pipeline.recalculate_latency()

    def status(self, final=False):
        st = self.sr.get_property("stats")
        ok, array = st.get_array("variants")  # a GstValueArray: PyGObject reads it as a GValueArray
        variants = [array.get_nth(i) for i in range(array.n_values)] if ok else []
        costs = ", ".join(f"{v.get_value('name')} {v.get_value('frames')} frames "
                          f"{v.get_value('mean-cost') / 1e6:.1f} ms"
                          for v in variants if v.get_value("frames"))
        line = (f"restore-server{' final' if final else ''}: {time.monotonic() - self.started:6.1f} s | "
                f"decoded {self.decoded} restored {self.restored} dropped {st.get_value('dropped')} "
                f"(element processed {st.get_value('processed')}) | rung {st.get_value('active-variant') or '-'}"
                f" | latency: SRT {self.args.latency} ms + lightsrscale {st.get_value('latency') / 1e6:.0f} ms"
                f" | QoS messages {self.qos_messages} | {costs}")
        print(line, flush=True)

    def tick(self):
        self.status()
        now = time.monotonic()
        a = self.args
        if a.duration and now - self.started >= a.duration:
            print("restore-server: --duration reached, stopping", flush=True)
            self.loop.quit()
        elif (a.idle_exit and not self.connected and self.last_sender_seen is not None
              and now - self.last_sender_seen >= a.idle_exit):
            print(f"restore-server: no sender for {a.idle_exit:g} s, stopping", flush=True)
            self.loop.quit()
        return True

    def run(self):
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            print("restore-server: the pipeline did not start (see the error above)", file=sys.stderr)
            return 1
        print(f"restore-server: SRT ingest on :{self.args.ingest_port}"
              + (f", SRT out on :{self.args.serve_port}" if self.args.serve_port else "")
              + (f", HLS in {self.args.hls}" if self.args.hls else "")
              + f", x{self.args.scale}", flush=True)
        GLib.timeout_add(int(self.args.stats_every * 1000), self.tick)
        for sig in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, self.stop_on_signal)
        self.loop.run()
        self.finish()
        self.status(final=True)
        self.pipeline.set_state(Gst.State.NULL)
        return self.exit_code

    def finish(self):
        """EOS through the pipeline, so that the last HLS segment and the playlist are written;
        at most 5 s."""
        if self.exit_code:
            return
        self.pipeline.send_event(Gst.Event.new_eos())
        msg = self.pipeline.get_bus().timed_pop_filtered(
            5 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR)
        if msg is None:
            print("restore-server: no EOS within 5 s, stopping anyway", flush=True)

    def stop_on_signal(self):
        print("restore-server: signal, stopping", flush=True)
        self.loop.quit()
        return False


def main(argv):
    args = parse_args(argv)
    Gst.init(None)
    if Gst.ElementFactory.find("lightsrscale") is None:
        print("restore-server: the lightsrscale plugin is not found: build it (cargo build --release) "
              "or install it (meson install), or set GST_PLUGIN_PATH", file=sys.stderr)
        return 1
    for factory in ("srtsrc", "srtsink", "hlssink2", "x264enc", "avdec_h264", "tsdemux"):
        if Gst.ElementFactory.find(factory) is None:
            print(f"restore-server: GStreamer element {factory} is missing: install "
                  "gstreamer1.0-plugins-bad, -ugly and gstreamer1.0-libav", file=sys.stderr)
            return 1
    return Server(args).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
