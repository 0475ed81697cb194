"""Shared plumbing for the frame-wise preprocessors (grey, scribble, flow, ...).

* :func:`check_video` — validate a ComfyUI video ``[F, H, W, 3]`` float in 0..1 (one image ``[H, W, 3]``
  is accepted as a 1-frame video).
* :func:`video_to_uint8` / :func:`uint8_to_video` — torch 0..1 ⇄ numpy uint8 (OpenCV's native type).
* :func:`fit_video` — the first ``frames`` frames, fitted to ``height``×``width`` (cover + centre crop).
* :func:`map_frames` — run a per-frame uint8 function over a video in batches, calling
  ``progress(done, total)`` after each batch and ``cancel()`` before each one (a true answer raises
  :class:`~vdot_nodes.core.errors.VDOTCancelled`).

OpenCV is imported lazily (:func:`cv2`) so that a broken OpenCV install — common in ComfyUI
environments with several ``opencv-*`` wheels — never stops the node pack from loading; only the
preprocessors that need it fail, with a message saying how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import VDOTCancelled, VDOTInputError

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

DEFAULT_BATCH_SIZE = 16


def cv2():
    """The ``cv2`` module, or a :class:`VDOTInputError` saying how to install it."""
    try:
        import cv2 as _cv2
    except Exception as exc:  # ImportError, or a binary conflict between opencv wheels
        raise VDOTInputError(
            "opencv", f"OpenCV could not be imported ({exc})",
            "pip install opencv-python-headless (and uninstall other opencv-* wheels if several are installed)",
        ) from None
    return _cv2


def check_video(video, name: str = "video") -> torch.Tensor:
    """A float32 CPU ``[F, H, W, 3]`` tensor in 0..1, or a :class:`VDOTInputError` naming ``name``."""
    if not isinstance(video, torch.Tensor):
        raise VDOTInputError(name, f"expected a torch tensor, got {type(video).__name__}",
                             "pass a ComfyUI IMAGE batch [frames, height, width, 3]")
    if video.ndim == 3:
        video = video.unsqueeze(0)
    if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
        raise VDOTInputError(name, f"expected [frames, height, width, 3], got shape {tuple(video.shape)}",
                             "pass RGB frames in ComfyUI IMAGE layout")
    if video.shape[0] == 0 or video.shape[1] == 0 or video.shape[2] == 0:
        raise VDOTInputError(name, f"is empty (shape {tuple(video.shape)})", "pass at least one non-empty frame")
    if video.shape[-1] == 1:
        video = video.expand(-1, -1, -1, 3)
    elif video.shape[-1] == 4:
        video = video[..., :3]
    video = video.detach().to("cpu", torch.float32)
    if not torch.isfinite(video.sum()) and not torch.isfinite(video).all():  # fast path: one sum
        raise VDOTInputError(name, "contains NaN or infinite values", "check the node/file that produced it")
    return video


def video_to_uint8(video: torch.Tensor) -> np.ndarray:
    """``[F, H, W, C]`` 0..1 → contiguous uint8 numpy (round half up, clamped)."""
    x = video.detach().to("cpu", torch.float32).clamp(0, 1)  # a new tensor: safe to modify in place
    return np.ascontiguousarray(x.mul_(255.0).add_(0.5).to(torch.uint8).numpy())


def uint8_to_video(array: np.ndarray) -> torch.Tensor:
    """uint8 numpy ``[F, H, W, C]`` (or ``[F, H, W]``, replicated to 3 channels) → float32 0..1."""
    if array.ndim == 3:
        array = np.repeat(array[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32).div_(255.0)


def resize_frames(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[F, H, W, C]`` resized to exactly height×width by the one frame resampler (``source_prep``)."""
    from ..source_prep import fit_clip

    return fit_clip(video, int(height), int(width), stretch=True)


def resolve_size(src_h: int, src_w: int, height: int | None, width: int | None) -> tuple[int, int]:
    """Target (height, width): missing sides keep the source aspect ratio (rounded, at least 1)."""
    for value, name in ((height, "height"), (width, "width")):
        if value is not None and (int(value) != value or value < 1):
            raise VDOTInputError(name, f"must be a positive integer, got {value}", "use e.g. 832 wide × 480 high")
    if height is None and width is None:
        return src_h, src_w
    if height is None:
        return max(1, round(src_h * width / src_w)), int(width)
    if width is None:
        return int(height), max(1, round(src_w * height / src_h))
    return int(height), int(width)


FIT_MODES = ("stretch", "crop", "pad")


