"""Source preparation: how a user's video, mask and reference images become a VCU's pixels.

One policy, the one the official VDOT inference uses (``VaceVideoProcessor`` on its ``keep_last``
path and ``WanVace.prepare_source``), shared by the CLI, the Fit Video node (``crop`` mode) and the
training clip loader:

* **Frames** are sampled uniformly over the whole clip: timestamps ``linspace(0, duration, n)``
  with ``duration`` the midpoint of the last frame's (start, stop); each timestamp takes the first
  frame whose ``[start, stop]`` holds it (:func:`sample_frame_ids`). A clip of exactly ``n``
  frames keeps every frame.
* **Frame count and size** (:func:`official_shape`): in latent units (16 pixels per token:
  VAE 8 × patch 2; 4 frames per latent frame) ``area_z = min(seq_len, area/256, (h//16)·(w//16))``,
  ``latent frames = min((len−1)//4 + 1, int(seq_len/area_z))``, ``oh = round(sqrt(area_z·h/w))``,
  ``ow = int(area_z/oh)``, times 16. ``seq_len`` is ``21·area/256`` (32760 at 480·832), so a
  source with ``(h//16)·(w//16) ≥ 1560`` gives up to 81 frames near 480×832 keeping its aspect
  ratio, and a smaller source keeps its own size (rounded down to 16) and may get more frames
  within the same token budget.
* **Resize to cover** with bicubic + antialias on the 8-bit frames (torch's uint8 kernel, as the
  official loader runs it), then centre crop with floor offsets (:func:`cover_crop`). This resampler
  is the only one for frames: VDOT Fit Video's ``stretch`` / ``pad`` modes, asked for explicitly,
  use it too (:func:`resize_exact`); only references keep the official canvas arithmetic below.
* **Mask videos** use the same frame ids and crop; the mask is channel 0 mapped to
  ``clamp((x/127.5 − 1 + 1)/2, 0, 1)`` and stays soft (``preprocess.masks.image_to_mask``, the one
  image→mask conversion); the 0.5 threshold is applied where inactive/reactive are formed, the
  64-channel mask input gets the soft values.
* **References** go on a white canvas of the output size: ``vcu.place_on_white_canvas``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import VDOTInputError, VDOTMissingInput, input_ref

#: Frames per latent frame, then pixels per transformer token on each axis (VAE 8 × patch 2).
DOWNSAMPLE = (4, 16, 16)
FRAME_SAMPLING = ("uniform", "first")


@dataclass(frozen=True)
class SourcePolicy:
    """Target canvas and frame budget. ``height``×``width`` is the canvas without a source video
    and its area the target area with one; ``max_latent_frames`` sets the token budget
    ``seq_len = max_latent_frames · area / 256`` (the official 480×832 gives 21 → 32760)."""

    height: int
    width: int
    max_latent_frames: int

    @property
    def area(self) -> int:
        return self.height * self.width

    @property
    def seq_len(self) -> int:
        return self.max_latent_frames * self.area // (DOWNSAMPLE[1] * DOWNSAMPLE[2])

    @property
    def default_frames(self) -> int:
        return (self.max_latent_frames - 1) * DOWNSAMPLE[0] + 1


#: VDOT-14B / Wan2.1-VACE: 81 frames at 480×832 (``vace.py`` runs at this size).
OFFICIAL_POLICY = SourcePolicy(480, 832, 21)
#: The embedded toy model works at 64×64 and 5 frames; the same rule scaled to that area.
TOY_POLICY = SourcePolicy(64, 64, 2)


def official_shape(num_source_frames: int, src_height: int, src_width: int,
                   policy: SourcePolicy = OFFICIAL_POLICY) -> tuple[int, int, int]:
    """(frames, height, width) the official loader makes of a source of that length and size."""
    df, dh, dw = DOWNSAMPLE
    if src_height < dh or src_width < dw:
        raise VDOTInputError("source video", f"is {src_width}x{src_height}, smaller than {dw}x{dh}",
                             f"use a video at least {dw}x{dh} pixels")
    if num_source_frames < 1:
        raise VDOTInputError("source video", "has no frames", "check the file")
    seq_len = policy.seq_len
    # Same types as the official code: area/(dh*dw) is a float, the source term an int; min() keeps
    # the first of equal values, and round() is Python's (half to even).
    area_z = min(seq_len, policy.area / (dh * dw), (src_height // dh) * (src_width // dw))
    of = min((num_source_frames - 1) // df + 1, int(seq_len / area_z))
    target_area_z = min(area_z, int(seq_len / of))
    oh = round(float(np.sqrt(target_area_z * (src_height / src_width))))
    if oh < 1 or int(target_area_z / oh) < 1:
        raise VDOTInputError("source video", f"is {src_width}x{src_height}: too elongated for a "
                             f"{policy.width}x{policy.height}-area output", "crop it to a less extreme aspect ratio "
                             f"or give {input_ref('height')} and {input_ref('width')}")
    ow = int(target_area_z / oh)
    return (of - 1) * df + 1, oh * dh, ow * dw


def sample_frame_ids(timestamps: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` frames spread uniformly over the clip (the official ``keep_last`` sampling).

    ``timestamps``: float32 ``[N, 2]`` (start, stop) seconds per frame
    (:func:`vdot_nodes.core.video_io.probe_video`). Arithmetic as the official code runs it under its
    pinned NumPy 1.24: float32 duration, float64 linspace, inclusive ``start <= t <= stop``, first
    match. One deliberate difference: a timestamp in a gap between two frames (webm stores
    millisecond times, so a 24 fps frame spans 41 ms of a 41–42 ms step) takes the frame before the
    gap; the official code falls back to frame 0 there.
    """
    ts = np.asarray(timestamps, dtype=np.float32)
    if ts.ndim != 2 or ts.shape[1] != 2 or ts.shape[0] < 1:
        raise VDOTInputError("timestamps", f"expected [frames, 2], got {ts.shape}", "probe the video first")
    if n < 1:
        raise VDOTInputError("frames", f"must be at least 1, got {n}", "use 4k+1 frames, e.g. 81")
    duration = float(ts[-1].mean())
    times = np.linspace(0.0, duration, n, dtype=np.float64)
    inside = np.logical_and(times[:, None] >= ts[None, :, 0], times[:, None] <= ts[None, :, 1])
    before_gap = np.maximum(np.searchsorted(ts[:, 0], times, side="right") - 1, 0)
    return np.where(inside.any(axis=1), np.argmax(inside, axis=1), before_gap).tolist()


