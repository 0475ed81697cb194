"""Wan(-VACE) transformer: the original Wan / ComfyUI / VDOT-release layout <-> diffusers names.

The original layout is what the official Wan and VDOT code, ComfyUI's repackaged
``wan2.1_vace_14B_*.safetensors`` and the VDOT release use (ComfyUI adds the ``model.diffusion_model.``
prefix, the release ``model.``). Forward (original -> diffusers) is diffusers' own
``convert_wan_transformer_to_diffusers``; backward is :func:`original_name`, checked against it so both
directions always agree (the training export and ``vdot convert`` write the original layout).
"""

from __future__ import annotations

from ._diffusers_names import diffusers_converter_names

COMFY_PREFIX = "model.diffusion_model."
ORIGINAL_MARKER = "blocks.0.self_attn.q.weight"
DIFFUSERS_MARKER = "blocks.0.attn1.to_q.weight"


def to_diffusers(keys) -> dict[str, str]:
    """``{diffusers name: original name}`` for original-layout ``keys``."""
    return diffusers_converter_names(keys, "transformer")


# diffusers -> original renames, the inverse of convert_wan_transformer_to_diffusers' table for the
# keys a Wan / Wan-VACE transformer has. Applied in order on "."-delimited names.
_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    ("to_out.0", "o"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
)


def original_name(name: str) -> str:
    """One diffusers Wan(-VACE) transformer key in the original layout (unchecked; see comfy_key_names)."""
    n = f".{name}."
    for new, old in _TO_ORIGINAL:
        n = n.replace(f".{new}.", f".{old}.")
    parts = n[1:-1].split(".")
    # norm2 <-> norm3 are swapped between the two layouts (cross-attn norm vs FFN norm).
    parts = [{"norm2": "norm3", "norm3": "norm2"}.get(p, p) if i == 2 and parts[0] in ("blocks", "vace_blocks") else p
             for i, p in enumerate(parts)]
    if parts[0] == "scale_shift_table":
        return "head.modulation"
    if parts[0] == "proj_out":
        return "head.head." + ".".join(parts[1:])
    if parts[0] in ("blocks", "vace_blocks") and len(parts) == 3 and parts[2] == "scale_shift_table":
        return f"{parts[0]}.{parts[1]}.modulation"
    if parts[0] == "vace_blocks" and parts[2] in ("proj_in", "proj_out"):
        parts[2] = {"proj_in": "before_proj", "proj_out": "after_proj"}[parts[2]]
    return ".".join(parts)


def comfy_key_names(diffusers_keys) -> dict[str, str]:
    """``{diffusers name: original / ComfyUI name}`` for a Wan(-VACE) state dict, verified.

    Verified by renaming the result forward with diffusers' converter (the one every loader uses):
    any key that does not come back as itself raises, so a diffusers upgrade that changes the
    layout cannot silently produce an unloadable file.
    """
    keys = list(diffusers_keys)
    mapping = {k: original_name(k) for k in keys}
    back = to_diffusers(mapping.values())  # diffusers name -> original name
    wrong = [k for k in keys if back.get(k) != mapping[k]]
    if wrong or len(set(mapping.values())) != len(keys):
        k = wrong[0] if wrong else keys[0]
        raise RuntimeError(f"cannot express {k!r} in the original Wan layout ({mapping[k]!r} converts back differently); "
                           "export with layout='diffusers'")
    return mapping
