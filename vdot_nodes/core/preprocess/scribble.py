"""Weight-free scribble / line control videos: XDoG and Canny, with optional Zhang–Suen thinning.

VACE's scribble condition comes from a learned line extractor (``ScribbleAnnotator``: the
informative-drawings ``ContourInference`` generator). Its output is ``sigmoid(...) * 255`` with no
inversion, i.e. a line drawing — **dark strokes on a white background** (ControlNet's lineart
preprocessors run the same kind of generator and then invert it to white-on-black). These functions
give the same kind of signal without weights: thin strokes where the image has edges/dark lines,
flat background elsewhere. ``background="white"`` (default, :data:`SCRIBBLE_BACKGROUND`) matches
VACE; ``background="black"`` gives the ControlNet convention (white lines on black).

* :func:`scribble_xdog` — eXtended Difference of Gaussians (Winnemöller et al. 2012) on the
  OpenCV greyscale frame: ``D = G_σ − τ·G_kσ`` (intensities in 0..1); a pixel is a stroke where
  ``D < −threshold`` (the dark side of an edge, or a dark line), with strength
  ``tanh(φ·(−threshold − D))`` when ``phi`` is given (soft strokes) or 1 otherwise (hard, binary).
  Winnemöller's ``p`` form ``(1+p)·G_σ − p·G_kσ`` is the same with ``τ = p / (1 + p)``.
* :func:`scribble_canny` — ``cv2.Canny(low, high)`` on the RGB frame (max gradient over channels,
  as ControlNet's canny), optionally pre-blurred; already one pixel wide.
* :func:`zhang_suen_thin` — Zhang–Suen (1984) thinning of a binary mask to a one-pixel skeleton,
  vectorised with a 256-entry lookup table (``cv2.ximgproc`` is not in the headless wheel).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import VDOTInputError
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, cv2, map_frames

SCRIBBLE_BACKGROUNDS = ("white", "black")
SCRIBBLE_BACKGROUND = "white"  # VACE's ScribbleAnnotator: dark strokes on white


def _check_background(background: str) -> None:
    if background not in SCRIBBLE_BACKGROUNDS:
        raise VDOTInputError("background", f"unknown value {background!r}",
                             "use 'white' (VACE: dark strokes on white) or 'black' (white lines on black)")


def _positive(name: str, value: float, fix: str, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise VDOTInputError(name, f"must be a number, got {value!r}", fix) from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise VDOTInputError(name, f"must be {'≥ 0' if allow_zero else '> 0'}, got {value}", fix)
    return value


def _render(strength: np.ndarray, background: str) -> np.ndarray:
    """Stroke strength in 0..1 → uint8 ``[H, W]`` in the requested polarity."""
    lines = np.clip(strength * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return 255 - lines if background == "white" else lines


# ------------------------------------------------------------------------------------------ XDoG
def xdog_strength(grey: np.ndarray, sigma: float = 1.0, k: float = 1.6, tau: float = 1.0,
                  threshold: float = 0.02, phi: float | None = None) -> np.ndarray:
    """Stroke strength in 0..1 (float32 ``[H, W]``) of one greyscale frame (uint8 or float 0..1)."""
    cv = cv2()
    img = grey.astype(np.float32) / 255.0 if grey.dtype == np.uint8 else grey.astype(np.float32)
    g1 = cv.GaussianBlur(img, (0, 0), sigma, borderType=cv.BORDER_REPLICATE)
    g2 = cv.GaussianBlur(img, (0, 0), sigma * k, borderType=cv.BORDER_REPLICATE)
    excess = -threshold - (g1 - tau * g2)  # > 0 where the frame is darker than its surround
    if phi is None:
        return (excess > 0).astype(np.float32)
    return np.tanh(phi * np.maximum(excess, 0.0)).astype(np.float32)


def scribble_xdog(video: torch.Tensor, *, sigma: float = 1.0, k: float = 1.6, tau: float = 1.0,
                  threshold: float = 0.02, phi: float | None = None, thin: bool = False,
                  background: str = SCRIBBLE_BACKGROUND, batch_size: int = DEFAULT_BATCH_SIZE,
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> torch.Tensor:
    """XDoG strokes of every frame → ``[F, H, W, 3]`` (grey-level strokes replicated to RGB).

    ``sigma`` — inner Gaussian (px; larger = coarser, fewer strokes); ``k`` — outer/inner sigma
    ratio; ``tau`` — outer weight (1 = pure DoG; < 1 also darkens dark flat regions);
    ``threshold`` — how much darker than the surround (0..1 intensity) a pixel must be;
    ``phi`` — None for binary strokes, else tanh sharpness for soft strokes (e.g. 200);
    ``thin`` — Zhang–Suen thinning of the strokes to one pixel.
    """
    sigma = _positive("sigma", sigma, "use e.g. 1.0 (px)")
    k = _positive("k", k, "use e.g. 1.6")
    if k <= 1.0:
        raise VDOTInputError("k", f"must be > 1 (outer Gaussian wider than inner), got {k}", "use 1.6")
    tau = _positive("tau", tau, "use 1.0 (or 0.98)", allow_zero=True)
    threshold = _positive("threshold", threshold, "use e.g. 0.02", allow_zero=True)
    if phi is not None:
        phi = _positive("phi", phi, "use e.g. 200, or leave unset for binary strokes")
    _check_background(background)
    cv = cv2()

    def one(frame: np.ndarray) -> np.ndarray:
        strength = xdog_strength(cv.cvtColor(frame, cv.COLOR_RGB2GRAY), sigma, k, tau, threshold, phi)
        if thin:
            strength = strength * zhang_suen_thin(strength > 0)
        return _render(strength, background)

    return map_frames(video, one, batch_size=batch_size, progress=progress, cancel=cancel)


# ----------------------------------------------------------------------------------------- Canny
def scribble_canny(video: torch.Tensor, *, low: float = 100, high: float = 200, blur: float = 0.0,
                   thin: bool = False, background: str = SCRIBBLE_BACKGROUND,
                   batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
                   cancel: CancelFn | None = None) -> torch.Tensor:
    """Canny edges of every frame → ``[F, H, W, 3]``.

    ``low``/``high`` — hysteresis thresholds on the 0..255 gradient (ControlNet's defaults 100/200);
    ``blur`` — Gaussian sigma applied first (0 = none, as ControlNet); ``thin`` — Zhang–Suen (Canny
    edges are already thin; this only removes the odd corner pixel).
    """
    low = _positive("low", low, "use e.g. 100", allow_zero=True)
    high = _positive("high", high, "use e.g. 200", allow_zero=True)
    if low > high:
        raise VDOTInputError("low", f"({low}) is above high ({high})", "use low ≤ high, e.g. 100 and 200")
    blur = _positive("blur", blur, "use 0 (none) or e.g. 1.0", allow_zero=True)
    _check_background(background)
    cv = cv2()

    def one(frame: np.ndarray) -> np.ndarray:
        if blur > 0:
            frame = cv.GaussianBlur(frame, (0, 0), blur, borderType=cv.BORDER_REPLICATE)
        edges = cv.Canny(frame, low, high) > 0
        if thin:
            edges = zhang_suen_thin(edges)
        return _render(edges.astype(np.float32), background)

    return map_frames(video, one, batch_size=batch_size, progress=progress, cancel=cancel)


# ------------------------------------------------------------------------------------- thinning
# Neighbour order (clockwise from north): P2 N, P3 NE, P4 E, P5 SE, P6 S, P7 SW, P8 W, P9 NW.
_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _zhang_suen_luts() -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(256)
    bits = (codes[:, None] >> np.arange(8)[None, :]) & 1  # bits[:, i] = P(i+2)
    b = bits.sum(1)
    nxt = np.roll(bits, -1, axis=1)
    a = ((bits == 0) & (nxt == 1)).sum(1)  # 0→1 transitions in P2..P9,P2
    p2, p4, p6, p8 = bits[:, 0], bits[:, 2], bits[:, 4], bits[:, 6]
    base = (b >= 2) & (b <= 6) & (a == 1)
    first = base & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    second = base & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return first, second


_LUT_FIRST, _LUT_SECOND = _zhang_suen_luts()


def zhang_suen_thin(mask: np.ndarray, max_iterations: int = 100) -> np.ndarray:
    """Zhang–Suen thinning of a boolean ``[H, W]`` mask (returns a new boolean mask)."""
    img = np.pad(np.asarray(mask, dtype=bool), 1).astype(np.uint8)
    if not img.any():
        return np.zeros(np.shape(mask), dtype=bool)
    h, w = img.shape[0] - 2, img.shape[1] - 2
    for _ in range(max_iterations):
        changed = False
        for lut in (_LUT_FIRST, _LUT_SECOND):
            code = np.zeros((h, w), dtype=np.uint8)
            for bit, (dy, dx) in enumerate(_OFFSETS):
                code |= img[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] << bit
            centre = img[1:-1, 1:-1]
            delete = lut[code] & (centre == 1)
            if delete.any():
                centre[delete] = 0
                changed = True
        if not changed:
            break
    return img[1:-1, 1:-1].astype(bool)
