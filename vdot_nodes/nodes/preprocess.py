"""Preprocess nodes: make control videos from a source video (``vdot_nodes.core.preprocess``).

Each node runs one registered preprocessor over the whole video in batches, with a progress bar
and Cancel between batches. The output has the input's frame count and size; use VDOT Fit Video
first to pick them.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import VDOTInputError
from ..core.preprocess import run_preprocessor
from ..core.preprocess.weights import ANNOTATOR_WEIGHTS, find_weights
from . import comfy

_IMAGES = ("IMAGE", {"tooltip": "Source video (frames as the batch)."})


def _run(kind: str, images, **options):
    return (run_preprocessor(kind, images, progress=comfy.make_progress(int(images.shape[0]), kind),
                             cancel=comfy.make_cancel(), **options),)


def _annotator_choices(key: str, keywords: tuple[str, ...]) -> list[str]:
    """Files in models/vdot_annotators that look like ``key``'s weights; the expected name when none is there
    (choosing it then gives the error saying where to download it)."""
    names = comfy.list_models("vdot_annotators")  # [] when no folder is configured yet
    found = [n for n in names if any(k in Path(n).name.lower() for k in keywords)]
    return found or [ANNOTATOR_WEIGHTS[key].files[0]]


def _annotator_path(key: str, name: str, input_name: str) -> Path:
    """A listed annotator file's path; anything else goes through the search that names the missing file."""
    if name in comfy.list_models("vdot_annotators"):
        return comfy.model_path("vdot_annotators", name, input_name)
    if name not in ANNOTATOR_WEIGHTS[key].files:
        raise VDOTInputError(input_name, f"{name!r} is not in models/vdot_annotators",
                             "put the file in ComfyUI's models/vdot_annotators/ and refresh (R)")
    # The expected name, absent: the search says where to download it and which folder to put it in.
    return find_weights(key, None, input_name, search_dirs=comfy.model_folders("vdot_annotators"))


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
            "method": (["xdog", "canny", "hed"], {"default": "xdog", "tooltip": "xdog: soft hand-drawn-like strokes; "
                       "canny: one-pixel edges; hed: learned soft edges (needs ControlNetHED.safetensors in "
                       "models/vdot_annotators)."}),
            "thin": ("BOOLEAN", {"default": False, "tooltip": "Thin strokes to one pixel (Zhang-Suen; xdog/canny only)."}),
        }}

    def run(self, images, method, thin):
        if method == "hed":
            path = _annotator_path("hed", ANNOTATOR_WEIGHTS["hed"].files[0], "method")
            return _run("scribble_hed", images, weights=str(path))
        return _run(f"scribble_{method}", images, thin=thin)


class VDOTOpticalFlow(_PreprocessNode):
    DESCRIPTION = "Optical-flow control video drawn with the Middlebury colour wheel, as VACE's flow annotator."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES,
            "method": (["dis", "farneback", "raft"], {"default": "dis", "tooltip": "dis / farneback: OpenCV, no "
                       "weights; raft: learned RAFT as VACE (needs raft_large_C_T_SKHT_V2.safetensors or "
                       "raft_small_C_T_V2.safetensors in models/vdot_annotators)."}),
        }}

    def run(self, images, method):
        if method == "raft":
            path = _annotator_path("raft", ANNOTATOR_WEIGHTS["raft"].files[0], "method")
            return _run("flow_raft", images, weights=str(path))
        return _run("flow", images, method=method)


class VDOTDepth(_PreprocessNode):
    DESCRIPTION = ("Depth control video with Depth Anything V2, near = bright, as VACE's depth annotator. "
                   "Weights: model.safetensors of depth-anything/Depth-Anything-V2-*-hf in models/vdot_annotators.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES,
            "model": (_annotator_choices("depth_anything_v2", ("depth",)),
                      {"tooltip": "Depth Anything V2 weights (.safetensors) in models/vdot_annotators."}),
            "normalize": (["frame", "video"], {"default": "frame", "tooltip": "frame: min-max per frame (VACE); "
                                                "video: one range for the whole clip (steadier brightness)."}),
        }}

    def run(self, images, model, normalize):
        return _run("depth", images, weights=str(_annotator_path("depth_anything_v2", model, "model")),
                    normalize=normalize)


class VDOTPose(_PreprocessNode):
    DESCRIPTION = ("Pose control video: DWPose (ONNX Runtime) skeletons drawn OpenPose-style on black, as VACE's pose "
                   "annotator. Needs onnxruntime and yolox_l.onnx + dw-ll_ucoco_384.onnx in models/vdot_annotators.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": _IMAGES,
            "pose_model": (_annotator_choices("dwpose_pose", ("dw-", "dwpose")),
                           {"tooltip": "DWPose whole-body model (dw-ll_ucoco_384.onnx)."}),
            "detector": (_annotator_choices("dwpose_det", ("yolox",)),
                         {"tooltip": "YOLOX person detector (yolox_l.onnx)."}),
            "body": ("BOOLEAN", {"default": True, "tooltip": "Draw the 18-point body."}),
            "hands": ("BOOLEAN", {"default": True, "tooltip": "Draw both 21-point hands."}),
            "face": ("BOOLEAN", {"default": True, "tooltip": "Draw the 68 face points."}),
        }}

    def run(self, images, pose_model, detector, body, hands, face):
        return _run("pose", images, weights=str(_annotator_path("dwpose_pose", pose_model, "pose_model")),
                    detector=str(_annotator_path("dwpose_det", detector, "detector")),
                    body=body, hands=hands, face=face)


NODE_CLASS_MAPPINGS = {"VDOTGrey": VDOTGrey, "VDOTScribble": VDOTScribble, "VDOTOpticalFlow": VDOTOpticalFlow,
                       "VDOTDepth": VDOTDepth, "VDOTPose": VDOTPose}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTGrey": "VDOT Greyscale", "VDOTScribble": "VDOT Scribble",
                              "VDOTOpticalFlow": "VDOT Optical Flow", "VDOTDepth": "VDOT Depth (Depth Anything V2)",
                              "VDOTPose": "VDOT Pose (DWPose)"}
