"""AccWanInit: start the stage-2 VACE generator from the stage-1 (few-step Wan T2V) generator.

VDOT stage 2 builds a ``WanVACETransformer3DModel`` whose *Wan* part — patch embedding, text / time
embedders, every ``blocks.N`` (self/cross attention, FFN, norms, modulation), the output norm and
head — is replaced by the weights of the step-distilled T2V generator from stage 1, while the VACE
context branch (``vace_blocks.*``, ``vace_patch_embedding``) keeps its Wan2.1-VACE weights. The two
models share the diffusers key names of the Wan part, so the copy is a name-for-name copy after the
original / ComfyUI layout has been renamed (by the same diffusers converter the loaders use).

Nothing is copied unless everything fits: a T2V key with no counterpart, a Wan key of the VACE model
the T2V state lacks, or any shape mismatch (e.g. a 1.3B T2V into a 14B VACE) is a ``VDOTInputError``
naming the key and both shapes.
"""

from __future__ import annotations

import logging

import torch

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.models import Checkpoint, require_kind

logger = logging.getLogger(__name__)

__all__ = ["VACE_ONLY_PREFIXES", "init_vace_from_t2v", "init_vace_from_t2v_lora", "load_t2v_state_dict",
           "t2v_config_from_vace", "vace_only_keys"]

# Parameters that exist only in the VACE model: the context branch and its patch embedding.
VACE_ONLY_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")
# WanVACETransformer3DModel config entries WanTransformer3DModel does not take.
_VACE_CONFIG_KEYS = ("vace_layers", "vace_in_channels")


def vace_only_keys(keys) -> list[str]:
    """The keys of a VACE state dict that AccWanInit leaves untouched."""
    return sorted(k for k in keys if k.startswith(VACE_ONLY_PREFIXES))


