"""Task-mask geometry: the one place masks and canvases for every VDOT task are computed.

Pure functions on shapes (no model, no I/O), shared by the VCU builders (``core/vcu.py``), the
preprocess nodes and the training data pipeline, so inference and training see identical geometry.

Conventions (VACE): a mask is float32, exactly 0 or 1, **1 = generate, 0 = keep**. Pixel boxes
are ``(x0, y0, x1, y1)`` with x1/y1 exclusive (Python slicing). Generated pixels hold grey
:data:`GREY` (0.5 in 0..1 = 0 in VACE's [-1, 1] space).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import VDOTInputError

GREY = 0.5
EXTENSION_MODES = ("first", "last", "random")


#: What :func:`image_to_mask` reads from a pixel (the Image to Mask node offers them in this order).
MASK_CHANNELS = ("luminance", "red", "green", "blue")
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601


def image_to_mask(frames: torch.Tensor, channel: str = "red", name: str = "mask") -> torch.Tensor:
    """The one image→mask conversion: frames ``[..., H, W, C]`` → soft mask ``[..., H, W]`` float32
    in 0..1 (white = 1 = generate); :func:`binarize_mask` thresholds it where a binary mask is needed.

    uint8 frames (a mask file as read) go through the official ``prepare_source`` arithmetic,
    ``clamp(((x/127.5 − 1) + 1)/2, 0, 1)``; float frames (a ComfyUI IMAGE) are 0..1 already and are
    clamped. ``channel``: ``red`` (channel 0, what the official code, the CLI and training read),
    ``green``, ``blue``, or ``luminance`` (BT.601 weights).
    """
    if channel not in MASK_CHANNELS:
        raise VDOTInputError("channel", f"unknown mask channel {channel!r}", f"use one of {', '.join(MASK_CHANNELS)}")
    if not isinstance(frames, torch.Tensor) or frames.ndim < 3:
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise VDOTInputError(name, f"expected frames [..., H, W, C], got {got}", "pass an image or a video")
    needed = 3 if channel in ("luminance", "blue") else 2 if channel == "green" else 1
    if frames.shape[-1] < needed:
        raise VDOTInputError(name, f"has {frames.shape[-1]} channel(s); channel {channel!r} needs {needed}",
                             "use channel red, or pass RGB frames")
    official = frames.dtype == torch.uint8
    # The official arithmetic maps uint8 to [-1, 1] first; a float frame is 0..1 as it is.
    x = frames.to(torch.float32).div(127.5).sub(1.0) if official else frames.to(torch.float32)
    if channel == "luminance":
        values = x[..., 0] * _LUMA_WEIGHTS[0] + x[..., 1] * _LUMA_WEIGHTS[1] + x[..., 2] * _LUMA_WEIGHTS[2]
    else:
        values = x[..., MASK_CHANNELS.index(channel) - 1]
    return torch.clamp((values + 1) / 2, min=0, max=1) if official else values.clamp(0, 1)


def binarize_mask(mask: torch.Tensor, threshold: float = 0.5, name: str = "mask") -> torch.Tensor:
    """The one place soft masks are thresholded: ``1.0`` where ``mask > threshold``, else ``0.0``.

    Returns float32 on the mask's device. NaN/inf are rejected rather than silently mapped.
    """
    if not isinstance(mask, torch.Tensor):
        raise VDOTInputError(name, f"expected a torch tensor, got {type(mask).__name__}",
                             "pass a ComfyUI MASK / a torch tensor")
    if not 0.0 <= threshold < 1.0:
        raise VDOTInputError("threshold", f"must be in [0, 1), got {threshold}", "use 0.5")
    m = mask.float()
    if not torch.isfinite(m).all():
        raise VDOTInputError(name, "contains NaN or infinite values", "check the node/file that produced the mask")
    return (m > threshold).to(torch.float32)


def frame_keep_mask(num_frames: int, height: int, width: int, kept_frames, device=None) -> torch.Tensor:
    """``[F, H, W]`` mask: 0 (keep) on the listed frame indices, 1 (generate) elsewhere."""
    mask = torch.ones(num_frames, height, width, dtype=torch.float32, device=device)
    kept = list(kept_frames)
    for i in kept:
        if not 0 <= i < num_frames:
            raise VDOTInputError("kept_frames", f"frame index {i} is outside 0..{num_frames - 1}",
                                 f"use indices below {num_frames}")
    if kept:
        mask[torch.tensor(kept, dtype=torch.long, device=mask.device)] = 0.0
    return mask


def first_frame_mask(num_frames: int, height: int, width: int, device=None) -> torch.Tensor:
    """``[F, H, W]``: frame 0 kept (0), all later frames generated (1). Used by ``firstframe_*``."""
    return frame_keep_mask(num_frames, height, width, [0], device=device)


def extension_kept_range(num_frames: int, keep: int, mode: str,
                         generator: torch.Generator | None = None) -> tuple[int, int]:
    """``(start, stop)`` (stop exclusive) of the source clip kept by temporal extension.

    ``first``: frames ``[0, keep)``; ``last``: ``[F - keep, F)``; ``random``: a contiguous clip of
    ``keep`` frames whose start is drawn uniformly from ``0..F-keep`` with ``generator`` (required,
    so the draw is reproducible: same seed, same clip).
    """
    if mode not in EXTENSION_MODES:
        raise VDOTInputError("mode", f"unknown extension mode {mode!r}", f"use one of {', '.join(EXTENSION_MODES)}")
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep < num_frames:
        raise VDOTInputError(
            "keep_frames", f"must be an integer in 1..{num_frames - 1} (frames kept out of {num_frames}), got {keep!r}",
            f"keep at least 1 and at most {num_frames - 1} frames, e.g. {max(1, num_frames // 4)}",
        )
    if mode == "first":
        return 0, keep
    if mode == "last":
        return num_frames - keep, num_frames
    if generator is None:
        raise VDOTInputError("seed", "extension mode 'random' needs a seeded generator",
                             "pass seed=<int> (or a torch.Generator) so the kept clip is reproducible")
    start = int(torch.randint(0, num_frames - keep + 1, (1,), generator=generator).item())
    return start, start + keep


def extension_mask(num_frames: int, keep: int, mode: str, generator: torch.Generator | None = None,
                   height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Temporal-extension mask: 0 on the kept clip (see :func:`extension_kept_range`), 1 elsewhere.

    Returns ``[F]`` per-frame values, or ``[F, H, W]`` when ``height`` and ``width`` are given.
    """
    start, stop = extension_kept_range(num_frames, keep, mode, generator)
    mask = torch.ones(num_frames, dtype=torch.float32)
    mask[start:stop] = 0.0
    if height is None and width is None:
        return mask
    if height is None or width is None:
        raise ValueError("extension_mask: give both height and width, or neither")
    return mask[:, None, None].expand(num_frames, height, width).contiguous()


