"""Video Condition Unit (VCU): the one representation every VDOT task is expressed in.

A VCU is (prompt, frames, masks, references) with VACE semantics:
- ``frames``  ``[F, H, W, 3]`` float32 in 0..1 (ComfyUI IMAGE layout, frames as the batch).
  Pixels to keep hold the source; pixels to generate hold grey 0.5 (= 0 in VACE's [-1, 1] space),
  or the control signal (depth, pose, ...) for V2V tasks.
- ``masks``   ``[F, H, W]`` float32, exactly 0 or 1: 1 = generate, 0 = keep.
- ``soft_masks`` optional ``[F, H, W]`` float32 in 0..1: the unthresholded mask ``masks`` was cut
  from. VACE forms inactive/reactive with the binary mask but feeds the soft one to the
  64-channel mask input; None means ``masks`` is used there too.
- ``references`` list of ``[H, W, 3]`` float32 0..1 images already placed on a white H×W canvas;
  they are VAE-encoded as extra latent frames in front of the video and stripped after sampling.
F must be 4k+1, H and W multiples of 16.

Besides the dataclass this module holds the input checks, one builder per task family
(``build_*_vcu``) and :func:`validate_vcu`. Which task uses which builder, and the dispatcher
``build_vcu``, are the task registry (:mod:`vdot_nodes.core.tasks`). Errors name the semantic input
(``control``, ``references``); each front end renames it to its flag / socket / field. Mask geometry
lives in :mod:`vdot_nodes.core.preprocess.masks`, shared with the training data pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import VDOTInputError, VDOTMissingInput
from .preprocess.masks import (
    GREY,
    binarize_mask,
    box_mask,
    extension_mask,
    first_frame_mask,
    outpaint_canvas,
)


@dataclass
class VCU:
    task: str
    frames: torch.Tensor
    masks: torch.Tensor
    references: list[torch.Tensor] = field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""
    soft_masks: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


#: What a control video can show; the task registry (:mod:`vdot_nodes.core.tasks`) makes one V2V, one
#: ``firstframe_*`` and one ``reference_*`` task of each.
CONTROL_KINDS = ("depth", "pose", "flow", "grey", "scribble")


# --------------------------------------------------------------------------------------------
# Input checks (shared by the builders and validate_vcu)
# --------------------------------------------------------------------------------------------

_RANGE_TOLERANCE = 1e-4  # builders clamp float round-off just outside 0..1; anything more is an error


def nearest_frame_counts(n: int) -> tuple[int, ...]:
    """The valid (4k+1) frame counts nearest to ``n``: one below and one above (or just 1)."""
    low = max(1, (max(n, 1) - 1) // 4 * 4 + 1)
    return (low, low + 4) if low != n else (n,)


def nearest_multiples_of_16(n: int) -> tuple[int, ...]:
    low = max(16, n // 16 * 16)
    return (low,) if low == n else ((low, low + 16) if low < n else (low,))


def check_frame_count(n: int, name: str) -> None:
    if n < 1 or (n - 1) % 4:
        options = " or ".join(str(v) for v in nearest_frame_counts(n))
        raise VDOTInputError(name, f"has {n} frames; VACE needs 4k+1 frames (1, 5, 9, ..., 81)",
                             f"use {options} frames")


def check_size(height: int, width: int, name: str) -> None:
    bad = [(axis, v) for axis, v in (("height", height), ("width", width)) if v < 16 or v % 16]
    if bad:
        problem = ", ".join(f"{axis} {v}" for axis, v in bad)
        fix = "; ".join(f"{axis} " + " or ".join(str(o) for o in nearest_multiples_of_16(v)) for axis, v in bad)
        raise VDOTInputError(name, f"is {width}x{height} (WxH): {problem} is not a multiple of 16",
                             f"resize or crop to a multiple of 16, e.g. {fix}")


def _require_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise VDOTInputError(name, f"expected a torch tensor, got {type(x).__name__}",
                             "pass a ComfyUI IMAGE/MASK or a torch tensor")
    if x.is_complex() or not (x.is_floating_point() or x.dtype == torch.bool):
        raise VDOTInputError(name, f"has dtype {x.dtype}; expected float values in 0..1",
                             "convert to float (for uint8 pixels divide by 255)")
    return x


def _check_values(x: torch.Tensor, name: str, clamp: bool) -> torch.Tensor:
    x = x.to(torch.float32)
    if x.numel() == 0:
        raise VDOTInputError(name, f"is empty (shape {tuple(x.shape)})", "pass a non-empty image/video")
    if not torch.isfinite(x).all():
        raise VDOTInputError(name, "contains NaN or infinite values", "check the node/file that produced it")
    lo, hi = float(x.min()), float(x.max())
    tol = _RANGE_TOLERANCE if clamp else 0.0
    if lo < -tol or hi > 1 + tol:
        raise VDOTInputError(name, f"has values in [{lo:.4g}, {hi:.4g}], outside 0..1",
                             "give pixels as floats in 0..1 (ComfyUI IMAGE layout; divide 0..255 data by 255, "
                             "map -1..1 data with (x+1)/2)")
    return x.clamp(0, 1) if clamp else x


def _channel_problem(c: int) -> str:
    if c == 4:
        return "has 4 channels (RGBA?); expected 3 (RGB)"
    if c == 1:
        return "has 1 channel (greyscale); expected 3 (RGB)"
    return f"has {c} channels; expected 3 (RGB)"


def _channel_fix(c: int) -> str:
    if c == 4:
        return "drop the alpha channel or composite the image onto a background first"
    if c == 1:
        return "repeat the grey channel 3 times (x.expand(..., 3))"
    return "pass an RGB image/video in [..., H, W, 3] layout"


def as_video(x, name: str, clamp: bool = True) -> torch.Tensor:
    """Check a ``[F, H, W, 3]`` 0..1 video input and return it as float32 (shape checks only for
    layout and channels; frame count and size are checked where they matter)."""
    x = _require_tensor(x, name)
    if x.ndim == 3:
        raise VDOTInputError(name, f"has shape {tuple(x.shape)}: a single image or a greyscale/mask video "
                             "[F, H, W] without a channel axis; expected [F, H, W, 3]",
                             "pass an RGB video (ComfyUI IMAGE batch); repeat grey data to 3 channels")
    if x.ndim != 4:
        raise VDOTInputError(name, f"has shape {tuple(x.shape)}; expected a video [F, H, W, 3]",
                             "pass frames as a ComfyUI IMAGE batch [frames, height, width, 3]")
    if x.shape[-1] != 3:
        raise VDOTInputError(name, _channel_problem(int(x.shape[-1])) + f" (shape {tuple(x.shape)})",
                             _channel_fix(int(x.shape[-1])))
    return _check_values(x, name, clamp)


def as_image(x, name: str, clamp: bool = True) -> torch.Tensor:
    """Check an ``[H, W, 3]`` (or ComfyUI ``[1, H, W, 3]``) 0..1 image; return ``[H, W, 3]`` float32."""
    x = _require_tensor(x, name)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 4:
        raise VDOTInputError(name, f"is a batch of {x.shape[0]} images {tuple(x.shape)}; expected one image",
                             "pass a single image [H, W, 3] (select one from the batch)")
    if x.ndim == 2:
        raise VDOTInputError(name, f"has shape {tuple(x.shape)}: greyscale without a channel axis; expected [H, W, 3]",
                             "repeat the grey channel 3 times")
    if x.ndim != 3:
        raise VDOTInputError(name, f"has shape {tuple(x.shape)}; expected an image [H, W, 3]",
                             "pass a ComfyUI IMAGE [1, H, W, 3] or a tensor [H, W, 3]")
    if x.shape[-1] != 3:
        raise VDOTInputError(name, _channel_problem(int(x.shape[-1])) + f" (shape {tuple(x.shape)})",
                             _channel_fix(int(x.shape[-1])))
    return _check_values(x, name, clamp)


def check_mask_size(mask_size: tuple[int, int], video_size: tuple[int, int], name: str = "mask") -> None:
    """A mask must have its video's own (H, W): one of another size is an error, never stretched."""
    (mh, mw), (vh, vw) = (int(v) for v in mask_size), (int(v) for v in video_size)
    if (mh, mw) != (vh, vw):
        raise VDOTInputError(name, f"is {mw}x{mh} (WxH) but the video is {vw}x{vh}",
                             f"resize or crop the mask to {vw}x{vh}, the size of its video (sizes must agree)")