#: How VDOT Fit Video picks ``n`` of a clip's frames: the official spread over the whole clip, the
#: first ``n``, or ``n`` frames at a target frame rate from the start.
FIT_FRAME_SAMPLING = ("uniform", "first", "target_fps")


def fit_frame_ids(available: int, n: int, sampling: str = "uniform", source_fps: float | None = None,
                  target_fps: float | None = None, name: str = "images") -> list[int]:
    """Indices of ``n`` frames out of ``available`` (see :data:`FIT_FRAME_SAMPLING`).

    ``uniform`` is :func:`sample_frame_ids` on frames of equal duration (the rule ``vdot generate``
    applies to a source file); ``target_fps`` takes frame ``floor(k · source_fps / target_fps)``, so
    it needs the source's frame rate and never repeats a frame (a target above the source rate is an
    error). Too few frames is an error, never padding.
    """
    if sampling not in FIT_FRAME_SAMPLING:
        raise VDOTInputError("frame_sampling", f"unknown mode {sampling!r}", f"use one of {', '.join(FIT_FRAME_SAMPLING)}")
    if n < 1:
        raise VDOTInputError("num_frames", f"must be at least 1, got {n}", "use 4k+1 frames, e.g. 81")
    if sampling == "target_fps":
        if not source_fps or source_fps <= 0:
            raise VDOTMissingInput("fps", f"{input_ref('frame_sampling')} target_fps needs the source's frame rate",
                                   f"give the source's frame rate as {input_ref('fps')}, or set "
                                   f"{input_ref('frame_sampling')} to uniform or first")
        if not target_fps or target_fps <= 0 or target_fps > source_fps + 1e-6:
            raise VDOTInputError("target_fps", f"{target_fps:g} is not in (0, {source_fps:g}] (the source's fps)",
                                 f"use at most {source_fps:g}; a higher rate would repeat frames")
        step = source_fps / target_fps
        ids = [int(k * step + 1e-6) for k in range(n)]
        if ids[-1] >= available:
            most = int((available - 1) / step + 1e-6) + 1
            raise VDOTInputError(name, f"has {available} frames at {source_fps:g} fps: {n} frames at {target_fps:g} fps "
                                 f"need {ids[-1] + 1}", f"ask for at most {most} frames, lower target_fps or load more frames")
        return ids
    if n > available:
        raise VDOTInputError(name, f"has {available} frames but {n} were asked for",
                             f"ask for at most {available} frames or use a longer video")
    if sampling == "first":
        return list(range(n))
    step = 1.0 / (source_fps or 1.0)
    stamps = np.stack([np.arange(available) * step, (np.arange(available) + 1) * step], axis=1)
    return sample_frame_ids(stamps, n)


