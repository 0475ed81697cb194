"""The task registry: every VDOT task is one :class:`TaskSpec` entry in :data:`TASKS`, read by every consumer.

A task entry says what the task is (name, family, description), which inputs it takes (typed, from
:data:`INPUTS`: required, exactly one of, optional), how its VCU is built from them (``build``, over
the builders of :mod:`vdot_nodes.core.vcu`), how training draws what a data row leaves open
(``draw``: outpaint sides, extension clip, inpaint box), which ComfyUI node exposes it (``node``, a
class name: core never imports the nodes) and the names the official training CSV gives it.

Readers: the CLI (``vdot tasks``, ``--task`` choices, which inputs it passes), the VCU nodes (the
``kind`` lists and the task each builds), ``tools/build_workflows.py`` (one workflow per task),
``training/data/manifest.py`` (the fields each task needs, the CSV task names, :func:`sample_to_vcu`)
and the toy report (which tasks fix the layout). Adding a task is one entry in :func:`_task_table`
(plus, where it is a new kind of input, its ``build``/``draw``).

Errors name the *semantic* input (``control``, ``references``, ``expand``); each front end renames
them to its own spelling (a CLI flag, a node socket, a manifest field) with
:func:`vdot_nodes.core.errors.renamed_input`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import VDOTInputError, VDOTMissingInput
from .vcu import (
    CONTROL_KINDS,
    VCU,
    as_video,
    build_control_vcu,
    build_extension_vcu,
    build_firstframe_control_vcu,
    build_inpaint_vcu,
    build_outpaint_vcu,
    build_r2v_vcu,
    build_reference_control_vcu,
    build_t2v_vcu,
)

FAMILIES = ("T2V", "R2V", "V2V", "MV2V", "composite")
__all__ = ["CONTROL_KINDS", "FAMILIES", "INPUTS", "TASKS", "DrawRanges", "TaskInput", "TaskSpec", "build_vcu",
           "get_task", "released_task_names", "tasks_of_node"]
INPUT_KINDS = ("video", "mask", "image", "images", "box", "sides", "int", "float", "choice", "text")


@dataclass(frozen=True)
class TaskInput:
    """One input :func:`build_vcu` takes: its semantic name (the keyword), its kind (one of
    :data:`INPUT_KINDS`: ``video`` ``[F, H, W, 3]``, ``mask`` ``[F, H, W]`` or ``[H, W]``, ``image``
    ``[H, W, 3]``, ``images`` a list of them, ``box`` x0,y0,x1,y1 pixels, ``sides`` top,bottom,left,right
    pixels, numbers, a ``choice`` or ``text``) and the words messages use for it."""

    name: str
    kind: str
    words: str


#: Every input of every task, by semantic name.
INPUTS: dict[str, TaskInput] = {i.name: i for i in (
    TaskInput("control", "video", "control video"),
    TaskInput("source", "video", "source video"),
    TaskInput("mask", "mask", "mask"),
    TaskInput("box", "box", "box"),
    TaskInput("references", "images", "reference image(s)"),
    TaskInput("first_frame", "image", "first-frame image"),
    TaskInput("expand", "sides", "outpaint sides (top, bottom, left, right pixels)"),
    TaskInput("overlap", "int", "outpaint overlap (pixels)"),
    TaskInput("mode", "choice", "extension mode (first, last, random)"),
    TaskInput("keep_frames", "int", "number of source frames kept"),
    TaskInput("seed", "int", "seed of the random extension clip"),
    TaskInput("threshold", "float", "mask threshold"),
    TaskInput("num_frames", "int", "frame count"),
    TaskInput("height", "int", "height"),
    TaskInput("width", "int", "width"),
    TaskInput("prompt", "text", "prompt"),
    TaskInput("negative_prompt", "text", "negative prompt"),
)}

#: Inputs every task accepts. ``num_frames``/``height``/``width`` set the size of t2v / r2v; for
#: tasks driven by a video they are optional and, when given, must agree with that video
#: (for outpaint: with the *source*, before expansion).
COMMON_INPUTS = ("prompt", "negative_prompt", "num_frames", "height", "width")
SHAPE_INPUTS = ("num_frames", "height", "width")


@dataclass(frozen=True)
class DrawRanges:
    """What training draws a task's open choices from: each outpaint side removes a fraction in
    ``outpaint`` of its axis; each side of a random inpaint box is a fraction in ``inpaint_box`` of the frame."""

    outpaint: tuple[float, float] = (0.05, 0.25)
    inpaint_box: tuple[float, float] = (0.2, 0.6)


#: ``build(task, inputs, text)``: the VCU from the present inputs (``text``: prompt, negative_prompt).
Builder = Callable[[str, Mapping[str, Any], Mapping[str, str]], VCU]
#: ``draw(video, given, generator, ranges)``: the task inputs made from a training clip ``[F, H, W, 3]``;
#: ``given`` holds what the data fixes (semantic names), the rest is drawn from ``generator``.
Draw = Callable[[torch.Tensor, Mapping[str, Any], "torch.Generator | None", DrawRanges], dict]


@dataclass(frozen=True)
class TaskSpec:
    """One task. ``required``: inputs that must be given; ``one_of``: exactly one of these must be
    given (inpaint: ``mask`` or ``box``); ``optional``: task-specific extras. :data:`COMMON_INPUTS` are
    always accepted; anything else is rejected. ``spatial``: the condition fixes where things are in
    every frame (a control video, or the kept pixels of the source), so layout metrics apply."""

    name: str
    family: str
    description: str
    build: Builder = field(compare=False, repr=False)
    node: str
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    control_kind: str | None = None
    uvcbench: bool = True
    spatial: bool = False
    draw: Draw | None = field(default=None, compare=False, repr=False)
    released_names: tuple[str, ...] = ()

    @property
    def needs_control(self) -> bool:
        return "control" in self.required

    @property
    def needs_references(self) -> bool:
        return "references" in self.required

    @property
    def needs_first_frame(self) -> bool:
        return "first_frame" in self.required

    @property
    def needs_source(self) -> bool:
        return "source" in self.required

    @property
    def needs_mask(self) -> bool:
        return "mask" in self.required or "mask" in self.one_of

    @property
    def driving_video(self) -> str | None:
        """The input whose video sets frames and size (``control`` or ``source``); None for t2v / r2v."""
        return "control" if self.needs_control else ("source" if self.needs_source else None)

    @property
    def accepted_inputs(self) -> tuple[str, ...]:
        return COMMON_INPUTS + self.required + self.one_of + self.optional

    @property
    def inputs(self) -> tuple[TaskInput, ...]:
        """The task's own inputs, typed (required, then exactly-one-of, then optional)."""
        return tuple(INPUTS[n] for n in self.required + self.one_of + self.optional)

    @property
    def needs(self) -> str:
        """Human-readable list of required inputs, e.g. ``"source video + (mask or box)"``."""
        parts = [INPUTS[n].words for n in self.required]
        if self.one_of:
            parts.append("(" + " or ".join(INPUTS[n].words for n in self.one_of) + ")")
        return " + ".join(parts) if parts else "prompt only"


