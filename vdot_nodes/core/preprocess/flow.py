"""Weight-free optical flow control video: OpenCV DIS / Farnebäck flow, rendered with the
Middlebury (Baker et al. 2011) colour wheel exactly as RAFT's ``flow_viz.py`` does.

VACE's flow condition is RAFT flow between consecutive frames, rendered per frame by
``flow_viz.flow_to_image`` (normalised by that frame's largest flow vector), and made as long as the
video by **prepending a copy of the first rendering** (``FlowVisAnnotator``:
``vis[:1] + vis``). So with ``pad="first"`` (default, VACE):

    out[0] = flow(0 → 1),  out[t] = flow(t−1 → t) for t ≥ 1

and with ``pad="last"``: ``out[t] = flow(t → t+1)`` for t < F−1 and ``out[F−1] = flow(F−2 → F−1)``.
A one-frame video gets zero flow (renders white). Flow vectors are (dx, dy) in pixels of the frames
given, x right, y down: frame t+1 at ``p + flow(p)`` shows what frame t shows at ``p``.

Both OpenCV methods are deterministic (same input → bit-identical output).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import VDOTInputError
from .video_ops import (DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, batch_ranges, check_cancel, check_video, cv2,
                        uint8_to_video, video_to_uint8)

FLOW_METHODS = ("dis", "farneback")
FLOW_PADS = ("first", "last")
DIS_PRESETS = ("ultrafast", "fast", "medium")

# Middlebury colour-wheel segment lengths (red→yellow→green→cyan→blue→magenta→red).
RY, YG, GC, CB, BM, MR = 15, 6, 4, 11, 13, 6


def make_colorwheel() -> np.ndarray:
    """The 55×3 Middlebury colour wheel (float64, 0..255), identical to RAFT's ``make_colorwheel``."""
    ncols = RY + YG + GC + CB + BM + MR
    wheel = np.zeros((ncols, 3))
    col = 0
    wheel[0:RY, 0] = 255
    wheel[0:RY, 1] = np.floor(255 * np.arange(0, RY) / RY)
    col += RY
    wheel[col:col + YG, 0] = 255 - np.floor(255 * np.arange(0, YG) / YG)
    wheel[col:col + YG, 1] = 255
    col += YG
    wheel[col:col + GC, 1] = 255
    wheel[col:col + GC, 2] = np.floor(255 * np.arange(0, GC) / GC)
    col += GC
    wheel[col:col + CB, 1] = 255 - np.floor(255 * np.arange(CB) / CB)
    wheel[col:col + CB, 2] = 255
    col += CB
    wheel[col:col + BM, 2] = 255
    wheel[col:col + BM, 0] = np.floor(255 * np.arange(0, BM) / BM)
    col += BM
    wheel[col:col + MR, 2] = 255 - np.floor(255 * np.arange(MR) / MR)
    wheel[col:col + MR, 0] = 255
    return wheel


_WHEEL = make_colorwheel()


def wheel_color(dx: float, dy: float) -> np.ndarray:
    """Fully saturated wheel colour (float 0..1, RGB) for flow direction (dx, dy) — RAFT's mapping."""
    ncols = _WHEEL.shape[0]
    a = np.arctan2(-(np.float32(dy) + np.float32(0.0)), -np.float32(dx)) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = int(np.floor(fk))
    k1 = 0 if k0 + 1 == ncols else k0 + 1
    f = fk - k0
    return ((1 - f) * _WHEEL[k0] + f * _WHEEL[k1]) / 255.0


_WHEEL_01 = [np.ascontiguousarray(_WHEEL[:, c] / 255.0) for c in range(3)]


