# SPDX-License-Identifier: MPL-2.0
"""Image-quality metrics as the super-resolution literature computes them.

PSNR / SSIM on the Y channel (ITU-R BT.601, MATLAB `rgb2ycbcr`, border = scale cropped) and
NIQE with the official MATLAB pristine-model parameters follow BasicSR 1.4.2
(`basicsr/metrics/psnr_ssim.py`, `niqe.py`, `utils/matlab_functions.py`, Apache-2.0), so the
numbers are comparable with published tables. BRISQUE comes from the `brisque` PyPI package,
which ships its trained SVM; without it the metric is reported as unavailable.

Images are numpy arrays, HWC RGB, values 0..255 (uint8 or float).
"""
import io
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve, correlate1d
from scipy.special import gamma

NIQE_PARAMS_FILE = "niqe_pris_params.npz"
NIQE_SDIST = "basicsr==1.4.2"
NIQE_SDIST_MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"


# --------------------------------------------------------------------------- colour, PSNR, SSIM
def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of MATLAB's rgb2ycbcr (BT.601, studio range 16..235) for RGB 0..255, as float64."""
    img = np.asarray(img, dtype=np.float64) / 255.0
    return img @ np.array([65.481, 128.553, 24.966]) + 16.0


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def _check_pair(img: np.ndarray, ref: np.ndarray) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs reference {ref.shape}; "
                         "compare an SR output with the HR image it reconstructs (same size)")