# --------------------------------------------------------------------------------------------
# Builders: the registry's inputs → the vcu.py builder of each family
# --------------------------------------------------------------------------------------------


def _pick(inputs: Mapping[str, Any], *names: str) -> dict:
    return {k: inputs[k] for k in names if k in inputs}


def _build_t2v(task, x, text):
    return build_t2v_vcu(**_pick(x, *SHAPE_INPUTS), **text)


def _build_r2v(task, x, text):
    return build_r2v_vcu(x["references"], **_pick(x, *SHAPE_INPUTS), **text)


def _build_control(task, x, text):
    return build_control_vcu(x["control"], task=task, **text)


def _build_outpaint(task, x, text):
    return build_outpaint_vcu(x["source"], x["expand"], overlap=x.get("overlap", 0), **text)


def _build_extension(task, x, text):
    return build_extension_vcu(x["source"], **_pick(x, "mode", "keep_frames", "seed"), **text)


def _build_inpaint(task, x, text):
    return build_inpaint_vcu(x["source"], **_pick(x, "mask", "box", "threshold"), **text)


def _build_firstframe(task, x, text):
    return build_firstframe_control_vcu(x["control"], x["first_frame"], task=task, **text)


def _build_reference_control(task, x, text):
    return build_reference_control_vcu(x["control"], x["references"], task=task, **text)


