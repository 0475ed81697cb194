"""Where the learned annotators' weight files come from, in one table.

Weights are never downloaded at run time. Each annotator lists the file name(s) we look for, where
to download it, and how to convert it when the public file is a pickle (we never unpickle: the user
runs the one-line conversion themselves, once). Files are searched, in order, in

1. an explicit ``weights`` path (a file, or a folder holding one of the expected names) —
   ``vdot preprocess --weights PATH`` or a node's file choice;
2. ``$VDOT_ANNOTATOR_DIR``;
3. the folders the caller passes as ``search_dirs`` (the nodes pass ComfyUI's ``models/vdot_annotators``
   folders), else ``$VDOT_COMFY_ROOT/models/vdot_annotators`` when that variable is set (the CLI).

Core never imports ComfyUI or the node layer: where ComfyUI keeps its folders is data the front end gives.

A missing file is a :class:`VDOTInputError` naming the exact file, the URL and the folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import VDOTInputError

ENV_DIR = "VDOT_ANNOTATOR_DIR"
COMFY_ROOT_ENV = "VDOT_COMFY_ROOT"  # a folder holding ComfyUI's input/, output/, models/ (README: without ComfyUI)


@dataclass(frozen=True)
class AnnotatorWeights:
    key: str
    files: tuple[str, ...]  # accepted file names, preferred first
    url: str
    note: str = ""  # conversion step, if the public file is not safetensors/onnx


ANNOTATOR_WEIGHTS: dict[str, AnnotatorWeights] = {
    "depth_anything_v2": AnnotatorWeights(
        "depth_anything_v2",
        ("depth_anything_v2_vitl.safetensors", "depth_anything_v2_vitb.safetensors",
         "depth_anything_v2_vits.safetensors"),
        "https://huggingface.co/depth-anything/Depth-Anything-V2-Large-hf/resolve/main/model.safetensors",
        "the -hf repos' model.safetensors (Large/Base/Small) — rename it to the file name above",
    ),
    "dwpose_det": AnnotatorWeights(
        "dwpose_det", ("yolox_l.onnx",),
        "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx",
    ),
    "dwpose_pose": AnnotatorWeights(
        "dwpose_pose", ("dw-ll_ucoco_384.onnx",),
        "https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx",
        "needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)",
    ),
    "hed": AnnotatorWeights(
        "hed", ("ControlNetHED.safetensors",),
        "https://huggingface.co/lllyasviel/Annotators/resolve/main/ControlNetHED.pth",
        "convert once (the .pth is a pickle; we never unpickle): python -c \"import torch, safetensors.torch as s; "
        "s.save_file(torch.load('ControlNetHED.pth', weights_only=True), 'ControlNetHED.safetensors')\"",
    ),
    "raft": AnnotatorWeights(
        "raft", ("raft_large_C_T_SKHT_V2.safetensors", "raft_small_C_T_V2.safetensors"),
        "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        "convert once where torchvision is installed: python -c \"import safetensors.torch as s; from "
        "torchvision.models.optical_flow import raft_large, Raft_Large_Weights as W; "
        "s.save_file(raft_large(weights=W.C_T_SKHT_V2).state_dict(), 'raft_large_C_T_SKHT_V2.safetensors')\" "
        "(raft_small / Raft_Small_Weights.C_T_V2 → raft_small_C_T_V2.safetensors also works)",
    ),
}


def annotator_dirs(search_dirs=None) -> list[Path]:
    """Folders searched for annotator weights: ``$VDOT_ANNOTATOR_DIR``, then ``search_dirs`` (ComfyUI's
    ``models/vdot_annotators`` folders, given by the node layer), or — when None —
    ``$VDOT_COMFY_ROOT/models/vdot_annotators`` if that variable is set. Asking never creates a folder."""
    dirs = []
    if os.environ.get(ENV_DIR):
        dirs.append(Path(os.environ[ENV_DIR]).expanduser())
    if search_dirs is None:
        root = os.environ.get(COMFY_ROOT_ENV)
        search_dirs = [Path(root).expanduser() / "models" / "vdot_annotators"] if root else []
    dirs += [Path(d) for d in search_dirs]
    return dirs


def _where(search_dirs=None) -> str:
    dirs = annotator_dirs(search_dirs)
    return (" or ".join(str(d) for d in dirs) if dirs
            else f"a folder named by ${ENV_DIR} (or ComfyUI's models/vdot_annotators/)")


def find_weights(key: str, weights: str | os.PathLike | None = None, input_name: str = "weights",
                 search_dirs=None) -> Path:
    """Path of annotator ``key``'s weight file, or a :class:`VDOTInputError` saying exactly what to get.

    ``weights`` may be a file (used as is, any name) or a folder searched for the expected names;
    without it the folders of :func:`annotator_dirs` (``search_dirs``) are searched.
    """
    spec = ANNOTATOR_WEIGHTS[key]
    if weights is not None and str(weights) != "":
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise VDOTInputError(input_name, f"{path} does not exist",
                                 f"give the path of {spec.files[0]} or of the folder holding it")
        folders = [path]
    else:
        folders = annotator_dirs(search_dirs)
    for folder in folders:
        for name in spec.files:
            if (folder / name).is_file():
                return folder / name
    searched = ", ".join(str(f) for f in folders) or "nowhere (no folder configured)"
    fix = f"download {spec.url} and save it as {spec.files[0]} in {folders[0] if folders else _where(search_dirs)}"
    if spec.note:
        fix += f"; {spec.note}"
    raise VDOTInputError(input_name, f"annotator weight file {spec.files[0]} not found (searched {searched})", fix)


def load_safetensors(path: Path, input_name: str = "weights") -> dict:
    """A safetensors state dict on CPU; anything else (pickles!) is refused with the conversion hint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise VDOTInputError(input_name, f"{path.name} is not a .safetensors file",
                             "convert it to safetensors (see vdot_nodes/core/preprocess/weights.py); "
                             "pickled .pth/.ckpt files are never loaded")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise VDOTInputError(input_name, f"{path} could not be read as safetensors ({exc})",
                             "re-download or re-convert the file") from None


__all__ = ["ANNOTATOR_WEIGHTS", "AnnotatorWeights", "COMFY_ROOT_ENV", "ENV_DIR", "annotator_dirs", "find_weights", "load_safetensors"]
