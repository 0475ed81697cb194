"""Wan2.1 VAE: the original layout (``wan_2.1_vae.safetensors``, the release's ``Wan2.1_VAE.pth``) -> diffusers names,
by diffusers' own ``convert_wan_vae_to_diffusers`` (names only). No converter goes back; nothing writes this layout."""

from __future__ import annotations

from ._diffusers_names import diffusers_converter_names

ORIGINAL_MARKERS = ("encoder.conv1.weight", "decoder.head.2.weight")
DIFFUSERS_MARKERS = ("encoder.conv_in.weight", "decoder.conv_out.weight")


def to_diffusers(keys) -> dict[str, str]:
    """``{diffusers name: original name}`` for original-layout ``keys``."""
    return diffusers_converter_names(keys, "vae")