# --------------------------------------------------------------------------------------------
# Training draws: what a data row leaves open, drawn from the run's generator
# --------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator | None, low: int, high: int) -> int:
    """Integer in ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _draw_outpaint(video, given, generator, ranges: DrawRanges) -> dict:
    """The source is the clip's interior; each expanded side removes a fraction of its axis, on both
    horizontal sides, both vertical sides or all four (``given["expand"]`` fixes it)."""
    f, h, w = video.shape[:3]
    if "expand" in given:
        top, bottom, left, right = (int(v) for v in given["expand"])
    else:
        axes = ("horizontal", "vertical", "all")[_randint(generator, 0, 2)]
        top = bottom = left = right = 0
        if axes in ("vertical", "all"):
            top, bottom = (max(1, round(h * _uniform(generator, *ranges.outpaint))) for _ in range(2))
        if axes in ("horizontal", "all"):
            left, right = (max(1, round(w * _uniform(generator, *ranges.outpaint))) for _ in range(2))
    return {"source": video[:, top : h - bottom, left : w - right], "expand": (top, bottom, left, right)}


def _draw_extension(video, given, generator, ranges: DrawRanges) -> dict:
    """Mode first / last / random and the random clip's seed (``given`` mode / keep_frames fix them)."""
    mode = given.get("mode") or ("first", "last", "random")[_randint(generator, 0, 2)]
    keep = {"keep_frames": int(given["keep_frames"])} if given.get("keep_frames") else {}
    return {"source": video, "mode": mode, "seed": _randint(generator, 0, 2**31 - 1), **keep}


def _draw_inpaint(video, given, generator, ranges: DrawRanges) -> dict:
    """The given mask, else the given box, else a random box."""
    if given.get("mask") is not None:
        return {"source": video, "mask": given["mask"]}
    f, h, w = video.shape[:3]
    if "box" in given:
        box = tuple(int(v) for v in given["box"])
    else:
        bh = max(1, round(h * _uniform(generator, *ranges.inpaint_box)))
        bw = max(1, round(w * _uniform(generator, *ranges.inpaint_box)))
        y0, x0 = _randint(generator, 0, h - bh), _randint(generator, 0, w - bw)
        box = (x0, y0, x0 + bw, y0 + bh)
    return {"source": video, "box": box}


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _task_table() -> dict[str, TaskSpec]:
    signal = {"depth": "a depth-map", "pose": "a pose-skeleton", "flow": "an optical-flow",
              "grey": "a greyscale", "scribble": "a scribble/edge"}
    tasks = [
        TaskSpec("t2v", "T2V", "text to video", _build_t2v, "VDOTVCUText2Video", uvcbench=False),
        TaskSpec("r2v", "R2V", "video of the subject(s) in one or more face/object reference images", _build_r2v,
                 "VDOTVCUReference", required=("references",), released_names=("reference",)),
    ]
    for kind in CONTROL_KINDS:
        tasks.append(TaskSpec(kind, "V2V", f"follow {signal[kind]} control video", _build_control, "VDOTVCUControl",
                              required=("control",), control_kind=kind, spatial=True))
    tasks += [
        TaskSpec("outpaint", "MV2V", "expand the canvas: the source sits in a larger frame, the new border is generated",
                 _build_outpaint, "VDOTVCUOutpaint", required=("source", "expand"), optional=("overlap",),
                 spatial=True, draw=_draw_outpaint),
        TaskSpec("extension", "MV2V", "temporal extension: keep the first/last/a random clip of the source, generate the rest",
                 _build_extension, "VDOTVCUExtension", required=("source",), optional=("mode", "keep_frames", "seed"),
                 draw=_draw_extension),
        TaskSpec("inpaint", "MV2V", "regenerate the masked region (mask or box) of the source video", _build_inpaint,
                 "VDOTVCUInpaint", required=("source",), one_of=("mask", "box"), optional=("threshold",),
                 uvcbench=False, spatial=True, draw=_draw_inpaint),
    ]
    for kind in CONTROL_KINDS:
        tasks.append(TaskSpec(f"firstframe_{kind}", "composite",
                              f"start from a given first frame and follow {signal[kind]} control video",
                              _build_firstframe, "VDOTVCUFirstFrameControl", required=("control", "first_frame"),
                              control_kind=kind, spatial=True))
    for kind in CONTROL_KINDS:
        tasks.append(TaskSpec(f"reference_{kind}", "composite", f"reference subject(s) following {signal[kind]} control video",
                              _build_reference_control, "VDOTVCUReferenceControl", required=("control", "references"),
                              control_kind=kind, spatial=True))
    table = {}
    for t in tasks:
        assert t.family in FAMILIES and t.name not in table and all(i in INPUTS for i in t.accepted_inputs), t.name
        table[t.name] = TaskSpec(**{**t.__dict__, "description": f"{t.description} [needs: {t.needs}]"})
    return table