def _crop_or_pad(video: torch.Tensor, height: int, width: int, mode: str, fill: float) -> torch.Tensor:
    """Aspect-preserving fit: ``crop`` scales to cover then centre-crops (the official VDOT loader's
    bicubic-antialias resize on 8-bit frames, :func:`~vdot_nodes.core.source_prep.fit_clip`); ``pad``
    scales to fit then centres on a ``fill`` canvas."""
    if mode == "crop":
        from ..source_prep import fit_clip

        return fit_clip(video, height, width)
    src_h, src_w = video.shape[1:3]
    scale = min(height / src_h, width / src_w)
    h, w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    video = resize_frames(video, h, w)
    out = torch.full((video.shape[0], height, width, video.shape[3]), fill, dtype=video.dtype)
    top, left = (height - h) // 2, (width - w) // 2
    out[:, top:top + h, left:left + w] = video
    return out


def fit_video(video: torch.Tensor, frames: int | None = None, height: int | None = None,
              width: int | None = None, name: str = "video", mode: str = "crop",
              fill: float = 0.0) -> torch.Tensor:
    """The first ``frames`` frames of ``video``, fitted to height×width (None keeps the aspect ratio).

    ``mode``: ``crop`` (default) keeps the aspect ratio, covering and centre-cropping with the one
    resize policy (:mod:`vdot_nodes.core.source_prep`: the official loader's bicubic + antialias on
    8-bit frames), so a control made here lines up with what ``vdot generate`` and training make of
    the same clip; ``pad`` keeps the aspect ratio and pads with ``fill``; ``stretch`` distorts to
    exactly height×width (both only when asked for, in VDOT Fit Video). Resizing happens *before* a
    preprocessor runs, so lines are one output pixel thin and flow is in output pixels. A video shorter
    than ``frames`` is an error rather than silently padded.
    """
    if mode not in FIT_MODES:
        raise VDOTInputError("mode", f"unknown fit mode {mode!r}", f"use one of {', '.join(FIT_MODES)}")
    video = check_video(video, name)
    if frames is not None:
        if int(frames) != frames or frames < 1:
            raise VDOTInputError("frames", f"must be a positive integer, got {frames}", "use e.g. 81 (4k+1)")
        if video.shape[0] < frames:
            raise VDOTInputError(name, f"has {video.shape[0]} frames but {frames} were asked for",
                                 f"ask for at most {video.shape[0]} frames or use a longer video")
        video = video[: int(frames)]
    h, w = resolve_size(video.shape[1], video.shape[2], height, width)
    if mode != "stretch" and (h, w) != tuple(video.shape[1:3]):
        return _crop_or_pad(video, h, w, mode, fill)
    return resize_frames(video, h, w)


def check_cancel(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise VDOTCancelled("preprocessing interrupted by the user")


def batch_ranges(total: int, batch_size: int) -> list[tuple[int, int]]:
    if int(batch_size) != batch_size or batch_size < 1:
        raise VDOTInputError("batch_size", f"must be a positive integer, got {batch_size}", f"use {DEFAULT_BATCH_SIZE}")
    return [(s, min(s + int(batch_size), total)) for s in range(0, total, int(batch_size))]


def map_frames(video: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray], *,
               batch_size: int = DEFAULT_BATCH_SIZE, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None, name: str = "video") -> torch.Tensor:
    """Apply ``fn`` (uint8 RGB ``[H, W, 3]`` → uint8 ``[H, W]`` or ``[H, W, 3]``) to every frame.

    Frames are converted to uint8 one batch at a time (bounded extra memory); ``cancel()`` is checked
    before each batch and ``progress(frames_done, total)`` called after it. Returns ``[F, H, W, 3]``
    float32 0..1 with the input's F, H, W.
    """
    video = check_video(video, name)
    total = video.shape[0]
    out = torch.empty((total, video.shape[1], video.shape[2], 3), dtype=torch.float32)
    for start, stop in batch_ranges(total, batch_size):
        check_cancel(cancel)
        frames = video_to_uint8(video[start:stop])
        results = np.stack([_as_rgb(fn(frame)) for frame in frames])
        out[start:stop] = uint8_to_video(results)
        if progress is not None:
            progress(stop, total)
    return out


def _as_rgb(result: np.ndarray) -> np.ndarray:
    if result.dtype != np.uint8:
        raise TypeError(f"frame function must return uint8, got {result.dtype}")
    if result.ndim == 2:
        return np.repeat(result[..., None], 3, axis=-1)
    return result
