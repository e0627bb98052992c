# SPDX-License-Identifier: MPL-2.0
"""Degradations: what happens to a picture between the camera and the element.

* Single images: MATLAB-style antialiased bicubic downscaling (`imresize`, as BasicSR's
  matlab_functions), JPEG and one-frame H.264 round trips (the seed's clean / degraded pairs).
* Video clips (`ClipParams`, `sample_clip_params`, `motion_clip`, `degrade_clip`): what the
  element's users feed it. A clip of 5-15 frames is cut from an HR photograph along a random
  sub-pixel camera path (so P- and B-frames see real motion), optionally blurred / noised /
  resized (Real-ESRGAN's first order, noise capped near sigma 10), downscaled by the scale
  with area / bilinear / bicubic / MATLAB bicubic, and sent through a **real video codec** in
  yuv420p with PyAV (libx264 mostly, CRF uniform in [18, 45]; some libx265 at CRF + 5; a
  little mpeg2video / mpeg4 by bits per pixel; varied presets, GOP lengths, B-frames or not).
  The parameters are drawn once per clip and drift a little per frame; about 20% of the clips
  stay clean so clean input does not get worse.

`codec_roundtrip` is also what freezes the evaluation bitstreams (`lightsr.clips`).
"""
from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image


class DataError(RuntimeError):
    """A data problem the user can fix (missing package, bad size, bad spec); the message says what and how."""


# --------------------------------------------------------------------------------------
# MATLAB imresize (bicubic, antialiased), as BasicSR's matlab_functions
# --------------------------------------------------------------------------------------
def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic kernel with a = -0.5 (MATLAB's `cubic`)."""
    absx = x.abs()
    absx2, absx3 = absx ** 2, absx ** 3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return inner + outer


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> torch.Tensor:
    """Dense (out_len, in_len) float64 matrix of MATLAB imresize's bicubic weights.

    Out-of-range taps are folded back with MATLAB's symmetric padding, so a row sums to 1.
    """
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None]
    dist = u[:, None] - indices
    weights = scale * cubic(dist * scale) if shrink else cubic(dist)
    weights = weights / weights.sum(1, keepdim=True)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    folded = mirror[(indices.long() - 1) % (2 * in_len)]
    matrix = torch.zeros(out_len, in_len, dtype=torch.float64)
    return matrix.scatter_add_(1, folded, weights)


