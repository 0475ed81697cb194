"""Bounded-memory, interruptible Wan VAE encode / decode.

diffusers' ``AutoencoderKLWan`` already works causally, one chunk at a time (encode: the first frame,
then 4 frames per call; decode: one latent frame per call) with a feature cache carried between
chunks, and has spatial tiling with overlap and linear blending (``enable_tiling``). What it lacks is
a way to stop between chunks or to report them; :func:`vae_chunks` adds both with a forward
pre-hook on the encoder and decoder, so every chunk (of every tile) checks ``cancel`` and reports
progress. :func:`vae_tiling` switches diffusers' tiling on for the duration of a call, by default
only above :data:`AUTO_TILE_PIXELS`.

Tiled output differs from untiled only where tiles overlap (the blend); ``tests/test_scale.py``
pins the difference on the tiny VAE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from .progress import CancelFn, Progress, as_progress

AUTO_TILE_PIXELS = 832 * 480  # above 480p: spatial tiles (Wan's own sizes run untiled, as officially)
TILE = 256  # diffusers' defaults: 256-pixel tiles every 192 pixels (64 pixels of blend)
TILE_STRIDE = 192
TILING_MODES = ("auto", "on", "off")

ChunkProgressFn = Callable[[str, int], None]  # (phase "encode" | "decode", chunks done so far)


@contextlib.contextmanager
def vae_chunks(vae, cancel: CancelFn | None = None, progress: Progress | ChunkProgressFn | None = None) -> Iterator[None]:
    """Within the block, every encoder / decoder chunk first honours ``cancel`` and reports ``progress``:
    a :class:`~vdot_nodes.core.progress.Progress` (cancel checked, one ``update`` and a note
    "VAE decode chunk 3" per chunk) or the callback ``progress(phase, chunks_done)``."""
    done = {"encode": 0, "decode": 0}
    handles = []
    reporter = progress if isinstance(progress, Progress) else None
    stop = as_progress(reporter, cancel)

    def hook(phase):
        def pre(module, args, kwargs=None):
            stop.check_cancel()
            done[phase] += 1
            if reporter is not None:
                reporter.update(1)
                reporter.note(f"VAE {phase} chunk {done[phase]}")
            elif progress is not None:
                progress(phase, done[phase])
        return pre

    for phase, module in (("encode", getattr(vae, "encoder", None)), ("decode", getattr(vae, "decoder", None))):
        if module is not None:
            handles.append(module.register_forward_pre_hook(hook(phase)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def wants_tiling(mode: str, height: int, width: int) -> bool:
    if mode not in TILING_MODES:
        from .errors import VDOTInputError

        raise VDOTInputError("vae_tiling", f"unknown VAE tiling mode {mode!r}", f"use one of {', '.join(TILING_MODES)}")
    return mode == "on" or (mode == "auto" and height * width > AUTO_TILE_PIXELS)


@contextlib.contextmanager
def vae_tiling(vae, mode: str, height: int, width: int, tile: int = TILE, stride: int = TILE_STRIDE) -> Iterator[bool]:
    """Spatial tiling (diffusers' ``enable_tiling``) for the block when ``mode`` asks for it; yields whether it is on."""
    on = wants_tiling(mode, height, width) and hasattr(vae, "enable_tiling")
    saved = {k: getattr(vae, k, None) for k in ("use_tiling", "tile_sample_min_height", "tile_sample_min_width",
                                                  "tile_sample_stride_height", "tile_sample_stride_width")}
    if on:
        vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile,
                          tile_sample_stride_height=stride, tile_sample_stride_width=stride)
    try:
        yield on
    finally:
        for k, v in saved.items():
            if v is not None:
                setattr(vae, k, v)


def expected_chunks(vae, phase: str, frames: int, height: int, width: int, mode: str = "auto") -> int:
    """Encoder / decoder calls (what :func:`vae_chunks` counts) of one ``vae.encode`` of ``frames`` pixel
    frames, or one ``vae.decode`` of ``frames`` latent frames, at ``height``×``width`` pixels under
    :func:`vae_tiling` ``mode``. diffusers' loops: encode runs the first frame, then 4 at a time; decode
    one latent frame at a time; with tiling, that per tile (tiles start every stride pixels, or
    stride / compression latent pixels for decode). ``tests/test_preview.py`` pins it against the hooks."""
    if wants_tiling(mode, height, width) and hasattr(vae, "enable_tiling"):
        tile, stride = TILE, TILE_STRIDE
    elif getattr(vae, "use_tiling", False):
        tile, stride = vae.tile_sample_min_height, vae.tile_sample_stride_height
    else:
        tile = stride = None
    calls = 1 + (frames - 1) // 4 if phase == "encode" else frames
    if tile is None:
        return calls
    if phase == "encode":
        if height <= tile and width <= tile:
            return calls
        return calls * -(-height // stride) * -(-width // stride)
    s = int(getattr(vae, "spatial_compression_ratio", 8))
    h, w = height // s, width // s
    if h <= tile // s and w <= tile // s:
        return calls
    return calls * -(-h // (stride // s)) * -(-w // (stride // s))


def generate_chunk_totals(vae, mode: str, num_frames: int, height: int, width: int, *, references: int = 0,
                          num_videos: int = 1, init_frames: bool = False, decode: bool = True,
                          temporal: int = 4) -> dict[str, int]:
    """``{"encode": n, "decode": m}``: the VAE chunks one ``VDOTPipeline.generate`` runs (the VCU's
    inactive and reactive videos, each reference image, the init video for denoise < 1; then each
    video's latents), for a progress bar's total."""
    per_video = expected_chunks(vae, "encode", num_frames, height, width, mode)
    encode = 2 * per_video + references * expected_chunks(vae, "encode", 1, height, width, mode)
    encode += per_video if init_frames else 0
    latent_frames = (num_frames - 1) // temporal + 1
    return {"encode": encode,
            "decode": num_videos * expected_chunks(vae, "decode", latent_frames, height, width, mode) if decode else 0}


__all__ = ["AUTO_TILE_PIXELS", "TILING_MODES", "expected_chunks", "generate_chunk_totals", "vae_chunks", "vae_tiling",
           "wants_tiling"]