@dataclass(frozen=True)
class SourcePlan:
    """Which source frames to take and the output size they are fitted to."""

    frame_ids: tuple[int, ...]
    height: int
    width: int
    source_size: tuple[int, int] | None = None  # (H, W) of the video the plan was made for

    @property
    def num_frames(self) -> int:
        return len(self.frame_ids)


def _other_side(given: int, ratio: float) -> int:
    return max(DOWNSAMPLE[1], int(round(given * ratio / DOWNSAMPLE[1])) * DOWNSAMPLE[1])


def plan_source(timestamps: np.ndarray, src_height: int, src_width: int, policy: SourcePolicy = OFFICIAL_POLICY,
                *, frames: int | None = None, height: int | None = None, width: int | None = None,
                sampling: str = "uniform", name: str = "source video") -> SourcePlan:
    """Frame ids and output size for a source (``timestamps`` of the frames that may be used).

    Unset ``frames`` / ``height`` / ``width`` follow :func:`official_shape`; a given one wins. With
    only one of height/width given, the other keeps the source's aspect ratio (rounded to 16).
    ``sampling``: ``uniform`` (official: spread over the clip) or ``first`` (the first frames).
    """
    if sampling not in FRAME_SAMPLING:
        raise VDOTInputError("frame sampling", f"unknown mode {sampling!r}", f"use one of {', '.join(FRAME_SAMPLING)}")
    available = int(len(timestamps))
    if frames is None or height is None or width is None:
        auto_frames, auto_h, auto_w = official_shape(available, src_height, src_width, policy)
    if frames is not None and frames > available:
        raise VDOTInputError(name, f"has {available} frames but {frames} were asked for",
                             f"ask for at most {max(1, (available - 1) // 4 * 4 + 1)} frames or use a longer video")
    n = auto_frames if frames is None else int(frames)
    if height is not None and width is not None:
        out_h, out_w = int(height), int(width)
    elif height is not None:
        out_h, out_w = int(height), _other_side(height, src_width / src_height)
    elif width is not None:
        out_h, out_w = _other_side(width, src_height / src_width), int(width)
    else:
        out_h, out_w = auto_h, auto_w
    ids = sample_frame_ids(timestamps, n) if sampling == "uniform" else list(range(n))
    return SourcePlan(tuple(ids), out_h, out_w, (int(src_height), int(src_width)))


def _uint8_video(frames) -> torch.Tensor:
    video = torch.as_tensor(frames)
    if video.dtype != torch.uint8 or video.ndim != 4:
        raise VDOTInputError("frames", f"expected uint8 [F, H, W, C], got {video.dtype} {tuple(video.shape)}",
                             "convert with video_io.to_uint8")
    return video


