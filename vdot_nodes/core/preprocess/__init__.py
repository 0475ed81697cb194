"""Control-video preprocessors: a registry of ``name → (function, one-line description)``.

Every preprocessor takes a ComfyUI video ``[F, H, W, 3]`` float32 0..1 and returns one of the same
F/H/W, ready for the VCU builders as a control video. :func:`run_preprocessor` first cuts the video
to ``frames`` and resizes it to ``height``×``width`` (so strokes are one output pixel wide and flow
is in output pixels), then runs the preprocessor in batches with ``progress(done, total)`` /
``cancel()`` callbacks.

The weight-free ones here (grey, scribble_xdog, scribble_canny, flow) are always available.
The learned ones — ``depth`` (Depth Anything V2), ``pose`` (DWPose ONNX + OpenPose renderer),
``scribble_hed`` (ControlNetHED) and ``flow_raft`` (RAFT) — load local weight files only; file names,
URLs and folders are in :mod:`.weights` (``Preprocessor.annotator`` names the entry). Importing this
package imports neither OpenCV, transformers, onnxruntime nor torchvision (never needed).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import VDOTInputError
from .flow import flow_to_color, flow_video, optical_flow
from .grey import grey
from .scribble import scribble_canny, scribble_xdog
from .video_ops import DEFAULT_BATCH_SIZE, CancelFn, ProgressFn, fit_video

_RUNTIME_ARGS = ("batch_size", "progress", "cancel")


@dataclass(frozen=True)
class Preprocessor:
    name: str
    fn: Callable[..., torch.Tensor]
    description: str
    annotator: str | None = None  # key in .weights.ANNOTATOR_WEIGHTS when it needs a weight file; None = weight-free

    @property
    def options(self) -> dict[str, object]:
        """Kind-specific keyword options and their defaults (runtime arguments excluded)."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: (None if p.default is inspect.Parameter.empty else p.default)
                for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _RUNTIME_ARGS}


PREPROCESSORS: dict[str, Preprocessor] = {}
ALIASES = {"gray": "grey", "greyscale": "grey", "grayscale": "grey", "scribble": "scribble_xdog",
           "xdog": "scribble_xdog", "canny": "scribble_canny", "optical_flow": "flow"}


def register_preprocessor(name: str, fn: Callable[..., torch.Tensor], description: str,
                          replace: bool = False, annotator: str | None = None) -> Preprocessor:
    """Add a preprocessor: ``fn(video, *, batch_size, progress, cancel, **options) -> video``."""
    if name in PREPROCESSORS and not replace:
        raise ValueError(f"preprocessor {name!r} is already registered")
    spec = Preprocessor(name, fn, description, annotator)
    PREPROCESSORS[name] = spec
    return spec


register_preprocessor("grey", grey, "greyscale: OpenCV RGB→grey (0.299R+0.587G+0.114B) on all 3 channels")
register_preprocessor("scribble_xdog", scribble_xdog,
                      "scribble: XDoG strokes (dark on white, as VACE's scribble annotator; background=black inverts)")
register_preprocessor("scribble_canny", scribble_canny, "scribble: Canny edges, one pixel wide (same polarity as scribble_xdog)")
register_preprocessor("flow", flow_video,
                      "optical flow (OpenCV DIS/Farnebäck) drawn with the Middlebury colour wheel, as VACE's RAFT flow")

# Learned annotators: weights from local files only (see .weights for names, URLs and folders).
from .depth import depth_video  # noqa: E402  (transformers is imported only when a model is loaded)
from .hed import scribble_hed  # noqa: E402
from .pose import draw_pose, pose_video  # noqa: E402  (onnxruntime is imported only when a model is loaded)
from .raft import raft_flow_video  # noqa: E402

register_preprocessor("depth", depth_video,
                      "depth: Depth Anything V2 relative depth, min-max normalised, near = bright (VACE's depth annotator)",
                      annotator="depth_anything_v2")
register_preprocessor("pose", pose_video,
                      "pose: DWPose (ONNX) body/hands/face drawn as OpenPose skeletons on black (VACE's pose annotator)",
                      annotator="dwpose_pose")
register_preprocessor("scribble_hed", scribble_hed,
                      "scribble: HED soft edges (ControlNetHED_Apache2), dark on white like the other scribbles",
                      annotator="hed")
register_preprocessor("flow_raft", raft_flow_video,
                      "optical flow: RAFT (torchvision raft_large/raft_small layout) on the colour wheel, as VACE's flow",
                      annotator="raft")
ALIASES.update({"raft": "flow_raft", "hed": "scribble_hed", "depth_anything": "depth", "depth_anything_v2": "depth", "dwpose": "pose",
                "openpose": "pose"})


def weight_free_preprocessors() -> list[str]:
    """Names of the preprocessors that need no weight file (always runnable)."""
    return [name for name, spec in PREPROCESSORS.items() if spec.annotator is None]


def resolve_name(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in PREPROCESSORS:
        raise VDOTInputError("kind", f"unknown preprocessor {name!r}", f"use one of {', '.join(PREPROCESSORS)}")
    return key


def run_preprocessor(name: str, video: torch.Tensor, *, frames: int | None = None, height: int | None = None,
                     width: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None, **opts) -> torch.Tensor:
    """Run preprocessor ``name`` on ``video`` cut to ``frames`` and resized to height×width.

    ``opts`` are the preprocessor's own options (see ``PREPROCESSORS[name].options``); an option it
    does not have is a :class:`VDOTInputError`. Returns ``[frames, height, width, 3]`` float32 0..1.
    """
    spec = PREPROCESSORS[resolve_name(name)]
    known = spec.options
    for key in opts:
        if key not in known:
            raise VDOTInputError(key, f"is not an option of the {spec.name} preprocessor",
                                 f"use only {', '.join(known) or 'no options'}")
    video = fit_video(video, frames=frames, height=height, width=width)
    return spec.fn(video, batch_size=batch_size, progress=progress, cancel=cancel, **opts)


__all__ = [
    "ALIASES", "PREPROCESSORS", "Preprocessor", "depth_video", "draw_pose", "flow_to_color", "flow_video", "grey",
    "optical_flow", "pose_video", "raft_flow_video", "scribble_hed",
    "register_preprocessor", "resolve_name", "run_preprocessor", "scribble_canny", "scribble_xdog",
    "weight_free_preprocessors",
]