def imresize(img: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """MATLAB `imresize(img, scale, 'bicubic')` of a (C, H, W) or (H, W) float tensor.

    Output size is ceil(scale * size), as MATLAB. Computed in float64; no rounding or clamping.
    """
    squeeze = img.dim() == 2
    x = img[None].double() if squeeze else img.double()
    _, h, w = x.shape
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    rows = resize_matrix(h, out_h, scale, antialias)
    cols = resize_matrix(w, out_w, scale, antialias)
    out = torch.einsum("oh,chw,pw->cop", rows, x, cols)
    return out[0] if squeeze else out


def downscale_u8(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR image (uint8 HWC) of an HR image whose sides are multiples of `scale`."""
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise DataError(f"HR size {hr.shape[:2]} is not a multiple of scale {scale}: mod-crop it first")
    chw = torch.from_numpy(np.ascontiguousarray(hr.transpose(2, 0, 1)))
    lr = imresize(chw, 1.0 / scale)
    return lr.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[0] - img.shape[0] % scale, img.shape[1] - img.shape[1] % scale
    return img[:h, :w]


# --------------------------------------------------------------------------------------
# Single-image compression (the seed's pre-built LR variants)
# --------------------------------------------------------------------------------------
def jpeg_degrade(img: np.ndarray, quality: int) -> np.ndarray:
    """Round trip of a uint8 RGB image through PIL's JPEG encoder at `quality` (1..95)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()


def h264_degrade(img: np.ndarray, qp: int) -> np.ndarray:
    """Round trip of a uint8 RGB image as one H.264 intra frame at constant QP (x264enc).

    I420 needs even sides: the frame is edge-padded to even size, then cropped back.
    """
    if shutil.which("gst-launch-1.0") is None:
        raise DataError("gst-launch-1.0 not found: install gstreamer1.0-tools and gstreamer1.0-plugins-ugly")
    h, w = img.shape[:2]
    padded = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.png", Path(tmp) / "out.png"
        Image.fromarray(padded).save(src)
        pipeline = (f"filesrc location={src} ! pngdec ! imagefreeze num-buffers=1 ! videoconvert "
                    f"! video/x-raw,format=I420 ! x264enc pass=quant quantizer={int(qp)} "
                    f"speed-preset=medium ! h264parse ! avdec_h264 ! videoconvert "
                    f"! video/x-raw,format=RGB ! pngenc ! filesink location={dst}")
        run = subprocess.run(["gst-launch-1.0", "-q", *pipeline.split()], capture_output=True, text=True,
                             timeout=120)
        if run.returncode != 0 or not dst.exists():
            raise DataError(f"H.264 round trip failed (x264enc/avdec_h264 missing? install "
                                   f"gstreamer1.0-plugins-ugly gstreamer1.0-libav): {run.stderr.strip()[-400:]}")
        out = np.asarray(Image.open(dst).convert("RGB")).copy()
    return out[:h, :w]


def parse_degradation(spec: str) -> tuple[str, int]:
    """'jpeg:40' -> ('jpeg', 40); 'h264:38' -> ('h264', 38)."""
    match = re.fullmatch(r"(jpeg|h264):(\d+)", spec)
    if not match:
        raise DataError(f"degradation '{spec}': expected jpeg:QUALITY (1..95) or h264:QP (0..51)")
    kind, value = match.group(1), int(match.group(2))
    if (kind == "jpeg" and not 1 <= value <= 95) or (kind == "h264" and not 0 <= value <= 51):
        raise DataError(f"degradation '{spec}': value out of range (jpeg 1..95, h264 QP 0..51)")
    return kind, value


def degrade(img: np.ndarray, degradation: str) -> np.ndarray:
    kind, value = parse_degradation(degradation)
    return jpeg_degrade(img, value) if kind == "jpeg" else h264_degrade(img, value)


# --------------------------------------------------------------------------------------
# Video clips: parameters per clip
# --------------------------------------------------------------------------------------
CODECS = ("libx264", "libx265", "mpeg2video", "mpeg4", "none")
DOWNSCALERS = ("area", "bilinear", "bicubic", "matlab")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


@dataclass
class ClipParams:
    """Everything that degrades one clip; `quality` is the CRF (x264 / x265) or, for mpeg2video /
    mpeg4, bits per pixel x 1000 (rate-controlled by bitrate = bpp * w * h * fps)."""
    codec: str = "none"
    quality: float = 0.0
    preset: str = "medium"
    gop: int = 250
    bframes: int = 0
    downscaler: str = "matlab"
    blur_sigma: float = 0.0  # Gaussian blur on the HR-scale frame (0: none)
    noise_sigma: float = 0.0  # Gaussian noise on the LR frame, grey levels (0: none)
    resize: float = 1.0  # first-order resize of the LR frame before the codec, undone after (1: none)
    drift: float = 0.0  # relative per-frame drift of blur, noise and resize

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.codec == "none":
            return "clean"
        q = f"crf {self.quality:g}" if self.codec in ("libx264", "libx265") else f"{self.quality / 1000:.3f} bpp"
        return f"{self.codec} {q} {self.preset} gop {self.gop} bf {self.bframes}"


def sample_clip_params(rng: np.random.Generator, clean_prob: float = 0.2,
                       crf_range: tuple[float, float] = (18.0, 45.0)) -> ClipParams:
    """One clip's degradation, drawn as issue 12 / Real-ESRGAN's first order suggest."""
    p = ClipParams(downscaler=str(rng.choice(DOWNSCALERS, p=[0.35, 0.15, 0.2, 0.3])))
    if rng.random() < 0.3:
        p.blur_sigma = float(rng.uniform(0.3, 1.5))
    if rng.random() < 0.25:
        p.noise_sigma = float(rng.uniform(1.0, 10.0))
    if rng.random() < 0.2:
        p.resize = float(rng.uniform(0.7, 1.0))
    p.drift = float(rng.uniform(0.0, 0.05))
    if rng.random() < clean_prob:
        return p
    u = rng.random()
    p.codec = "libx264" if u < 0.75 else "libx265" if u < 0.9 else str(rng.choice(("mpeg2video", "mpeg4")))
    if p.codec == "libx264":
        p.quality = float(rng.uniform(*crf_range))
        p.preset = str(rng.choice(X264_PRESETS))
    elif p.codec == "libx265":
        p.quality = float(min(51.0, rng.uniform(*crf_range) + 5))
        p.preset = str(rng.choice(("ultrafast", "superfast", "veryfast", "fast")))
    else:
        p.quality = float(rng.uniform(40.0, 250.0))  # 0.04..0.25 bits per pixel
        p.preset = "-"
    p.gop = int(rng.choice((8, 12, 30, 60, 250)))
    p.bframes = 0 if rng.random() < 0.35 else int(rng.integers(1, 4))
    return p


# --------------------------------------------------------------------------------------
# Video clips: camera motion, per-frame degradations, the codec
# --------------------------------------------------------------------------------------
def textured_centre(photo: np.ndarray, size: tuple[int, int], margin: float, rng: np.random.Generator,
                    candidates: int = 16) -> tuple[float, float]:
    """A window centre (x, y) drawn among `candidates` uniform ones with probability proportional to
    the window's mean gradient magnitude: wallpapers are mostly sky, bokeh and walls, and a network
    learns little from flat crops (BasicSR's DIV2K crops are textured by construction)."""
    h, w = size
    ph, pw = photo.shape[:2]
    grey = photo.astype(np.float32).mean(2)
    grad = np.zeros_like(grey)
    grad[:-1, :-1] = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    integral = np.pad(grad.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    xs = rng.uniform(margin + w / 2, pw - margin - w / 2, candidates)
    ys = rng.uniform(margin + h / 2, ph - margin - h / 2, candidates)
    t, l = (ys - h / 2).astype(int), (xs - w / 2).astype(int)
    energy = np.maximum(integral[t + h, l + w] - integral[t, l + w] - integral[t + h, l] + integral[t, l], 0) + 1e-3
    pick = rng.choice(candidates, p=energy / energy.sum())
    return float(xs[pick]), float(ys[pick])


def motion_clip(photo: np.ndarray, size: tuple[int, int], frames: int, rng: np.random.Generator,
                max_speed: float = 3.0, textured: bool = False) -> list[np.ndarray]:
    """`frames` HR frames of `size` (h, w) cut from `photo` along a random sub-pixel camera path:
    constant velocity up to `max_speed` HR pixels a frame, a little shake, and a slow zoom; the
    start is uniform over the photo, or biased to texture (`textured_centre`).
    Frames are resampled with Lanczos (cv2) from a region around the path."""
    h, w = size
    ph, pw = photo.shape[:2]
    vx, vy = rng.uniform(-max_speed, max_speed, 2)
    zoom_rate = rng.normal(0.0, 0.002)
    reach = max_speed * frames + 8
    if ph < h + 2 * reach or pw < w + 2 * reach:
        raise DataError(f"photo {pw}x{ph} too small for {w}x{h} frames moving {frames} frames: "
                        f"use smaller frames or fewer of them")
    if textured:
        cx, cy = textured_centre(photo, size, reach, rng)
    else:
        cx = rng.uniform(reach + w / 2, pw - reach - w / 2)
        cy = rng.uniform(reach + h / 2, ph - reach - h / 2)
    out = []
    for t in range(frames):
        zoom = 1.0 + zoom_rate * t
        x = cx + vx * t + rng.normal(0, 0.25)
        y = cy + vy * t + rng.normal(0, 0.25)
        # output pixel (u, v) shows photo point ((u - w/2) / zoom + x, (v - h/2) / zoom + y)
        matrix = np.array([[zoom, 0.0, w / 2 - zoom * x], [0.0, zoom, h / 2 - zoom * y]])
        out.append(cv2.warpAffine(photo, matrix, (w, h), flags=cv2.INTER_LANCZOS4,
                                  borderMode=cv2.BORDER_REFLECT101))
    return out


def _downscale(img: np.ndarray, size: tuple[int, int], how: str) -> np.ndarray:
    h, w = size
    if how == "matlab" and img.shape[0] % h == 0 and img.shape[0] // h == img.shape[1] // w \
            and img.shape[1] % w == 0:
        return downscale_u8(img, img.shape[0] // h)
    flag = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
            "matlab": cv2.INTER_AREA}[how]
    return cv2.resize(img, (w, h), interpolation=flag)


def _drifted(value: float, drift: float, rng: np.random.Generator) -> float:
    return value * float(1.0 + drift * rng.standard_normal())


def degrade_clip(hr_frames: list[np.ndarray], scale: int, params: ClipParams, rng: np.random.Generator,
                 fps: int = 25) -> list[np.ndarray]:
    """LR frames (uint8 RGB, HR size / scale) of a clip: blur, downscale, resize, noise per frame
    (each drifting a little), then one codec pass over the whole clip."""
    h, w = hr_frames[0].shape[:2]
    if h % scale or w % scale:
        raise DataError(f"clip frames {w}x{h} are not a multiple of scale {scale}")
    lh, lw = h // scale, w // scale
    lr = []
    for frame in hr_frames:
        img = frame
        if params.blur_sigma > 0:
            sigma = max(0.1, _drifted(params.blur_sigma, params.drift, rng))
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        img = _downscale(img, (lh, lw), params.downscaler)
        if params.resize < 1.0:
            factor = min(1.0, _drifted(params.resize, params.drift, rng))
            small = (max(2, round(lh * factor)), max(2, round(lw * factor)))
            img = cv2.resize(cv2.resize(img, small[::-1], interpolation=cv2.INTER_AREA), (lw, lh),
                             interpolation=cv2.INTER_LINEAR)
        if params.noise_sigma > 0:
            sigma = max(0.0, _drifted(params.noise_sigma, params.drift, rng))
            img = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)
        lr.append(np.ascontiguousarray(img))
    if params.codec == "none":
        return lr
    return decode_bitstream(encode_clip(lr, params, fps))


def _require_av():
    try:
        import av  # noqa: PLC0415
    except ImportError:
        raise DataError("PyAV is not installed: `pip install av` (tests/setup.sh installs it into .venv)") \
            from None
    av.logging.set_level(av.logging.ERROR)
    return av


# BT.601 studio range, as GStreamer's videoconvert does for SD I420 (what decodebin ! videoconvert
# hands the element). swscale's default RGB <-> yuv420p conversion (PyAV's reformat) truncates and
# shifts luma by about -1.1 grey levels on a round trip, which a network learns to undo, and then
# brightens every clean frame (model/REPORT.md); so the conversion is done here, rounded.
# MATLAB's rgb2ycbcr rows over 255 (the offsets 16, 128, 128 are added apart)
RGB_TO_YCBCR = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3), even sides -> yuv420p planes as PyAV lays them out, (h * 3 / 2, w)."""
    h, w = rgb.shape[:2]
    ycc = rgb.astype(np.float64) @ RGB_TO_YCBCR.T + np.array([16.0, 128.0, 128.0])
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))  # 2x2 box, centre-sited
    planes = [ycc[..., 0].reshape(-1), chroma[..., 0].reshape(-1), chroma[..., 1].reshape(-1)]
    return np.clip(np.rint(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def yuv420_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_yuv420`: chroma upsampled bilinearly (centre-sited), rounded to uint8 RGB."""
    h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
    flat = yuv.reshape(-1)
    y = flat[: h * w].reshape(h, w).astype(np.float64)
    q = (h // 2) * (w // 2)
    cb, cr = (cv2.resize(flat[h * w + i * q: h * w + (i + 1) * q].reshape(h // 2, w // 2).astype(np.float32),
                         (w, h), interpolation=cv2.INTER_LINEAR) for i in (0, 1))
    ycc = np.stack([y - 16.0, cb - 128.0, cr - 128.0], axis=-1)
    return np.clip(np.rint(ycc @ _YCBCR_TO_RGB.T), 0, 255).astype(np.uint8)


def encode_clip(frames: list[np.ndarray], params: ClipParams, fps: int = 25) -> bytes:
    """A Matroska bitstream of `frames` (uint8 RGB, even sides) in yuv420p with `params.codec`."""
    av = _require_av()
    if params.codec not in CODECS or params.codec == "none":
        raise DataError(f"codec '{params.codec}': one of {CODECS[:-1]}")
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:
        raise DataError(f"yuv420p needs even frame sides, got {w}x{h}")
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        stream = container.add_stream(params.codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        ctx = stream.codec_context
        ctx.gop_size = int(params.gop)
        if params.codec == "libx264":
            stream.options = {"crf": f"{params.quality:.2f}", "preset": params.preset,
                              "bf": str(params.bframes), "threads": "1"}
        elif params.codec == "libx265":
            stream.options = {"crf": f"{params.quality:.2f}", "preset": params.preset,
                              "x265-params": f"log-level=error:bframes={params.bframes}:keyint={params.gop}"
                                             f":pools=1:frame-threads=1"}
        else:
            ctx.bit_rate = max(8000, int(params.quality / 1000 * w * h * fps))
            ctx.max_b_frames = int(params.bframes) if params.codec == "mpeg2video" else 0
            stream.options = {"threads": "1"}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420(rgb), format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def decode_bitstream(data: bytes | Path) -> list[np.ndarray]:
    """Every frame of a bitstream (bytes or a file) as uint8 RGB, in presentation order."""
    av = _require_av()
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else str(data)
    with av.open(source) as container:
        frames = []
        for f in container.decode(video=0):
            if f.format.name != "yuv420p":
                f = f.reformat(format="yuv420p")
            frames.append((f.pts, yuv420_to_rgb(f.to_ndarray())))
    frames.sort(key=lambda pf: pf[0] if pf[0] is not None else 0)
    return [np.ascontiguousarray(f) for _, f in frames]
