"""VDOT LoRA Loader: a Wan LoRA on the model socket, applied while a sampler runs.

The loader's model is shared (cached across runs and graphs), so this node never changes it: it
returns the same model with the LoRA added to its list, and VDOT Sampler / VDOT Long Video apply
the list for the duration of their run (:func:`vdot_nodes.core.lora.applied`) and restore the
original weights afterwards. A re-run with another strength starts again from the original weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

from ..core import lora as core
from ..core.errors import VDOTInputError
from ..core.validate import Bound, check_number
from . import comfy

logger = logging.getLogger(__name__)

# Parsed LoRA files by (path, size, mtime): re-running a graph does not re-read the file.
_FILES: dict[tuple, core.LoraFile] = {}
_MAX_FILES = 8


def _read(path) -> core.LoraFile:
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FILES:
        if len(_FILES) >= _MAX_FILES:
            _FILES.pop(next(iter(_FILES)))
        _FILES[key] = core.read_lora(path, input_name="lora_name")
    return _FILES[key]


def lora_context(model):
    """What a sampler node wraps its run in: the model socket's LoRAs applied, then undone."""
    loras = getattr(model, "loras", ())
    if not loras:
        return contextlib.nullcontext([])
    return core.applied(model.module, loras, input_name="lora_name")


class VDOTLoraLoader:
    DESCRIPTION = ("Apply a Wan LoRA (ComfyUI/Kijai, musubi/kohya or diffusers format; .safetensors from "
                   "models/loras) to the model, on its Wan and VACE blocks. Chain several for several LoRAs. "
                   "The loaded model itself is never changed: samplers apply the LoRA while they run.")
    CATEGORY = "VDOT/loaders"
    RETURN_TYPES = ("VDOT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with this LoRA added, for VDOT Sampler / VDOT Long Video.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VDOT_MODEL", {"tooltip": "From VDOT Model Loader (or another LoRA Loader)."}),
            "lora_name": (comfy.list_models("loras"), {
                "tooltip": "LoRA file in models/loras, e.g. a step-distilled Wan2.1 T2V LoRA. Safetensors only."}),
            "strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                   "tooltip": "Multiplies the LoRA's change of the weights; 0 = off."}),
            "apply": (list(core.APPLY_MODES), {
                "default": "on_the_fly",
                "tooltip": "on_the_fly: each layer adds up(down(x)) while sampling; no copy of the weights (the "
                           "loaded model is shared, so a merge needs one per run: 28 GB for a full 14B LoRA) and the "
                           "LoRA's change is not rounded into bf16 weights; rank 32 adds 1-3% of a 14B layer's FLOPs. "
                           "merge: merged copies of the changed weights for the run (fastest sampling, most memory). "
                           "auto: merge, or on the fly for fp8-stored weights (merging into fp8 loses the LoRA)."}),
        }}

    def load(self, model, lora_name, strength, apply):
        strength = check_number("strength", strength, Bound(float, -4.0, 4.0, "use 1.0 (0 = off)"))
        if apply not in core.APPLY_MODES:  # an API-format workflow can send anything
            raise VDOTInputError("apply", f"is {apply!r}", f"use one of {', '.join(core.APPLY_MODES)}")
        path = comfy.model_path("loras", lora_name, "lora_name")
        lora = _read(path)
        report = core.check_lora(model.module, lora, input_name="lora_name")  # wrong model: error here, not later
        logger.log(logging.WARNING if report.unmatched else logging.INFO, "VDOT LoRA Loader: %s: %d modules will be "
                   "patched%s", lora.name, len(report.merged), f"; {len(report.unmatched)} keys match nothing in this "
                   f"model (first: {', '.join(report.unmatched[:3])})" if report.unmatched else "")
        spec = core.LoraSpec(lora, float(strength), apply)
        return (dataclasses.replace(model, loras=tuple(getattr(model, "loras", ())) + (spec,)),)


NODE_CLASS_MAPPINGS = {"VDOTLoraLoader": VDOTLoraLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTLoraLoader": "VDOT LoRA Loader"}
