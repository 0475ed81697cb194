"""Key-name conversions, one module per component and stored layout, read through one table.

Every loader builds the diffusers / HF model and needs ``{model name: stored name}``; every writer of a
foreign layout needs the reverse. :data:`CONVERSIONS` maps ``(component, layout)`` to both directions;
a new format (another release, another repackaging) is one module and one entry here. Which layout a
file is in is decided by :func:`vdot_nodes.core.models.identify`, from key names alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import umt5, wan_transformer, wan_vae


@dataclass(frozen=True)
class Conversion:
    component: str  # transformer | vae | text_encoder
    layout: str  # diffusers | hf | original | wan_t5
    written_by: str  # who stores weights this way
    to_model: Callable[[Iterable[str]], dict[str, str]]  # stored keys -> {model name: stored name}
    from_model: Callable[[Iterable[str]], dict[str, str]] | None = None  # model names -> {model name: stored name}


def _same(keys) -> dict[str, str]:
    return {k: k for k in keys}


CONVERSIONS: dict[tuple[str, str], Conversion] = {(c.component, c.layout): c for c in (
    Conversion("transformer", "diffusers", "diffusers folders, VDOT exports", _same, _same),
    Conversion("transformer", "original", "official Wan / VDOT code and release, ComfyUI files",
               wan_transformer.to_diffusers, wan_transformer.comfy_key_names),
    Conversion("vae", "diffusers", "diffusers folders, VDOT exports", _same, _same),
    Conversion("vae", "original", "official Wan code and release, ComfyUI's wan_2.1_vae.safetensors", wan_vae.to_diffusers),
    Conversion("text_encoder", "hf", "HF folders, ComfyUI's umt5_xxl_*.safetensors, VDOT exports",
               lambda keys: umt5.hf_encoder_names(keys)[0], _same),
    Conversion("text_encoder", "wan_t5", "official Wan code and release (models_t5_umt5-xxl-enc-bf16.pth)",
               umt5.wan_t5_names, lambda keys: {k: umt5.hf_to_wan_t5(k) for k in keys}),
)}


def to_model_names(component: str, layout: str, keys) -> dict[str, str]:
    """``{model name: stored name}`` of ``keys`` stored in ``layout``."""
    return CONVERSIONS[(component, layout)].to_model(list(keys))


def from_model_names(component: str, layout: str, keys) -> dict[str, str]:
    """``{model name: name in layout}``: how a writer stores the model's ``keys`` in ``layout``."""
    conv = CONVERSIONS[(component, layout)]
    if conv.from_model is None:
        raise ValueError(f"nothing writes the {component} in the {layout} layout")
    return conv.from_model(list(keys))


__all__ = ["CONVERSIONS", "Conversion", "from_model_names", "to_model_names", "umt5", "wan_transformer", "wan_vae"]
