"""Preprocess nodes: make control videos from a source video (``vdot_nodes.core.preprocess``).

Each node runs one registered preprocessor over the whole video in batches, with a progress bar
and Cancel between batches. The output has the input's frame count and size; use VDOT Fit Video
first to pick them.
"""

from __future__ import annotations

from ..core.preprocess import run_preprocessor
from . import comfy

_IMAGES = ("IMAGE", {"tooltip": "Source video (frames as the batch)."})


def _run(kind: str, images, **options):
    return (run_preprocessor(kind, images, progress=comfy.make_progress(int(images.shape[0]), kind),
                             cancel=comfy.make_cancel(), **options),)


class _PreprocessNode:
    CATEGORY = "VDOT/preprocess"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("control",)
    OUTPUT_TOOLTIPS = ("Control video for a VDOT VCU node.",)
    FUNCTION = "run"


class VDOTGrey(_PreprocessNode):
    DESCRIPTION = "Greyscale control video (OpenCV: 0.299R + 0.587G + 0.114B on all three channels)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": _IMAGES}}

    def run(self, images):
        return _run("grey", images)


class VDOTScribble(_PreprocessNode):
    DESCRIPTION = "Scribble control video: dark strokes on white, as VACE's scribble annotator (XDoG or Canny)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES,
            "method": (["xdog", "canny"], {"default": "xdog", "tooltip": "xdog: soft hand-drawn-like strokes; "
                                                                         "canny: one-pixel edges."}),
            "thin": ("BOOLEAN", {"default": False, "tooltip": "Thin strokes to one pixel (Zhang-Suen)."}),
        }}

    def run(self, images, method, thin):
        return _run(f"scribble_{method}", images, thin=thin)


class VDOTOpticalFlow(_PreprocessNode):
    DESCRIPTION = "Optical-flow control video drawn with the Middlebury colour wheel, as VACE's flow annotator."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES,
            "method": (["dis", "farneback"], {"default": "dis", "tooltip": "OpenCV estimator: DIS (fast, good) "
                                                                           "or Farnebäck."}),
        }}

    def run(self, images, method):
        return _run("flow", images, method=method)


NODE_CLASS_MAPPINGS = {"VDOTGrey": VDOTGrey, "VDOTScribble": VDOTScribble, "VDOTOpticalFlow": VDOTOpticalFlow}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTGrey": "VDOT Greyscale", "VDOTScribble": "VDOT Scribble",
                              "VDOTOpticalFlow": "VDOT Optical Flow"}