def _resample(video: torch.Tensor, size: tuple[int, int], height: int, width: int, chunk: int) -> torch.Tensor:
    """The one frame resampler: uint8 ``[F, H, W, C]`` resized to ``size`` (bicubic, antialias, on
    uint8 as the official loader does), then centre-cropped to height×width with floor offsets.

    Runs ``chunk`` frames at a time (frames are independent, so the result is the same) to bound memory.
    """
    out = torch.empty((video.shape[0], height, width, video.shape[3]), dtype=torch.uint8)
    for start in range(0, video.shape[0], chunk):
        x = video[start:start + chunk].permute(0, 3, 1, 2)  # a channels-last view, as decord's tensor is
        y = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True)
        top, left = (y.shape[2] - height) // 2, (y.shape[3] - width) // 2
        out[start:start + chunk] = y[:, :, top:top + height, left:left + width].permute(0, 2, 3, 1)
    return out


def cover_crop(frames, height: int, width: int, chunk: int = 16) -> torch.Tensor:
    """Resize uint8 ``[F, H, W, 3]`` frames to cover height×width, then centre-crop with floor
    offsets (:func:`_resample`). Returns uint8 ``[F, height, width, 3]``."""
    video = _uint8_video(frames)
    ih, iw = int(video.shape[1]), int(video.shape[2])
    if (ih, iw) == (height, width):
        return video
    scale = max(width / iw, height / ih)
    return _resample(video, (round(scale * ih), round(scale * iw)), height, width, chunk)


def resize_exact(frames, height: int, width: int, chunk: int = 16) -> torch.Tensor:
    """uint8 frames resized to exactly height×width by the same resampler, ignoring the aspect ratio:
    only where a user asks for it (VDOT Fit Video's ``stretch``, and ``pad`` before its bars)."""
    video = _uint8_video(frames)
    if tuple(video.shape[1:3]) == (height, width):
        return video
    return _resample(video, (height, width), height, width, chunk)


def unit_frames(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 frames → float32 0..1 (the VCU layout; the pipeline maps it to [-1, 1])."""
    return frames_uint8.to(torch.float32).div_(255.0)


def load_video(path: str | Path, plan: SourcePlan) -> torch.Tensor:
    """The plan's frames of a video, fitted to its size: float32 ``[F, H, W, 3]`` 0..1."""
    from .video_io import read_video_frames

    return unit_frames(cover_crop(read_video_frames(path, plan.frame_ids), plan.height, plan.width))


def load_mask(path: str | Path, plan: SourcePlan) -> torch.Tensor:
    """A mask video (same frame ids and crop as the video) or one mask image (used for every
    frame) → soft mask ``[F, H, W]`` float32 0..1 (1 = generate)."""
    from .preprocess.masks import image_to_mask
    from .vcu import check_mask_size
    from .video_io import IMAGE_EXTENSIONS, read_image, read_video_frames, to_uint8

    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        frames = torch.from_numpy(to_uint8(read_image(path)))[None]
    else:
        frames = read_video_frames(path, plan.frame_ids)
    # A mask drawn for another size would be stretched by the crop: refuse it (sizes must agree).
    check_mask_size(tuple(frames.shape[1:3]), plan.source_size or (plan.height, plan.width))
    mask = image_to_mask(cover_crop(frames, plan.height, plan.width))
    return mask.expand(plan.num_frames, -1, -1).contiguous() if mask.shape[0] == 1 else mask


def fit_clip(frames: torch.Tensor, height: int, width: int, stretch: bool = False) -> torch.Tensor:
    """Float ``[F, H, W, 3]`` 0..1 frames → the same policy's cover + centre crop, float 0..1
    (``stretch``: :func:`resize_exact` instead, for a user who asked for it). Frames already that
    size pass unchanged (not rounded to 8 bits)."""
    from .video_io import to_uint8

    if tuple(frames.shape[1:3]) == (height, width):
        return frames

    fit = resize_exact if stretch else cover_crop
    return unit_frames(fit(torch.from_numpy(to_uint8(frames)), height, width))
