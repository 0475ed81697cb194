"""Long video: a VCU longer than one window, generated as chained VACE extension windows.

Plan (:func:`plan_windows`): windows of ``window`` frames (4k+1, 81 by default — what Wan2.1 and
VDOT were trained on), as few as an overlap of at least ``overlap`` frames allows, spread evenly
from the first frame to the last: any 4k+1 total works, no frame is generated past the end, and
the overlaps differ by at most one frame.

Each window's VCU (:func:`window_vcu`) is the long VCU's slice — so a control video, a source and
masks are cut per window, and reference images go to every window — with its first ``keep``
frames replaced by the frames already made and their mask set to 0 (keep): a VACE temporal
extension conditioned on the end of the previous window.

Seams: the overlapped frames in the output are the previous window's frames, bit for bit; the new
window's re-rendering of them is used only to measure colour drift, never blended in. A crossfade
would mix two renderings of the same content (a ghosting risk for moving objects) to hide a
difference that colour matching already removes; the model itself continues the motion from the
kept frames.

Colour matching (:func:`match_colours`): VACE's chained extensions drift in colour and brightness
from chunk to chunk (ali-vilab/VACE #44, #27). In the overlap both windows show the same content,
so the difference of their per-channel RGB mean and standard deviation there is drift alone, not a
change of scene; the new frames are mapped by the per-channel affine that makes the window's
overlap statistics equal those of the frames already made. Each window is matched to its
predecessor, which was matched before it, so every window ends up in the first window's colours.
RGB moments remove exactly a per-channel gain and offset (what a latent-statistics shift mostly
produces); a LAB transfer would add a non-linear round trip and a dependency without a better
estimate from the same pixels.

Progress counts sampler steps across all windows; cancel is checked between windows (and, inside
:meth:`VDOTPipeline.generate`, between steps and phases).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import VDOTInputError, input_ref
from .progress import CancelFn, Progress, ProgressFn, as_progress
from .sampling import DEFAULT_PRESET, check_cfg_interval, get_preset
from .vcu import VCU, check_frame_count, validate_vcu

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_WINDOW", "Window", "colour_stats", "generate_long_video", "match_colours",
           "plan_windows", "window_vcu"]

DEFAULT_WINDOW = 81
# 17 = 4·4 + 1: the kept frames fill latent frames 0..4 exactly (Wan's VAE packs frame 0 alone,
# then 4 frames per latent frame), so no latent frame mixes kept and generated frames.
DEFAULT_OVERLAP = 17
_MAX_GAIN = 4.0  # a flat overlap (tiny std) must not blow the new frames up


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first frame of the long video this window covers
    length: int  # 4k+1
    keep: int  # leading frames taken from the frames already made (0 for the first window)

    @property
    def end(self) -> int:
        return self.start + self.length


def plan_windows(total_frames: int, window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP) -> list[Window]:
    """Windows covering ``total_frames`` (4k+1) frames with overlaps of at least ``overlap`` frames;
    one window when it fits in ``window``."""
    check_frame_count(total_frames, "num_frames")
    check_frame_count(window, "window")
    if total_frames <= window:
        return [Window(0, 0, total_frames, 0)]
    if not 1 <= overlap <= window - 4:
        raise VDOTInputError("overlap", f"is {overlap}; it must be at least 1 and at most the window minus 4 "
                             f"({window - 4}) so that each window makes new frames",
                             f"use e.g. {input_ref('overlap')} {DEFAULT_OVERLAP}")
    # As few windows as the minimum overlap allows, spread evenly. Starts are multiples of 4, so
    # every window keeps 4j+1 frames: whole latent frames (the VAE packs frame 0 alone, then 4 per
    # latent frame), never a latent frame half kept and half generated. The overlaps come out at
    # least `overlap` and within 4 frames of each other (more context per window at the same cost).
    quads, step = (total_frames - window) // 4, (window - overlap) // 4
    count = -(-quads // step) + 1
    starts = [4 * round(i * quads / (count - 1)) for i in range(count)]
    windows = [Window(0, 0, window, 0)]
    for i in range(1, count):
        windows.append(Window(i, starts[i], window, starts[i - 1] + window - starts[i]))
    return windows


def window_vcu(vcu: VCU, window: Window, made: torch.Tensor | None) -> VCU:
    """The VCU of one window: the long VCU's slice, its first ``keep`` frames = ``made`` frames, mask 0."""
    frames = vcu.frames[window.start:window.end].clone()
    masks = vcu.masks[window.start:window.end].clone()
    if window.keep:
        frames[: window.keep] = made[window.start:window.start + window.keep].to(frames)
        masks[: window.keep] = 0
    return VCU(vcu.task, frames, masks, list(vcu.references), vcu.prompt, vcu.negative_prompt)