def _uv_to_colors(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """RAFT ``flow_uv_to_colors`` on normalised float32 u, v ``[H, W]`` → uint8 ``[H, W, 3]`` RGB.

    Same arithmetic and dtypes as RAFT (float32 angle/radius, float64 colour), so the uint8 output
    matches it; written per channel with ``np.take`` (a frame at a time is cache-friendly).
    """
    ncols = _WHEEL.shape[0]
    v = v + np.float32(0.0)  # -0.0 → +0.0 so pure +x flow is exactly the wheel's colour at index 0
    rad = np.sqrt(np.square(u) + np.square(v))
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int32)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = fk - k0  # float64, as in RAFT (float32 − int32)
    inside = rad <= 1
    out = np.empty(u.shape + (3,), np.uint8)
    for c in range(3):
        col = (1 - f) * np.take(_WHEEL_01[c], k0) + f * np.take(_WHEEL_01[c], k1)
        col = np.where(inside, 1 - rad * (1 - col), col * 0.75)  # out of range: darkened, as RAFT
        out[..., c] = np.floor(255 * col)
    return out


def flow_to_color_uint8(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Flow ``[..., H, W, 2]`` → uint8 ``[..., H, W, 3]`` RGB (the numpy core of :func:`flow_to_color`)."""
    flow = np.asarray(flow, dtype=np.float32)
    lead = flow.shape[:-3]
    frames = flow.reshape((-1,) + flow.shape[-3:])
    out = np.empty(frames.shape[:-1] + (3,), np.uint8)
    for i, fr in enumerate(frames):
        u, v = fr[..., 0], fr[..., 1]
        if max_magnitude is None:  # per frame, as RAFT's flow_to_image: rad_max + 1e-5
            scale = np.sqrt(np.square(u) + np.square(v)).max() + np.float32(1e-5)
        else:
            scale = np.float32(max_magnitude)
        out[i] = _uv_to_colors(u / scale, v / scale)
    return out.reshape(lead + out.shape[1:])


def flow_to_color(flow, max_magnitude: float | None = None) -> torch.Tensor:
    """Flow ``[F, H, W, 2]`` (or ``[H, W, 2]``; torch or numpy) → ``[F, H, W, 3]`` float 0..1.

    Middlebury colour wheel as RAFT's ``flow_viz.flow_to_image``: direction → hue, magnitude →
    saturation (zero flow is white); magnitudes are divided by ``max_magnitude``, or with None by
    each frame's largest vector (RAFT/VACE). Vectors longer than ``max_magnitude`` are drawn at 75 %
    brightness, as RAFT does. Output values are RAFT's uint8 colours / 255.
    """
    if isinstance(flow, torch.Tensor):
        flow = flow.detach().to("cpu", torch.float32).numpy()
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim == 3:
        flow = flow[None]
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise VDOTInputError("flow", f"expected [frames, height, width, 2], got shape {flow.shape}",
                             "pass the output of optical_flow()")
    if not np.isfinite(flow).all():
        raise VDOTInputError("flow", "contains NaN or infinite values", "check the flow source")
    if max_magnitude is not None:
        if not (np.isfinite(max_magnitude) and max_magnitude > 0):
            raise VDOTInputError("max_magnitude", f"must be > 0, got {max_magnitude}",
                                 "use None (per-frame, as VACE) or a flow length in pixels, e.g. 20")
    return uint8_to_video(flow_to_color_uint8(flow, max_magnitude))


# -------------------------------------------------------------------------------------- estimation
def _make_estimator(method: str, preset: str):
    cv = cv2()
    if method == "dis":
        if preset not in DIS_PRESETS:
            raise VDOTInputError("preset", f"unknown DIS preset {preset!r}", f"use one of {', '.join(DIS_PRESETS)}")
        dis = cv.DISOpticalFlow_create(getattr(cv, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
        return lambda a, b: dis.calc(a, b, None)
    if method == "farneback":
        return lambda a, b: cv.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15,
                                                        iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
    raise VDOTInputError("method", f"unknown flow method {method!r}", f"use one of {', '.join(FLOW_METHODS)}")


def _iter_flows(video: torch.Tensor, method: str, preset: str, batch_size: int,
                cancel: CancelFn | None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(pairs_done, flows [B, H, W, 2] float32)`` for consecutive pairs (t → t+1), in batches."""
    cv = cv2()
    estimate = _make_estimator(method, preset)
    pairs = video.shape[0] - 1
    for start, stop in batch_ranges(pairs, batch_size):
        check_cancel(cancel)
        frames = video_to_uint8(video[start:stop + 1])
        grey = [cv.cvtColor(f, cv.COLOR_RGB2GRAY) for f in frames]
        flows = np.stack([estimate(grey[i], grey[i + 1]) for i in range(len(grey) - 1)])
        yield stop, flows


def _check_opts(method: str, preset: str, pad: str) -> None:
    if method not in FLOW_METHODS:
        raise VDOTInputError("method", f"unknown flow method {method!r}", f"use one of {', '.join(FLOW_METHODS)}")
    if preset not in DIS_PRESETS:
        raise VDOTInputError("preset", f"unknown DIS preset {preset!r}", f"use one of {', '.join(DIS_PRESETS)}")
    if pad not in FLOW_PADS:
        raise VDOTInputError("pad", f"unknown value {pad!r}",
                             "use 'first' (VACE: out[t] = flow t-1→t, first repeated) or 'last' (out[t] = flow t→t+1)")


def _frames_done(pairs_done: int, total_frames: int) -> int:
    return min(total_frames, pairs_done + 1)


def _flow_batches(video, method, preset, pad, batch_size, progress, cancel):
    """Yield ``(out_start, flows)`` placing pair flows at output indices per ``pad``; covers all F."""
    video = check_video(video)
    total = video.shape[0]
    _check_opts(method, preset, pad)
    if total == 1:
        check_cancel(cancel)
        yield 0, np.zeros((1, video.shape[1], video.shape[2], 2), np.float32)
        if progress is not None:
            progress(1, 1)
        return
    offset = 1 if pad == "first" else 0  # pair i (i → i+1) lands at output i + offset
    for pairs_done, flows in _iter_flows(video, method, preset, batch_size, cancel):
        first_pair = pairs_done - flows.shape[0]
        if pad == "first" and first_pair == 0:
            yield 0, flows[:1]
        yield first_pair + offset, flows
        if pad == "last" and pairs_done == total - 1:
            yield total - 1, flows[-1:]
        if progress is not None:
            progress(_frames_done(pairs_done, total), total)


def optical_flow(video: torch.Tensor, *, method: str = "dis", preset: str = "medium", pad: str = "first",
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
                 cancel: CancelFn | None = None) -> torch.Tensor:
    """Dense flow between consecutive frames → ``[F, H, W, 2]`` float32 (dx, dy) in pixels.

    ``method`` — "dis" (OpenCV DIS, ``preset`` ultrafast/fast/medium) or "farneback";
    ``pad`` — "first" (VACE: ``out[t]`` = flow t−1→t, ``out[0]`` = flow 0→1) or "last"
    (``out[t]`` = flow t→t+1, last frame repeats the previous). Computed on OpenCV greyscale.
    """
    video = check_video(video)
    out = torch.empty((video.shape[0], video.shape[1], video.shape[2], 2), dtype=torch.float32)
    for start, flows in _flow_batches(video, method, preset, pad, batch_size, progress, cancel):
        out[start:start + flows.shape[0]] = torch.from_numpy(flows)
    return out


def flow_video(video: torch.Tensor, *, method: str = "dis", preset: str = "medium", pad: str = "first",
               max_magnitude: float | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
               progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> torch.Tensor:
    """Colourised flow control video ``[F, H, W, 3]`` (:func:`optical_flow` + :func:`flow_to_color`)."""
    video = check_video(video)
    if max_magnitude is not None and not (np.isfinite(max_magnitude) and max_magnitude > 0):
        raise VDOTInputError("max_magnitude", f"must be > 0, got {max_magnitude}",
                             "leave unset (per-frame, as VACE) or give a flow length in pixels, e.g. 20")
    out = torch.empty((video.shape[0], video.shape[1], video.shape[2], 3), dtype=torch.float32)
    for start, flows in _flow_batches(video, method, preset, pad, batch_size, progress, cancel):
        out[start:start + flows.shape[0]] = uint8_to_video(flow_to_color_uint8(flows, max_magnitude))
    return out