def psnr_y(img: np.ndarray, ref: np.ndarray, border: int = 0) -> float:
    """PSNR (dB) on Y, `border` pixels cropped on each side (BasicSR `calculate_psnr`)."""
    _check_pair(img, ref)
    a, b = _crop(rgb_to_y(img), border), _crop(rgb_to_y(ref), border)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation with `k`, keeping only the fully overlapping ('valid') part."""
    out = correlate1d(correlate1d(img, k, axis=0, mode="reflect"), k, axis=1, mode="reflect")
    r = len(k) // 2
    return out[r:-r, r:-r]


def ssim_y(img: np.ndarray, ref: np.ndarray, border: int = 0) -> float:
    """SSIM on Y with an 11x11 Gaussian window (sigma 1.5), BasicSR `calculate_ssim`."""
    _check_pair(img, ref)
    a, b = _crop(rgb_to_y(img), border), _crop(rgb_to_y(ref), border)
    if min(a.shape) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {a.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = _gaussian_1d()
    mu1, mu2 = _filter_valid(a, k), _filter_valid(b, k)
    s11 = _filter_valid(a * a, k) - mu1 ** 2
    s22 = _filter_valid(b * b, k) - mu2 ** 2
    s12 = _filter_valid(a * b, k) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return float(ssim_map.mean())


# --------------------------------------------------------------------------- MATLAB imresize
def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def matlab_resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """(out_len, in_len) matrix of MATLAB's bicubic `imresize` along one axis.

    Same weights as MATLAB (and BasicSR's port): a cubic kernel widened by 1/scale when
    downscaling with antialiasing, taps outside the image mirrored (symmetric padding).
    """
    width = 4.0 / scale if (scale < 1 and antialias) else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if (scale < 1 and antialias) else _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    src = idx.astype(np.int64) - 1  # MATLAB indices are 1-based
    period = 2 * in_len
    src = np.mod(src, period)
    src = np.where(src >= in_len, period - 1 - src, src)  # symmetric mirror: ... 1 0 | 0 1 ...
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), src.ravel()), w.ravel())
    return mat


def matlab_imresize(img: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """MATLAB `imresize(img, scale, 'bicubic')` of an HW or HWC float array, not rounded."""
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[:2]
    out_h, out_w = int(math.ceil(h * scale)), int(math.ceil(w * scale))
    mh = matlab_resize_matrix(h, out_h, scale, antialias)
    mw = matlab_resize_matrix(w, out_w, scale, antialias)
    out = np.tensordot(mh, img, axes=(1, 0))
    out = np.tensordot(mw, out, axes=(1, 1)).swapaxes(0, 1)
    return out


# --------------------------------------------------------------------------- NIQE
def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightsr"


def _candidate_params_paths() -> list[Path]:
    here = Path(__file__).resolve()
    repo = here.parents[2]
    paths = []
    if os.environ.get("LIGHTSR_NIQE_PARAMS"):
        paths.append(Path(os.environ["LIGHTSR_NIQE_PARAMS"]))
    paths += [repo / "shared" / "anchors" / NIQE_PARAMS_FILE,
              repo.parent / "shared" / "anchors" / NIQE_PARAMS_FILE,
              _default_cache_dir() / NIQE_PARAMS_FILE]
    return paths


def fetch_niqe_params(dest_dir: Path) -> Path:
    """Fetch the official NIQE parameters from the basicsr==1.4.2 source distribution on PyPI.

    Uses pip (`pip download --no-deps --no-binary basicsr`) and extracts only the .npz
    (BasicSR is Apache-2.0; the file holds MATLAB's pristine-model mean/covariance).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "basicsr",
               NIQE_SDIST, "-d", tmp, "-q"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("basicsr-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise RuntimeError(
                f"could not download {NIQE_SDIST} from PyPI to get {NIQE_PARAMS_FILE} "
                f"({done.stderr.strip()[-300:]}); put the file at {dest_dir / NIQE_PARAMS_FILE} "
                "or point LIGHTSR_NIQE_PARAMS at it")
        with tarfile.open(sdists[0]) as tar:
            data = tar.extractfile(NIQE_SDIST_MEMBER).read()
    out = dest_dir / NIQE_PARAMS_FILE
    out.write_bytes(data)
    return out


def niqe_params_path(fetch: bool = True) -> Path:
    """Where the official NIQE parameters are: env, shared anchors, cache; fetched if absent."""
    for p in _candidate_params_paths():
        if p.is_file():
            return p
    if not fetch:
        raise FileNotFoundError(f"{NIQE_PARAMS_FILE} not found in {[str(p) for p in _candidate_params_paths()]}")
    return fetch_niqe_params(_default_cache_dir())


class NiqeModel:
    """The pristine multivariate Gaussian of NIQE (Mittal et al. 2013) and its 7x7 window."""

    def __init__(self, path: Path | None = None):
        params = np.load(io.BytesIO(Path(path or niqe_params_path()).read_bytes()))
        self.mu = params["mu_pris_param"]
        self.cov = params["cov_pris_param"]
        self.window = params["gaussian_window"]

    def __call__(self, img: np.ndarray, border: int = 0) -> float:
        """NIQE of an RGB (HWC, 0..255) or Y (HW) image; lower is more natural."""
        img = np.asarray(img, dtype=np.float64)
        y = rgb_to_y(img) if img.ndim == 3 else img
        y = _crop(y, border).round()  # rounding as MATLAB's uint8 Y (BasicSR does the same)
        if (y.shape[0] // 96) * (y.shape[1] // 96) < 2:
            raise ValueError(f"NIQE needs at least two 96x96 blocks (e.g. 192x96 pixels after "
                             f"the border crop) to fit its Gaussian, got {y.shape[1]}x{y.shape[0]}")
        return niqe_of_y(y, self.mu, self.cov, self.window)


def _aggd_fit(block: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching fit of an asymmetric generalised Gaussian: (alpha, beta_l, beta_r).
    A flat block (all zeros) has no fit: its features come out NaN, and `niqe_of_y` leaves
    such blocks out (nanmean / NaN rows dropped), as BasicSR and MATLAB do."""
    block = block.ravel()
    gam = np.arange(0.2, 10.001, 0.001)
    r_gam = gamma(2 / gam) ** 2 / (gamma(1 / gam) * gamma(3 / gam))
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt(np.mean(block[block < 0] ** 2)) if (block < 0).any() else np.nan
        right_std = np.sqrt(np.mean(block[block > 0] ** 2)) if (block > 0).any() else np.nan
        gammahat = left_std / right_std
        rhat = np.mean(np.abs(block)) ** 2 / np.mean(block ** 2)
        rhatnorm = rhat * (gammahat ** 3 + 1) * (gammahat + 1) / (gammahat ** 2 + 1) ** 2
    alpha = gam[np.argmin((r_gam - rhatnorm) ** 2)]
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * spread, right_std * spread


def _block_features(block: np.ndarray) -> list[float]:
    """The 18 NSS features of one block: AGGD of MSCN coefficients and of 4 neighbour products."""
    alpha, bl, br = _aggd_fit(block)
    feat = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        alpha, bl, br = _aggd_fit(block * np.roll(block, shift, axis=(0, 1)))
        mean = (br - bl) * gamma(2 / alpha) / gamma(1 / alpha)
        feat += [alpha, mean, bl, br]
    return feat


def niqe_of_y(y: np.ndarray, mu_pris: np.ndarray, cov_pris: np.ndarray, window: np.ndarray,
              block: int = 96) -> float:
    """NIQE of a Y image (0..255) in 96x96 blocks without overlap, at scales 1 and 1/2."""
    nh, nw = y.shape[0] // block, y.shape[1] // block
    # float32 like BasicSR / MATLAB single: the AGGD grid search is discontinuous, so the
    # working precision decides ties and must match the reference implementation.
    img = np.asarray(y[: nh * block, : nw * block], dtype=np.float32)
    feats = []
    for scale in (1, 2):
        mu = convolve(img, window, mode="nearest")
        sigma = np.sqrt(np.abs(convolve(img ** 2, window, mode="nearest") - mu ** 2))
        mscn = (img - mu) / (sigma + 1)
        b = block // scale
        feats.append(np.array([_block_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b])
                               for j in range(nw) for i in range(nh)]))
        if scale == 1:
            img = matlab_imresize(img / np.float32(255), 0.5).astype(np.float32) * np.float32(255)
    dist = np.concatenate(feats, axis=1)
    mu_dist = np.nanmean(dist, axis=0)
    cov_dist = np.cov(dist[~np.isnan(dist).any(axis=1)], rowvar=False)
    diff = mu_pris - mu_dist
    quality = diff @ np.linalg.pinv((cov_pris + cov_dist) / 2) @ diff.T
    return float(np.sqrt(np.squeeze(quality)))


# --------------------------------------------------------------------------- BRISQUE
BRISQUE_MISSING = ("BRISQUE not computed: install the `brisque` package (it ships its trained SVM "
                   "model) with `pip install brisque libsvm-official opencv-python-headless`")


def brisque_scorer():
    """A callable RGB uint8 -> BRISQUE score (lower is better) from the `brisque` package's
    shipped SVM, or None if the package (or its OpenCV / libsvm backends) is missing.

    Reproduces `BRISQUE.score` (grey image, MSCN features at full and half size, SVR) but
    flattens each feature to a float first: brisque 0.2.0's own `score` fails on numpy >= 2.x
    (its features are 1-element arrays and `float()` no longer accepts those)."""
    try:
        import cv2  # noqa: PLC0415 (optional dependencies)
        from brisque import BRISQUE  # noqa: PLC0415
        from skimage.color import rgb2gray  # noqa: PLC0415
        model = BRISQUE(url=False)
    except Exception:  # ImportError, or a backend failing to load
        return None

    def score(img: np.ndarray) -> float:
        grey = rgb2gray(np.asarray(img, dtype=np.uint8))
        full = model.calculate_brisque_features(grey, kernel_size=7, sigma=7 / 6)
        half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        half = model.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6)
        feats = np.array([float(np.ravel(f)[0]) for f in np.concatenate((full, half))])
        return float(model.calculate_image_quality_score(feats))
    return score
