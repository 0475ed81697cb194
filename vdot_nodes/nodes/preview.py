"""VDOT Preview Decoder Loader: TAEW2.1 (the tiny Wan 2.1 decoder) for the Sampler's step previews and drafts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import comfy
from .loaders import _cached


@dataclass
class LoadedPreviewDecoder:
    """What a ``VDOT_PREVIEW_DECODER`` socket carries."""

    decoder: Any  # core.preview.TinyWanDecoder
    name: str
    final_video: bool = False  # also decode the Sampler's final video with it (a quick draft)


class VDOTPreviewDecoderLoader:
    DESCRIPTION = ("Load TAEW2.1 (taew2_1.safetensors from github.com/madebyollin/taehv, in ComfyUI/models/vae_approx): "
                   "a tiny decoder for Wan 2.1 latents. Connected to VDOT Sampler it shows each step's prediction in "
                   "the progress bar and, with final_video on, decodes the result far faster than the VAE (a draft, "
                   "softer than the VAE's). Not for the embedded toy model, whose VAE makes other latents.")
    CATEGORY = "VDOT/loaders"
    RETURN_TYPES = ("VDOT_PREVIEW_DECODER",)
    RETURN_NAMES = ("preview_decoder",)
    OUTPUT_TOOLTIPS = ("For VDOT Sampler's optional preview_decoder input.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "decoder_name": (comfy.list_models("vae_approx"), {
                "tooltip": "taew2_1.safetensors in models/vae_approx (ComfyUI's folder for tiny decoders)."}),
            "final_video": ("BOOLEAN", {"default": False, "tooltip": "Also decode the final video with it: a quick "
                                        "draft instead of the full VAE decode."}),
        }}

    def load(self, decoder_name, final_video):
        from ..core.preview import load_preview_decoder

        path = comfy.model_path("vae_approx", decoder_name, "decoder_name")
        device = comfy.torch_device() or "cpu"
        decoder = _cached("preview_decoder", (str(path), str(device)),
                          lambda: load_preview_decoder(path, device=device, input_name="decoder_name"))
        return (LoadedPreviewDecoder(decoder, decoder_name, bool(final_video)),)


NODE_CLASS_MAPPINGS = {"VDOTPreviewDecoderLoader": VDOTPreviewDecoderLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTPreviewDecoderLoader": "VDOT Preview Decoder Loader"}