def as_mask(x, name: str, num_frames: int, height: int, width: int) -> torch.Tensor:
    """A mask input as ``[F, H, W]`` float32 (values not yet binarized).

    Accepts ``[F, H, W]``, or ``[H, W]`` / ``[1, H, W]`` which is broadcast to all ``F`` frames.
    """
    x = _require_tensor(x, name)
    if x.ndim == 4:
        raise VDOTInputError(name, f"has shape {tuple(x.shape)}: an image/video with {x.shape[-1]} channels; "
                             "expected a mask [F, H, W] or [H, W]",
                             "convert it to a MASK (ComfyUI 'Convert Image to Mask'; white = generate)")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise VDOTInputError(name, f"has shape {tuple(x.shape)}; expected [F, H, W] or [H, W]",
                             "pass a ComfyUI MASK")
    check_mask_size(tuple(x.shape[1:]), (height, width), name)
    if x.shape[0] == 1 and num_frames != 1:
        x = x.expand(num_frames, height, width)
    if x.shape[0] != num_frames:
        raise VDOTInputError(name, f"has {x.shape[0]} frames but the video has {num_frames}",
                             f"give {num_frames} mask frames, or a single [H, W] mask for all frames")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise VDOTInputError(name, "contains NaN or infinite values", "check the node/file that produced the mask")
    return x.contiguous()


