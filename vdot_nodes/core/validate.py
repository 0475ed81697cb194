"""The one validation layer: every value ``vdot generate``, ``vdot preprocess`` and the nodes accept is
checked here, before any model loads, so a bad flag or widget never costs a 14B load or a finished
generation.

Core names each input by what it is (``shift``, ``num_frames``, ``out``); each front end renames
the error with its own table (:func:`~vdot_nodes.core.errors.renamed_input`: the CLI's ``--shift``,
``--frames``; a node's socket), so an error names exactly what the user typed or set. Only values that
are present (not ``None``) are checked, so front ends with fewer inputs, or defaults filled in later,
share the same rules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .atomic import check_target
from .errors import VDOTInputError, input_ref
from .sampling import MAX_STEPS, NUM_TRAIN_TIMESTEPS

MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF  # torch generators take unsigned 64-bit seeds
MAX_FRAMES = 1025  # 64 s at Wan's 16 fps; every frame is decoded and held at once
MAX_SIDE = 2048  # generated width / height
MAX_PREPROCESS_SIDE = 4096  # control videos may be made at source resolution
MAX_NUM_VIDEOS = 16  # the videos of one call are one transformer batch
MAX_TIMESTEPS = MAX_STEPS  # one cap on step counts, defined with the sampler presets
MAX_OUTPUT_BYTES = 16 * 2**30  # the decoded float32 frames of one call, all held in memory at once
VIDEO_SUFFIXES = (".mp4",)  # what write_video makes; a path without a suffix is a folder of PNG frames


@dataclass(frozen=True)
class Bound:
    """An inclusive range for a number (``low_open``: the low end itself is excluded)."""

    kind: type  # int or float
    low: float
    high: float
    fix: str
    low_open: bool = False

    def describe(self) -> str:
        low, high = (int(self.low), int(self.high)) if self.kind is int else (f"{self.low:g}", f"{self.high:g}")
        return f"{'(' if self.low_open else '['}{low}, {high}]"


BOUNDS: dict[str, Bound] = {
    "num_frames": Bound(int, 1, MAX_FRAMES, "use 4k+1 frames up to 1025, e.g. 81 (5 s at 16 fps)"),
    "height": Bound(int, 16, MAX_SIDE, "use a multiple of 16 up to 2048, e.g. 480"),
    "width": Bound(int, 16, MAX_SIDE, "use a multiple of 16 up to 2048, e.g. 832"),
    "num_videos": Bound(int, 1, MAX_NUM_VIDEOS, "use 1 to 16 (run again for more)"),
    "seed": Bound(int, 0, MAX_SEED, "use a seed from 0 to 2^64 - 1"),
    "steps": Bound(int, 1, MAX_TIMESTEPS, "use 4 (VDOT was distilled for 4)"),
    "teacher_steps": Bound(int, 1, 1000, "use e.g. 50"),
    "keep_frames": Bound(int, 1, MAX_FRAMES, "keep at least one source frame"),
    "shift": Bound(float, 0.0, 100.0, "use 5.0 (VDOT's default) or another value > 0", low_open=True),
    "cfg": Bound(float, 0.0, 100.0, "use 1 (off; VDOT's guidance is distilled)"),
    "control_scale": Bound(float, 0.0, 10.0, "use 1.0"),
    "denoise": Bound(float, 0.0, 1.0, "use 1.0 to generate from noise", low_open=True),
    "fps": Bound(float, 1.0, 240.0, "use e.g. 16 (Wan's rate)"),
    "crf": Bound(int, 0, 51, "use 17 (lower is better quality)"),
    # Load Video's widgets
    "frame_load_cap": Bound(int, 0, 4096, "use 0 (all frames) or the number of frames to load"),
    "skip_first_frames": Bound(int, 0, 100_000, "use 0 or the number of frames to skip"),
    "select_every_nth": Bound(int, 1, 64, "use 1 (every frame) or 2 (every other frame)"),
}
PREPROCESS_BOUNDS: dict[str, Bound] = {
    "height": Bound(int, 1, MAX_PREPROCESS_SIDE, "use at most 4096 pixels"),
    "width": Bound(int, 1, MAX_PREPROCESS_SIDE, "use at most 4096 pixels"),
    "num_frames": Bound(int, 1, 10**6, "give a positive frame count"),
    "fps": BOUNDS["fps"],
    "crf": BOUNDS["crf"],
    "batch_size": Bound(int, 1, 4096, "use e.g. 16"),
}


def _value(values: Any, key: str):
    """``values[key]`` for a mapping, ``values.key`` for an argparse namespace; None when absent."""
    if isinstance(values, Mapping):
        return values.get(key)
    return getattr(values, key, None)


def check_number(key: str, value, bound: Bound, name: str | None = None):
    """``value`` as ``bound.kind`` inside ``bound``; NaN / inf, bools, strings and fractions for an int
    are refused, naming the input (``name``, default ``key``)."""
    name = name or key
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VDOTInputError(name, f"must be a number, got {type(value).__name__} {value!r}", bound.fix)
    if isinstance(value, float) and not math.isfinite(value):
        raise VDOTInputError(name, f"is {value} (not a finite number)", bound.fix)
    if bound.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise VDOTInputError(name, f"must be a whole number, got {value}", bound.fix)
        value = int(value)
    else:
        value = float(value)
    low_ok = value > bound.low if bound.low_open else value >= bound.low
    if not low_ok or value > bound.high:
        raise VDOTInputError(name, f"is {value}, outside {bound.describe()}", bound.fix)
    return value


def check_timesteps(timesteps: Sequence, name: str = "timesteps") -> tuple[float, ...]:
    """Few-step timesteps: 1..100 finite values in (0, 1000], strictly decreasing, none repeated."""
    fix = "give strictly decreasing timesteps in (0, 1000], e.g. 1000,750,500,250"
    if isinstance(timesteps, (str, bytes)) or not isinstance(timesteps, Sequence):
        raise VDOTInputError(name, f"must be a list of numbers, got {type(timesteps).__name__}", fix)
    if not 1 <= len(timesteps) <= MAX_TIMESTEPS:
        raise VDOTInputError(name, f"has {len(timesteps)} entries", f"give 1 to {MAX_TIMESTEPS}; {fix}")
    bound = Bound(float, 0.0, float(NUM_TRAIN_TIMESTEPS), fix, low_open=True)
    values = tuple(check_number(name, t, bound) for t in timesteps)
    repeated = sorted({t for t in values if values.count(t) > 1})
    if repeated:
        raise VDOTInputError(name, f"repeats {', '.join(f'{t:g}' for t in repeated)}", fix)
    if list(values) != sorted(values, reverse=True):
        raise VDOTInputError(name, f"{', '.join(f'{t:g}' for t in values)} are not in decreasing order", fix)
    return values


def check_device(device, name: str = "device") -> torch.device | None:
    """A device string that exists on this machine (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu:N``);
    None means "pick one" and passes."""
    if device is None:
        return None
    fix = "use cpu, cuda or cuda:N (N < the number of GPUs), or leave it unset"
    if not isinstance(device, (str, torch.device)):
        raise VDOTInputError(name, f"must be a device name, got {type(device).__name__}", fix)
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise VDOTInputError(name, f"{str(device)!r} is not a device name", fix) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    elif dev.type in ("cuda", "xpu"):
        backend = getattr(torch, dev.type)
        available = backend.is_available()
        count = backend.device_count() if available else 0
    else:
        raise VDOTInputError(name, f"device type {dev.type!r} is not supported", fix)
    if not available:
        raise VDOTInputError(name, f"{dev} was asked for but this machine has no {dev.type.upper()} device",
                             "use cpu, or leave it unset")
    if dev.index is not None and dev.index >= count:
        raise VDOTInputError(name, f"{dev} was asked for but this machine has {count} {dev.type} device(s)",
                             f"use {dev.type}:0 to {dev.type}:{count - 1}")
    return dev


def output_kind(out: str | os.PathLike, name: str = "out") -> str:
    """``"video"`` for a ``.mp4`` path, ``"frames"`` for a path without a suffix or ending in ``/``.

    Anything else (``.webm``, ``.gif``, ``.png``, ``run.v2``) is refused instead of silently becoming
    a folder of PNGs.
    """
    text = os.fspath(out)
    if "\x00" in text:
        raise VDOTInputError(name, "contains a NUL byte", "use a plain file name")
    if not text.strip():
        raise VDOTInputError(name, "is empty", "give an output name such as video.mp4")
    if text.endswith(("/", os.sep)):
        return "frames"
    suffix = Path(text).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix == "":
        return "frames"
    raise VDOTInputError(name, f"{text} ends in {suffix!r}, which VDOT does not write",
                         "name it something.mp4 for a video, or a folder name without a suffix (or ending in /) "
                         "for PNG frames")


def numbered_outputs(out: str | os.PathLike, num_videos: int) -> list[Path]:
    """The paths ``num_videos`` videos are written to: ``out`` itself for one, else ``stem_00``, ``stem_01`` …"""
    path = Path(out)
    if num_videos == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i:02d}{path.suffix}") for i in range(num_videos)]


def check_outputs(out, num_videos: int = 1, overwrite: bool = False, name: str = "out") -> list[Path]:
    """Every path a run will write (each numbered name too) is writable and free, checked now."""
    kind = output_kind(out, name)
    if kind == "video":  # before any model loads, not after the run
        from .video_io import pyav

        pyav(name)
    targets = numbered_outputs(out, num_videos)
    for target in targets:
        check_target(target, overwrite, name, folder=kind == "frames")
    return targets


def check_memory(num_frames: int, height: int, width: int, num_videos: int = 1) -> int:
    """Refuse a call whose float32 latents and decoded frames (all held at once) pass
    :data:`MAX_OUTPUT_BYTES`; returns the estimate in bytes. (Model memory is the loader's budget.)"""
    latents = 16 * ((num_frames - 1) // 4 + 1) * (height // 8) * (width // 8)  # Wan VAE: 16 ch, 4x time, 8x space
    need = num_videos * (num_frames * height * width * 3 + latents) * 4
    if need > MAX_OUTPUT_BYTES:
        raise VDOTInputError(
            "num_frames", f"{num_videos} video(s) x {num_frames} frames x {width}x{height} need "
            f"{need / 2**30:.1f} GiB for their latents and decoded frames (cap {MAX_OUTPUT_BYTES / 2**30:.0f} GiB)",
            f"lower {input_ref('num_frames')}, {input_ref('width')}/{input_ref('height')} or {input_ref('num_videos')}")
    return need


def validate_generate(values) -> None:
    """Check everything a generate call takes that is present in ``values`` (a mapping or an argparse
    namespace with semantic keys): numbers (type, finiteness, range), seed + num_videos, timesteps,
    device, the output targets (every numbered name) and the memory estimate. Errors name the semantic
    keys; front ends rename them (:func:`~vdot_nodes.core.errors.inputs_named`)."""
    checked = {}
    for key, bound in BOUNDS.items():
        value = _value(values, key)
        if value is not None:
            checked[key] = check_number(key, value, bound)
    seed, count = checked.get("seed"), checked.get("num_videos", 1)
    if seed is not None and seed + count - 1 > MAX_SEED:  # video i uses seed + i
        raise VDOTInputError("seed", f"{seed} + {count - 1} (one seed per video) passes 2^64 - 1",
                             f"use a seed of at most {MAX_SEED - count + 1}")
    if _value(values, "timesteps") is not None:
        check_timesteps(_value(values, "timesteps"))
    check_device(_value(values, "device"))
    if _value(values, "out") is not None:
        check_outputs(_value(values, "out"), count, bool(_value(values, "overwrite")))
    if all(k in checked for k in ("num_frames", "height", "width")):
        check_memory(checked["num_frames"], checked["height"], checked["width"], count)


def validate_preprocess(values) -> None:
    """The numbers ``vdot preprocess`` takes (sizes capped at 4096 px) and their finiteness."""
    for key, bound in PREPROCESS_BOUNDS.items():
        value = _value(values, key)
        if value is not None:
            check_number(key, value, bound)


__all__ = ["BOUNDS", "MAX_FRAMES", "MAX_NUM_VIDEOS", "MAX_OUTPUT_BYTES", "MAX_SEED", "MAX_SIDE", "Bound",
           "check_device", "check_memory", "check_number", "check_outputs", "check_timesteps", "numbered_outputs",
           "output_kind", "validate_generate", "validate_preprocess"]