#: Every task: t2v, the 18 UVCBench tasks (``uvcbench=True``) and inpaint (not in UVCBench).
TASKS: dict[str, TaskSpec] = _task_table()


def get_task(task: str) -> TaskSpec:
    if task not in TASKS:
        raise VDOTInputError("task", f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}")
    return TASKS[task]


def tasks_of_node(node: str) -> list[TaskSpec]:
    """The tasks a VCU node class exposes, in registry order."""
    return [spec for spec in TASKS.values() if spec.node == node]


def released_task_names() -> dict[str, str]:
    """Task names of the official training CSV that differ from ours → ours."""
    return {alias: spec.name for spec in TASKS.values() for alias in spec.released_names}


# --------------------------------------------------------------------------------------------
# The dispatcher
# --------------------------------------------------------------------------------------------


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, (list, tuple)) and len(value) == 0:
        return False
    return True


def _check_shape_args(spec: TaskSpec, video, name: str, shape: dict) -> None:
    """For video-driven tasks: num_frames/height/width, when given, must match the video."""
    v = as_video(video, name)
    actual = {"num_frames": v.shape[0], "height": v.shape[1], "width": v.shape[2]}
    for key, value in shape.items():
        if value is not None and value != actual[key]:
            what = "frames" if key == "num_frames" else key
            raise VDOTInputError(key, f"is {value} but the {name} video's {what} is {actual[key]}",
                                 f"set {key} to {actual[key]} or resize the {name} video "
                                 f"(task {spec.name} takes its size from the {name})")


def build_vcu(task: str, **inputs) -> VCU:
    """Build the VCU for ``task`` (a key of :data:`TASKS`) from named inputs (:data:`INPUTS`; torch
    tensors in ComfyUI layout: videos ``[F, H, W, 3]`` 0..1, masks ``[F, H, W]`` or ``[H, W]``, images
    ``[H, W, 3]``). Checks that the task's required inputs are present and rejects inputs the task
    does not use (``None`` / empty lists count as absent). Returns a validated :class:`VCU`."""
    spec = get_task(task)
    for key in inputs:
        if key not in INPUTS:
            raise VDOTInputError(key, "is not an input of any task", f"valid inputs: {', '.join(sorted(INPUTS))}")
    given = {k: v for k, v in inputs.items() if _present(v)}
    for key in spec.required:
        if key not in given:
            words = INPUTS[key].words
            raise VDOTMissingInput(key, f"task {task!r} needs a {words} but none was given", f"give the {words}")
    if spec.one_of and sum(k in given for k in spec.one_of) != 1:
        key = next((k for k in spec.one_of if k in given), spec.one_of[0])
        both = sum(k in given for k in spec.one_of) > 1
        problem = f"task {task!r} needs exactly one of {' / '.join(spec.one_of)}" + (", got both" if both else ", got none")
        fix = "give " + " or ".join(f"a {INPUTS[k].words}" for k in spec.one_of)
        if both:
            raise VDOTInputError(key, problem, fix + ", not both")
        raise VDOTMissingInput(key, problem, fix, options=spec.one_of)
    accepted = set(spec.accepted_inputs)
    for key in given:
        if key not in accepted:
            users = [n for n, s in TASKS.items() if key in s.accepted_inputs]
            raise VDOTInputError(key, f"task {task!r} does not use it",
                                 f"remove it, or pick a task that uses it ({', '.join(users)})")
    text = {"prompt": given.pop("prompt", ""), "negative_prompt": given.pop("negative_prompt", "")}
    video_name = spec.driving_video
    if video_name is not None:
        shape = {k: given.pop(k) for k in SHAPE_INPUTS if k in given}
        _check_shape_args(spec, given[video_name], video_name, shape)
    return spec.build(task, given, text)