def colour_stats(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of ``[..., 3]`` RGB frames (float64)."""
    x = frames.reshape(-1, frames.shape[-1]).double()
    return x.mean(0), x.std(0, unbiased=False)


def match_colours(frames: torch.Tensor, observed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Map ``frames`` by the per-channel affine taking ``observed``'s RGB moments to ``target``'s.

    ``observed`` and ``target`` show the same content (a window's re-rendering of the overlap and
    the frames already made there). Result clamped to 0..1.
    """
    mu_o, sd_o = colour_stats(observed)
    mu_t, sd_t = colour_stats(target)
    gain = (sd_t / sd_o.clamp_min(1e-6)).clamp(1 / _MAX_GAIN, _MAX_GAIN)
    out = (frames.double() - mu_o) * gain + mu_t
    return out.clamp(0, 1).to(frames.dtype)


def generate_long_video(
    pipe,
    vcu: VCU,
    *,
    window: int = DEFAULT_WINDOW,
    overlap: int = DEFAULT_OVERLAP,
    colour_match: bool = True,
    seed: int = 0,
    cfg: float = 1.0,
    prompt_embeds: torch.Tensor | None = None,
    negative_embeds: torch.Tensor | None = None,
    progress: Progress | ProgressFn | None = None,
    cancel: CancelFn | None = None,
    on_window: Callable[[Window, int, torch.Tensor], None] | None = None,
    **sampler_kwargs,
) -> torch.Tensor:
    """Generate ``vcu`` (any 4k+1 length) window by window; returns frames ``[F, H, W, 3]`` in 0..1.

    Window ``i`` uses seed ``seed + i``. ``sampler_kwargs`` (sampler, steps, shift, control_scale, ...) go
    to :meth:`VDOTPipeline.generate` unchanged. ``progress(done, total)`` counts steps over all windows
    (the per-window step count is what the sampler reports). ``on_window(window, total_windows, made)`` is
    called after each window (``made[:window.end]`` is final).
    """
    for name in ("num_videos", "denoise", "init_frames", "return_latents"):
        if name in sampler_kwargs:
            raise VDOTInputError(name, "is not supported for a long video", "generate one video at full denoise")
    validate_vcu(vcu)
    preset = sampler_kwargs.get("preset", DEFAULT_PRESET)
    check_cfg_interval(get_preset(preset) if isinstance(preset, str) else preset, cfg,
                       sampler_kwargs.get("cfg_start", 0.0), sampler_kwargs.get("cfg_end", 1.0))
    plan = plan_windows(vcu.num_frames, window, overlap)
    # The prompt is the same for every window: encode it once.
    if prompt_embeds is None:
        prompt_embeds = pipe.encode_prompt([vcu.prompt])
    if cfg != 1.0 and negative_embeds is None:
        negative_embeds = pipe.encode_prompt([vcu.negative_prompt])
    made = torch.zeros(vcu.num_frames, vcu.height, vcu.width, 3)
    progress = as_progress(progress, cancel)
    for w in plan:
        progress.check_cancel()
        window_progress = progress.part(w.index, len(plan))  # one bar: steps over all windows
        frames = pipe.generate(
            window_vcu(vcu, w, made), seed=seed + w.index, cfg=cfg, prompt_embeds=prompt_embeds,
            negative_embeds=negative_embeds, progress=window_progress, **sampler_kwargs,
        )[0]
        if window_progress.total is not None:
            window_progress.update_to(window_progress.total)  # the window's end, whatever the sampler reported
        new = frames[w.keep:]
        if w.keep and colour_match:
            new = match_colours(new, frames[: w.keep], made[w.start:w.start + w.keep])
        made[w.start + w.keep:w.end] = new
        logger.info("long video: window %d/%d done (frames %d-%d, %d kept)", w.index + 1, len(plan), w.start,
                    w.end - 1, w.keep)
        if on_window is not None:
            on_window(w, len(plan), made)
    return made
