"""Export the trained generator (its EMA weights when given) for ComfyUI or diffusers.

Two layouts:

* ``"comfy"``: ONE safetensors file with the original Wan/VACE key names, as ComfyUI's repackaged
  ``wan2.1_vace_14B_fp16.safetensors`` uses (no ``model.diffusion_model.`` prefix). The names are
  produced by inverting diffusers' ``convert_wan_transformer_to_diffusers`` and then *checked* by
  running that converter forward on them: the export refuses to write a file the loaders would
  rename to anything other than the model's own keys. ComfyUI and
  :func:`vdot_nodes.core.models.load_transformer` read it like the official release.
* ``"diffusers"``: a model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) that
  ``WanVACETransformer3DModel.from_pretrained`` and ``load_transformer`` read.

Both are written to a temporary sibling and moved into place at the end, so a crash never leaves a
half-written export, and an existing file or folder is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from vdot_nodes.core.atomic import atomic_folder, atomic_save_safetensors, atomic_write_text
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.models.convert.wan_transformer import comfy_key_names

__all__ = ["EXPORT_PRECISIONS", "LAYOUTS", "comfy_key_names", "export_generator", "generator_state_dict"]

LAYOUTS = ("comfy", "diffusers")
EXPORT_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

def generator_state_dict(model, ema=None) -> dict[str, torch.Tensor]:
    """The generator's full CPU state dict, every parameter replaced by its EMA shadow when ``ema`` is given.

    ``ema`` is a :class:`training.ema.EMA` or a plain ``{param_name: tensor}`` dict. Buffers come from
    the model. With an FSDP2-sharded model this is a collective (call it on every rank): rank 0 gets
    the full tensors, the other ranks ``{}``.
    """
    from training.distributed import full_model_state_dict, is_main_process

    model = getattr(model, "_orig_mod", model)
    sharded = _is_sharded(model)
    # Unsharded (one process, or a full copy rebuilt on rank 0): no collective, so rank 0 may call alone.
    state = full_model_state_dict(model) if sharded else {k: v.detach().cpu() for k, v in model.state_dict().items()}
    shadow = None
    if ema is not None:
        shadow = ema.state_dict() if hasattr(ema, "state_dict") else dict(ema)  # EMA.state_dict gathers shards
    if sharded and not is_main_process():
        return {}
    if shadow is not None:
        params = {n for n, _ in model.named_parameters()}
        missing, unexpected = sorted(params - set(shadow)), sorted(set(shadow) - set(state))
        if missing or unexpected:
            raise VDOTInputError("ema", f"the EMA does not match the generator (missing {missing[:3]}, unexpected {unexpected[:3]})",
                                 "pass the EMA built from this generator")
        for k, v in shadow.items():
            if tuple(v.shape) != tuple(state[k].shape):
                raise VDOTInputError("ema", f"EMA tensor {k} has shape {list(v.shape)}, the generator {list(state[k].shape)}",
                                     "pass the EMA built from this generator")
            state[k] = v.detach().cpu()
    return state


def _is_sharded(model) -> bool:
    """True for an FSDP2-sharded model (its parameters are DTensors)."""
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def export_generator(model, path, ema=None, layout: str = "comfy", precision: str = "bf16", metadata: dict | None = None,
                     *, overwrite: bool = False) -> Path:
    """Write the generator (EMA weights if ``ema``) to ``path`` in ``layout``; returns the path written.

    ``layout="comfy"``: ``path`` is a ``.safetensors`` file (original key names). ``"diffusers"``:
    ``path`` is a folder. ``precision`` casts floating tensors (``fp32 | bf16 | fp16``); ``metadata``
    (str -> str; other values are JSON-encoded) is stored in the safetensors header, e.g. the step.
    With an FSDP2-sharded model call it on every rank (the weights are gathered) and rank 0 writes;
    an unsharded model (incl. a full copy on rank 0) is written by whichever rank calls.
    """
    from diffusers import WanVACETransformer3DModel

    if layout not in LAYOUTS:
        raise VDOTInputError("layout", f"unknown layout {layout!r}", f"use one of {', '.join(LAYOUTS)}")
    if precision not in EXPORT_PRECISIONS:
        raise VDOTInputError("precision", f"cannot export in {precision!r}", f"use one of {', '.join(EXPORT_PRECISIONS)}")
    inner = getattr(model, "_orig_mod", model)
    if not isinstance(inner, WanVACETransformer3DModel):
        raise VDOTInputError("model", f"expected a WanVACETransformer3DModel, got {type(inner).__name__}", "export the generator")
    path = Path(os.path.expanduser(str(path)))
    if layout == "comfy" and path.suffix.lower() != ".safetensors":
        raise VDOTInputError("path", f"{path.name} does not end in .safetensors", "name the ComfyUI export <name>.safetensors")
    if path.exists() and not overwrite:
        raise VDOTInputError("path", f"{path} already exists and would be overwritten",
                             "choose a new name, or pass overwrite=True to replace it")
    meta = {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}
    if "vdot_format" in meta:
        raise VDOTInputError("metadata", "the key 'vdot_format' is reserved", "rename that metadata entry")

    dtype = EXPORT_PRECISIONS[precision]
    state = generator_state_dict(inner, ema)  # collective when sharded: every rank gets here
    if not state:  # a sharded model on rank > 0: it took part in the gather, rank 0 writes
        return path
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).to("cpu").contiguous() for k, v in state.items()}
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(inner.config).items() if not k.startswith("_")}
    meta.setdefault("vdot_export", json.dumps({"layout": layout, "precision": precision, "ema": ema is not None}))
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "comfy":
        names = comfy_key_names(tensors)
        # The config rides along (not under vdot_format: the file IS the original layout) so custom
        # sizes whose head count no shape records can be reloaded with config=json.loads(...).
        meta.setdefault("vdot_transformer_config", json.dumps(config))
        if path.is_dir():  # overwrite=True (checked above) of a folder export by a file
            shutil.rmtree(path)
        atomic_save_safetensors({names[k]: v for k, v in tensors.items()}, path, meta, overwrite=overwrite)
    else:
        if path.is_file():  # overwrite=True (checked above) of a file export by a folder
            path.unlink()
        with atomic_folder(path, overwrite=overwrite, input_name="path") as tmp:
            cfg = {"_class_name": type(inner).__name__, "_diffusers_version": _diffusers_version(), **config}
            atomic_write_text(tmp / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
            atomic_save_safetensors(tensors, tmp / "diffusion_pytorch_model.safetensors", {"format": "pt", **meta})
    return path


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