def box_mask(height: int, width: int, box, num_frames: int | None = None, device=None) -> torch.Tensor:
    """Mask that generates (1) inside ``box = (x0, y0, x1, y1)`` (pixels, x1/y1 exclusive), 0 outside.

    ``[H, W]``, or ``[F, H, W]`` (same box on every frame) when ``num_frames`` is given. A box
    that leaves the frame is an error, never silently clipped.
    """
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
        if any(int(v) != v for v in box):
            raise ValueError
    except (TypeError, ValueError):
        raise VDOTInputError("box", f"expected four integers x0,y0,x1,y1, got {box!r}",
                             "give the box as pixel coordinates x0,y0,x1,y1 (x1,y1 exclusive)") from None
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise VDOTInputError(
            "box", f"({x0},{y0},{x1},{y1}) is empty or outside the {width}x{height} frame",
            f"use 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} (x1,y1 exclusive)",
        )
    mask = torch.zeros(height, width, dtype=torch.float32, device=device)
    mask[y0:y1, x0:x1] = 1.0
    if num_frames is None:
        return mask
    return mask.expand(num_frames, height, width).contiguous()


def _multiple_of_16_hint(size: int, a: int, b: int, first: str, second: str) -> str:
    """Which totals of two padding sides make ``size + a + b`` a multiple of 16, with an example."""
    low = (a + b) - (size + a + b) % 16
    options = [v for v in (low, low + 16) if v > 0]
    totals = " or ".join(f"{v} (output {size + v})" for v in options)
    example = next(v for v in options[::-1] if v >= a)
    return f"make {first}+{second} {totals}, e.g. {first}={a},{second}={example - a}"