def as_references(references, name: str = "references") -> list[torch.Tensor]:
    """Reference inputs as a list of ``[h, w, 3]`` images: a list/tuple of images, one image, or an
    ``[N, h, w, 3]`` batch (N references)."""
    if references is None:
        return []
    if isinstance(references, torch.Tensor):
        if references.ndim == 4:
            items = list(references.unbind(0))
        else:
            items = [references]
    elif isinstance(references, (list, tuple)):
        items = []
        for r in references:
            if isinstance(r, torch.Tensor) and r.ndim == 4 and r.shape[0] > 1:
                items.extend(r.unbind(0))
            else:
                items.append(r)
    else:
        raise VDOTInputError(name, f"expected an image or a list of images, got {type(references).__name__}",
                             "pass one or more [H, W, 3] images")
    return [as_image(r, f"{name}[{i}]") for i, r in enumerate(items)]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_vcu(vcu: VCU) -> VCU:
    """Check a VCU before it reaches the model (the transformer would zero-pad a bad control
    silently). Returns the same VCU. Raises :class:`VDOTInputError` naming the offending field."""
    frames = as_video(vcu.frames, "frames", clamp=False)
    f, h, w = frames.shape[:3]
    check_frame_count(f, "frames")
    check_size(h, w, "frames")
    masks = _require_tensor(vcu.masks, "masks")
    if tuple(masks.shape) != (f, h, w):
        raise VDOTInputError("masks", f"has shape {tuple(masks.shape)} but frames are [F, H, W] = {[f, h, w]}",
                             "give one [H, W] mask per frame, same size as the frames")
    masks = masks.to(torch.float32)
    if not torch.isfinite(masks).all():
        raise VDOTInputError("masks", "contains NaN or infinite values", "check the node/file that produced the mask")
    if not ((masks == 0) | (masks == 1)).all():
        raise VDOTInputError("masks", "is not binary (values other than exactly 0 and 1)",
                             "threshold it with binarize_mask(mask, threshold=0.5) (the builders do this)")
    if vcu.soft_masks is not None:
        soft = _require_tensor(vcu.soft_masks, "soft_masks")
        if tuple(soft.shape) != (f, h, w):
            raise VDOTInputError("soft_masks", f"has shape {tuple(soft.shape)} but the masks are {[f, h, w]}",
                                 "give the soft mask the binary masks were thresholded from")
        _check_values(soft, "soft_masks", clamp=False)
    for i, ref in enumerate(vcu.references):
        r = as_image(ref, f"references[{i}]", clamp=False)
        if tuple(r.shape[:2]) != (h, w):
            raise VDOTInputError(f"references[{i}]", f"is {r.shape[1]}x{r.shape[0]} but the frames are {w}x{h}",
                                 "place it on the frame-size white canvas with place_on_white_canvas(image, H, W)")
    return vcu


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def place_on_white_canvas(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Aspect-preserving resize of ``image`` to fit ``height`` x ``width``, centred on a white canvas —
    the official VDOT ``prepare_source`` arithmetic: ``scale = min(H/h, W/w)``, size
    ``int(h·scale) x int(w·scale)``, bilinear with ``align_corners=False`` and no antialias, offsets
    ``(H − nh)//2`` and ``(W − nw)//2`` (no rounding of the image size to 8 as diffusers does first).
    Returns ``[H, W, 3]``."""
    img = as_image(image, "reference")
    ih, iw = img.shape[:2]
    scale = min(height / ih, width / iw)
    nh, nw = int(ih * scale), int(iw * scale)
    if nh < 1 or nw < 1:
        raise VDOTInputError("reference", f"is {iw}x{ih}: too elongated to fit a {width}x{height} canvas",
                             "crop the reference image to a less extreme aspect ratio")
    x = img.permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)[0]
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas = torch.ones(height, width, 3, dtype=torch.float32, device=img.device)
    canvas[top:top + nh, left:left + nw] = resized.permute(1, 2, 0).clamp(0, 1)
    return canvas


def _grey_video(num_frames: int, height: int, width: int, device=None) -> torch.Tensor:
    return torch.full((num_frames, height, width, 3), GREY, dtype=torch.float32, device=device)


def _checked_shape(num_frames: int, height: int, width: int) -> None:
    from .validate import BOUNDS, check_memory, check_number

    for name, v in (("num_frames", num_frames), ("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise VDOTInputError(name, f"must be an integer, got {v!r}", f"pass {name} as an integer")
        check_number(name, v, BOUNDS[name])  # the caps, before a frames tensor is allocated
    check_memory(num_frames, height, width)
    check_frame_count(num_frames, "num_frames")
    check_size(height, width, "height/width")


def _checked_video(video, name: str) -> torch.Tensor:
    v = as_video(video, name)
    check_frame_count(v.shape[0], name)
    check_size(v.shape[1], v.shape[2], name)
    return v


def build_t2v_vcu(num_frames: int = 81, height: int = 480, width: int = 832, prompt: str = "",
                  negative_prompt: str = "", device=None) -> VCU:
    """T2V: all frames grey (zero in VACE space), mask all ones, no references."""
    _checked_shape(num_frames, height, width)
    return validate_vcu(VCU("t2v", _grey_video(num_frames, height, width, device),
                            torch.ones(num_frames, height, width, device=device), [], prompt, negative_prompt))


def build_r2v_vcu(references, num_frames: int = 81, height: int = 480, width: int = 832, prompt: str = "",
                  negative_prompt: str = "") -> VCU:
    """R2V: like T2V plus one or more reference images, each placed on a white H x W canvas."""
    refs = as_references(references)
    if not refs:
        raise VDOTMissingInput("references", "r2v needs at least one reference image", "give one or more reference images")
    _checked_shape(num_frames, height, width)
    device = refs[0].device
    placed = [place_on_white_canvas(r, height, width) for r in refs]
    return validate_vcu(VCU("r2v", _grey_video(num_frames, height, width, device),
                            torch.ones(num_frames, height, width, device=device), placed, prompt, negative_prompt))


def _control_kind(task: str, prefix: str, builder: str) -> str:
    kind = task[len(prefix):] if task.startswith(prefix) else None
    if kind not in CONTROL_KINDS:
        valid = ", ".join(prefix + k for k in CONTROL_KINDS)
        raise VDOTInputError("task", f"{builder} does not build task {task!r}", f"use one of: {valid}")
    return kind


def build_control_vcu(control, task: str = "depth", prompt: str = "", negative_prompt: str = "") -> VCU:
    """V2V (depth/pose/flow/grey/scribble): frames = the control video, mask all ones."""
    _control_kind(task, "", "build_control_vcu")
    frames = _checked_video(control, "control")
    f, h, w = frames.shape[:3]
    return validate_vcu(VCU(task, frames.contiguous(), torch.ones(f, h, w, device=frames.device), [],
                            prompt, negative_prompt))


def _expand_sides(expand) -> tuple[int, int, int, int]:
    if isinstance(expand, dict):
        unknown = set(expand) - {"top", "bottom", "left", "right"}
        if unknown:
            raise VDOTInputError("expand", f"unknown side(s) {sorted(unknown)}", "use keys top, bottom, left, right")
        return tuple(expand.get(k, 0) for k in ("top", "bottom", "left", "right"))
    try:
        sides = tuple(expand)
    except TypeError:
        sides = ()
    if len(sides) != 4:
        raise VDOTInputError("expand", f"expected 4 pixel counts (top, bottom, left, right), got {expand!r}",
                             "e.g. (0, 0, 64, 64) adds 64 pixels left and right")
    return sides


def _check_canvas_cap(h: int, w: int, sides) -> None:
    """The expanded canvas must stay within the generate caps, checked before it is allocated."""
    from .validate import MAX_SIDE

    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
        return  # outpaint_canvas names a non-integer side
    top, bottom, left, right = sides
    height, width = h + top + bottom, w + left + right
    if max(height, width) > MAX_SIDE:
        raise VDOTInputError("expand", f"makes a {width}x{height} canvas, larger than {MAX_SIDE} pixels a side",
                             f"add fewer pixels (the canvas may be at most {MAX_SIDE}x{MAX_SIDE})")


def build_outpaint_vcu(source, expand, overlap: int = 0, prompt: str = "", negative_prompt: str = "") -> VCU:
    """Outpaint (canvas expansion). ``expand = (top, bottom, left, right)`` in **pixels** added on each
    side of the source (or a dict with those keys); the output is
    ``(H+top+bottom) x (W+left+right)`` and must be a multiple of 16 on both axes — the source itself
    need not be. The source is copied exactly into the canvas (mask 0); the new border is grey with
    mask 1. ``overlap`` > 0 also regenerates that many source pixels along each expanded edge."""
    video = as_video(source, "source")
    f, h, w = video.shape[:3]
    check_frame_count(f, "source")
    top, bottom, left, right = _expand_sides(expand)
    _check_canvas_cap(h, w, (top, bottom, left, right))
    canvas = outpaint_canvas(h, w, top, bottom, left, right, overlap=overlap, device=video.device)
    frames = canvas.place(video, fill=GREY)
    masks = canvas.mask[None].expand(f, -1, -1).contiguous()
    return validate_vcu(VCU("outpaint", frames, masks, [], prompt, negative_prompt))


def build_extension_vcu(source, keep_frames: int | None = None, mode: str = "first", seed: int | None = 0,
                        generator: torch.Generator | None = None, prompt: str = "", negative_prompt: str = "") -> VCU:
    """Temporal extension: keep ``keep_frames`` frames of the source (default ``max(1, F // 4)``) —
    the first, the last, or a random contiguous clip (start drawn with ``generator``, else a CPU
    ``torch.Generator`` seeded with ``seed``: deterministic) — at their own positions; the other
    frames are grey with mask 1."""
    video = _checked_video(source, "source")
    f, h, w = video.shape[:3]
    if f < 2:
        raise VDOTInputError("source", "has 1 frame: nothing to extend", "give a video of 5 or more frames")
    keep = max(1, f // 4) if keep_frames is None else keep_frames
    if generator is None and mode == "random" and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    frame_mask = extension_mask(f, keep, mode, generator).to(video.device)
    masks = frame_mask[:, None, None].expand(f, h, w).contiguous()
    frames = torch.where(masks[..., None] == 0, video, torch.full_like(video, GREY))
    return validate_vcu(VCU("extension", frames, masks, [], prompt, negative_prompt))


def build_inpaint_vcu(source, mask=None, box=None, threshold: float = 0.5, prompt: str = "",
                      negative_prompt: str = "") -> VCU:
    """Inpaint: regenerate the region where ``mask`` is 1 (``[F, H, W]``, or ``[H, W]``/``[1, H, W]``
    used for every frame; soft masks are thresholded by :func:`binarize_mask`), or inside
    ``box = (x0, y0, x1, y1)`` pixels (x1, y1 exclusive) on every frame. Give exactly one of the two.
    Source pixels are kept where the mask is 0; masked pixels are grey. A soft mask is also kept
    (clamped to 0..1) as the VCU's ``soft_masks``: VACE's 64-channel mask input takes it unthresholded."""
    video = _checked_video(source, "source")
    f, h, w = video.shape[:3]
    if mask is None and box is None:
        raise VDOTMissingInput("mask", "inpaint needs exactly one of a mask or a box", "give either a mask or a box",
                               options=("mask", "box"))
    if mask is not None and box is not None:
        raise VDOTInputError("box", "inpaint needs exactly one of a mask or a box, got both",
                             "give either a mask or a box, not both")
    soft = None
    if mask is not None:
        given = as_mask(mask, "mask", f, h, w).to(video.device)
        masks = binarize_mask(given, threshold)
        if not ((given == 0) | (given == 1)).all():
            soft = given.clamp(0, 1).contiguous()
    else:
        masks = box_mask(h, w, box, num_frames=f, device=video.device)
    if not masks.any():
        raise VDOTInputError("mask" if box is None else "box", "marks nothing to generate (all zeros)",
                             "white (1) marks the region to regenerate; check the mask or lower the threshold")
    frames = torch.where(masks[..., None] == 0, video, torch.full_like(video, GREY))
    return validate_vcu(VCU("inpaint", frames, masks.contiguous(), [], prompt, negative_prompt, soft))


def _fit_first_frame(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    ih, iw = image.shape[:2]
    if (ih, iw) == (height, width):
        return image
    if abs((iw / ih) / (width / height) - 1) > 0.01:
        raise VDOTInputError("first_frame", f"is {iw}x{ih} but the control video is {width}x{height} "
                             "(different aspect ratio; it is not cropped or stretched silently)",
                             f"crop/resize the first frame to {width}x{height}")
    from .source_prep import fit_clip  # the one resize policy: the CLI and training fit a first frame so too

    return fit_clip(image[None], height, width)[0].to(image.device)


def build_firstframe_control_vcu(control, first_frame, task: str = "firstframe_depth", prompt: str = "",
                                 negative_prompt: str = "") -> VCU:
    """First frame + control composite. A first frame of another size but the same aspect ratio
    (within 1%) is resized to the control's size; another aspect ratio is an error."""
    _control_kind(task, "firstframe_", "build_firstframe_control_vcu")
    frames = _checked_video(control, "control").clone()
    f, h, w = frames.shape[:3]
    image = _fit_first_frame(as_image(first_frame, "first_frame"), h, w).to(frames.device)
    # VACE's composite convention (CompositionAnnotator, "extension" x control): frames are the
    # control video with the kept first frame pasted over frame 0, so the first frame's pixels
    # *replace* the control signal there; the mask is 0 on frame 0 (keep) and 1 on the rest.
    frames[0] = image
    masks = first_frame_mask(f, h, w, device=frames.device)
    return validate_vcu(VCU(task, frames, masks, [], prompt, negative_prompt))


def build_reference_control_vcu(control, references, task: str = "reference_depth", prompt: str = "",
                                negative_prompt: str = "") -> VCU:
    """Reference + control composite: frames = control video, mask all ones, plus the reference
    images each placed on a white canvas of the control's size."""
    _control_kind(task, "reference_", "build_reference_control_vcu")
    frames = _checked_video(control, "control")
    f, h, w = frames.shape[:3]
    refs = as_references(references)
    if not refs:
        raise VDOTMissingInput("references", f"{task} needs at least one reference image",
                               "give one or more reference images")
    placed = [place_on_white_canvas(r, h, w).to(frames.device) for r in refs]
    return validate_vcu(VCU(task, frames.contiguous(), torch.ones(f, h, w, device=frames.device), placed,
                            prompt, negative_prompt))