def t2v_config_from_vace(vace_config) -> dict:
    """The ``WanTransformer3DModel`` config whose Wan part matches a ``WanVACETransformer3DModel`` config."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(vace_config).items()
            if not k.startswith("_") and k not in _VACE_CONFIG_KEYS}


def load_t2v_state_dict(path, *, input_name: str = "t2v_checkpoint") -> dict[str, torch.Tensor]:
    """Read a Wan T2V transformer (stage-1 generator) as a diffusers-named state dict.

    ``path`` is a diffusers folder (``config.json`` + safetensors, sharded or not), a pipeline root
    with ``transformer/``, or one safetensors file in the original / ComfyUI layout (with or without
    the ``model.diffusion_model.`` prefix) or with diffusers names — e.g. a public step-distilled
    Wan2.1-T2V release. Tensors keep their stored dtype; pickles are refused without being opened.
    """
    from safetensors import safe_open

    src = Checkpoint.open(path, "transformer", input_name)
    info = src.identify()
    require_kind(info, src.name, "transformer", input_name)
    if info.variant != "t2v":
        what = {"vace": "already a Wan-VACE transformer (load it with load_transformer instead)",
                "i2v": "a Wan image-to-video transformer (it has image-embedding weights)"}.get(
            info.variant, f"a '{info.variant}' Wan variant")
        raise VDOTInputError(input_name, f"{src.name} is {what}, not a Wan text-to-video transformer",
                             "give the stage-1 generator: a Wan2.1-T2V transformer of the same size as the VACE model")
    state: dict[str, torch.Tensor] = {}
    by_file: dict = {}
    for name, stored in info.key_map.items():
        by_file.setdefault(src.location[stored][0], []).append(name)
    for file, names in by_file.items():
        with safe_open(file, framework="pt") as st:
            for name in names:
                state[name] = st.get_tensor(info.key_map[name])
    return state


def _check(vace_params: dict[str, torch.Tensor], t2v_state: dict[str, torch.Tensor], input_name: str,
           require_complete: bool = True) -> list[str]:
    """The keys to copy, after checking names and shapes of every one of them."""
    wan_keys = {k for k in vace_params if not k.startswith(VACE_ONLY_PREFIXES)}
    unmapped = sorted(set(t2v_state) - wan_keys)
    if unmapped:
        k = unmapped[0]
        hint = " (a VACE-only key: pass a T2V checkpoint, not a VACE one)" if k.startswith(VACE_ONLY_PREFIXES) else ""
        raise VDOTInputError(
            input_name,
            f"{len(unmapped)} T2V tensors have no counterpart in the VACE model, e.g. {k} {list(t2v_state[k].shape)}{hint}",
            "use a plain Wan2.1 T2V transformer (no image or other adapters) of the VACE model's architecture",
        )
    missing = sorted(wan_keys - set(t2v_state))
    if not require_complete:  # the released overlay: a strict subset check only, the rest keeps VACE's weights
        wan_keys = wan_keys & set(t2v_state)
        missing = []
    if missing:
        k = missing[0]
        raise VDOTInputError(
            input_name,
            f"the T2V state lacks {len(missing)} Wan tensors of the VACE model, e.g. {k} (VACE shape {list(vace_params[k].shape)})",
            "use a complete T2V checkpoint (a truncated file, a LoRA, or another architecture?)",
        )
    for k in sorted(wan_keys):
        src, dst = tuple(t2v_state[k].shape), tuple(vace_params[k].shape)
        if src != dst:
            raise VDOTInputError(
                input_name,
                f"tensor {k} has shape {list(src)} in the T2V checkpoint but {list(dst)} in the VACE model",
                "stage 1 and stage 2 must be the same size (1.3B T2V with 1.3B VACE, 14B with 14B)",
            )
    return sorted(wan_keys)


@torch.no_grad()
def init_vace_from_t2v(vace_model, t2v_state_dict, *, input_name: str = "t2v_checkpoint",
                       require_complete: bool = True) -> dict:
    """AccWanInit: copy the Wan part of a T2V state dict into ``vace_model`` in place.

    ``t2v_state_dict``: diffusers ``WanTransformer3DModel`` names, or the original / ComfyUI layout
    (renamed here with diffusers' converter), or a path (read with :func:`load_t2v_state_dict`).
    All names and shapes are checked before the first copy, so a failed call leaves the model as it
    was. Values are cast to each parameter's dtype (bit-exact when the dtypes agree). Call it on the
    full model, before ``shard_model``: FSDP2 parameters are shards.

    ``require_complete=False`` is the released overlay (``wan_wrapper_2.py``): every T2V key must exist in the VACE
    model (a strict subset check) but Wan keys the file lacks keep the VACE weights. The released prefixes
    ``diffusion_model.``, ``model.`` and ``_fsdp_wrapped_module.`` are stripped as there.

    Returns ``{"copied": [...], "vace_only": [...], "cast": [...]}`` — the keys overwritten, the
    VACE-only keys left untouched, and those whose dtype changed on the way in.
    """
    if isinstance(t2v_state_dict, (str, bytes)) or hasattr(t2v_state_dict, "__fspath__"):
        t2v_state_dict = load_t2v_state_dict(t2v_state_dict, input_name=input_name)
    if not isinstance(t2v_state_dict, dict) or not t2v_state_dict:
        raise VDOTInputError(input_name, "the T2V state dict is empty or not a dict", "pass a state dict or a checkpoint path")
    state = _to_diffusers_names(dict(t2v_state_dict), input_name)
    model = getattr(vace_model, "_orig_mod", vace_model)  # torch.compile wrapper
    if not any(k.startswith("vace_blocks.") for k, _ in model.named_parameters()):
        raise VDOTInputError("vace_model", f"{type(model).__name__} has no vace_blocks", "pass a WanVACETransformer3DModel")
    params = dict(model.named_parameters())
    meta = [k for k, p in params.items() if p.is_meta and not k.startswith(VACE_ONLY_PREFIXES)]
    if meta:
        raise VDOTInputError("vace_model", f"its parameters are on the meta device (e.g. {meta[0]})",
                             "load the VACE weights (load_transformer) before AccWanInit")
    keys = _check(params, state, input_name, require_complete)
    cast = []
    for k in keys:
        src = state[k]
        if src.dtype != params[k].dtype:
            cast.append(k)
        params[k].copy_(src.to(device=params[k].device, dtype=params[k].dtype))
    report = {"copied": keys, "vace_only": vace_only_keys(params), "cast": cast}
    logger.info("AccWanInit: copied %d Wan tensors from the T2V generator, kept %d VACE-only tensors%s",
                len(keys), len(report["vace_only"]), f", cast {len(cast)}" if cast else "")
    return report


def _to_diffusers_names(state: dict, input_name: str) -> dict:
    """Rename an original / ComfyUI-layout Wan state dict to diffusers names (no tensor is copied)."""
    prefix = "model.diffusion_model."
    state = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    for released in ("diffusion_model.", "model.", "_fsdp_wrapped_module."):  # the released AccWanInit's prefixes
        state = {(k[len(released):] if k.startswith(released) else k): v for k, v in state.items()}
    if "blocks.0.self_attn.q.weight" not in state:
        return state
    from vdot_nodes.core.models.convert import to_model_names

    renamed = to_model_names("transformer", "original", state)  # diffusers name -> original name
    return {new: state[old] for new, old in renamed.items()}


@torch.no_grad()
def init_vace_from_t2v_lora(vace_model, lora, strength: float = 1.0, *, input_name: str = "generator_init_lora"):
    """AccWanInit from a T2V LoRA: merge it into the Wan part of ``vace_model`` in place.

    ``lora``: a safetensors path or a :class:`vdot_nodes.core.lora.LoraFile`. A step-distilled T2V LoRA (e.g. lightx2v's) carries the
    change that makes Wan2.1 T2V few-step; merged into the VACE model's Wan blocks it gives the
    generator AccWanInit's start, while ``vace_blocks`` / ``vace_patch_embedding`` keep their weights
    (a LoRA entry for them is left out and listed in the report). Names and shapes of every entry
    are checked before the first weight changes (:func:`vdot_nodes.core.lora.apply_loras`). Call it
    on the full model, before ``shard_model``. Returns the :class:`LoraReport`.
    """
    from vdot_nodes.core import lora as lora_mod

    if not isinstance(lora, lora_mod.LoraFile):
        lora = lora_mod.read_lora(lora, input_name)
    model = getattr(vace_model, "_orig_mod", vace_model)
    if not any(k.startswith("vace_blocks.") for k, _ in model.named_parameters()):
        raise VDOTInputError("vace_model", f"{type(model).__name__} has no vace_blocks", "pass a WanVACETransformer3DModel")
    # Merging into fp8 storage would lose the LoRA: the trainer's generator is fp32/bf16, so merge.
    (report,) = lora_mod.apply_loras(model, [lora_mod.LoraSpec(lora, float(strength), "merge")],
                                     exclude_prefixes=VACE_ONLY_PREFIXES, input_name=input_name).reports
    if not report.merged:
        raise VDOTInputError(input_name, f"{lora.name} changes only VACE-only modules ({', '.join(report.excluded[:3])})",
                             "use a Wan2.1 T2V LoRA (it changes blocks.N.*)")
    logger.info("AccWanInit from LoRA: %s", report.summary())
    return report