@dataclass(frozen=True)
class OutpaintCanvas:
    """Geometry of an outpaint: the source (``source_height`` x ``source_width``) sits at
    (``top``, ``left``) inside an output canvas of ``height`` x ``width``.

    ``mask`` is ``[height, width]``: 1 on the new border (plus ``overlap`` pixels into the source
    on every side that was expanded), 0 on the kept source.
    """

    height: int
    width: int
    top: int
    left: int
    source_height: int
    source_width: int
    overlap: int
    mask: torch.Tensor

    def place(self, video: torch.Tensor, fill: float = GREY) -> torch.Tensor:
        """Paste a ``[F, h, w, C]`` video into the canvas; generated pixels (mask 1) hold ``fill``."""
        f, h, w, c = video.shape
        if (h, w) != (self.source_height, self.source_width):
            raise VDOTInputError("source", f"is {w}x{h} but the outpaint canvas was made for "
                                 f"{self.source_width}x{self.source_height}", "build the canvas from this source's size")
        out = torch.full((f, self.height, self.width, c), fill, dtype=video.dtype, device=video.device)
        out[:, self.top:self.top + h, self.left:self.left + w] = video
        keep = (self.mask.to(video.device) == 0)[None, :, :, None]
        return torch.where(keep, out, torch.full_like(out, fill))


def outpaint_canvas(height: int, width: int, top: int = 0, bottom: int = 0, left: int = 0, right: int = 0,
                    overlap: int = 0, device=None) -> OutpaintCanvas:
    """Canvas expansion for a ``height`` x ``width`` source: add ``top``/``bottom``/``left``/``right``
    **pixels** (non-negative integers) of new content around it.

    The output size ``(height+top+bottom) x (width+left+right)`` must be a multiple of 16 on both
    axes (the error names the side totals that would work). ``overlap`` (default 0) extends the
    generated region that many pixels into the source on each expanded side, to blend the seam.
    """
    sides = {"top": top, "bottom": bottom, "left": left, "right": right}
    for side, v in sides.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise VDOTInputError(
                f"expand.{side}", f"must be a non-negative integer pixel count, got {v!r}",
                "give pixels to add per side as integers, e.g. top=0,bottom=0,left=64,right=64",
            )
    if top + bottom + left + right == 0:
        raise VDOTInputError("expand", "all four sides are 0, so there is nothing to outpaint",
                             "add pixels on at least one side, e.g. left=64,right=64")
    out_h, out_w = height + top + bottom, width + left + right
    if out_h % 16:
        raise VDOTInputError("expand", f"output height {height}+{top}+{bottom}={out_h} is not a multiple of 16",
                             _multiple_of_16_hint(height, top, bottom, "top", "bottom"))
    if out_w % 16:
        raise VDOTInputError("expand", f"output width {width}+{left}+{right}={out_w} is not a multiple of 16",
                             _multiple_of_16_hint(width, left, right, "left", "right"))
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise VDOTInputError("overlap", f"must be a non-negative integer, got {overlap!r}", "use 0 (no overlap) or a few pixels")
    max_overlap = min(height, width) // 2
    if overlap > max_overlap:
        raise VDOTInputError("overlap", f"{overlap} px would cover more than half of the {width}x{height} source",
                             f"use at most {max_overlap}")
    mask = torch.ones(out_h, out_w, dtype=torch.float32, device=device)
    y0 = top + (overlap if top else 0)
    y1 = top + height - (overlap if bottom else 0)
    x0 = left + (overlap if left else 0)
    x1 = left + width - (overlap if right else 0)
    mask[y0:y1, x0:x1] = 0.0
    return OutpaintCanvas(out_h, out_w, top, left, height, width, overlap, mask)
