"""Loader nodes: Wan-VACE transformer, Wan VAE, UMT5 text encoder, or a diffusers folder.

Files come only from ComfyUI's model folders (``diffusion_models``, ``vae``, ``text_encoders``);
the first entry of every list is the embedded toy model, so a workflow runs with nothing installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core import models
from ..core.errors import VDOTInputError
from . import comfy

TRANSFORMER_PRECISIONS = ["bf16", "fp16", "fp32", "fp8_e4m3fn", "fp8_e5m2"]
VAE_PRECISIONS = ["fp32", "bf16", "fp16"]
TEXT_PRECISIONS = ["bf16", "fp16", "fp32", "fp8_e4m3fn"]
OFFLOAD_MODES = ["model", "none"]


@dataclass
class LoadedModel:
    """What a ``VDOT_MODEL`` / ``VDOT_VAE`` / ``VDOT_TEXT_ENCODER`` socket carries."""

    module: Any
    name: str
    offload: bool = True
    tokenizer: Any = None
    vram_budget_gb: float = 0.0  # Model Loader: GPU memory the sampler may use (0 = no limit, no block swap)
    loras: tuple = ()  # VDOT LoRA Loader's LoraSpecs, applied by the samplers while they run


# The last thing each loader loaded: a re-run with the same file and precision reuses it
# (ComfyUI also caches outputs, but not across workflows or after a widget change elsewhere).
_CACHE: dict[str, tuple[tuple, Any]] = {}


def _cached(kind: str, key: tuple, load):
    hit = _CACHE.get(kind)
    if hit is not None and hit[0] == key:
        return hit[1]
    _CACHE.pop(kind, None)  # free the old one before loading the new one
    value = load()
    _CACHE[kind] = (key, value)
    return value


def _load_options(what: str) -> dict:
    """A ComfyUI progress bar (MiB read) and Cancel between tensors for one checkpoint load."""
    bar = {}

    def progress(done: int, total: int) -> None:
        if "tick" not in bar:  # the total is known once the header is read
            bar["tick"] = comfy.make_progress(max(1, total >> 20), f"loading {what}")
        bar["tick"](done >> 20, total >> 20)

    return {"progress": progress, "cancel": comfy.make_cancel()}


def _embedded():
    from ..core.components import default_pipeline

    return _cached("embedded", ("embedded",), lambda: default_pipeline(device="cpu"))


class VDOTModelLoader:
    DESCRIPTION = ("Load a Wan2.1-VACE transformer (1.3B or 14B, original/ComfyUI single file or a VDOT export) "
                   "from ComfyUI/models/diffusion_models. 'vdot-toy (embedded)' is the tiny built-in toy model.")
    CATEGORY = "VDOT/loaders"
    RETURN_TYPES = ("VDOT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The transformer, for VDOT Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (comfy.list_models("diffusion_models"), {
                "default": comfy.EMBEDDED,
                "tooltip": "Weight file in models/diffusion_models (e.g. wan2.1_vace_14B_fp16.safetensors or your "
                           "distilled VDOT checkpoint). Safetensors only."}),
            "precision": (TRANSFORMER_PRECISIONS, {
                "default": "bf16",
                "tooltip": "Weight precision. fp8_* stores weights in 8 bits and computes in bf16: the 14B model "
                           "then fits a 24 GB GPU."}),
            "offload": (OFFLOAD_MODES, {
                "default": "model",
                "tooltip": "model: keep the transformer on the GPU only while it samples (saves memory); "
                           "none: leave it on the GPU between runs (faster re-runs)."}),
        }, "optional": {
            "ram_budget_gb": ("FLOAT", {
                "default": 0.0, "min": 0.0, "max": 4096.0, "step": 0.5,
                "tooltip": "System RAM the transformer may take (0 = no check). A file whose weights in this "
                           "precision exceed it is refused before loading, e.g. 14B needs ~17 GB in fp8, ~35 GB in bf16."}),
            "vram_budget_gb": ("FLOAT", {
                "default": 0.0, "min": 0.0, "max": 4096.0, "step": 0.5,
                "tooltip": "GPU memory the sampler may use (0 = no limit). When the transformer and its activations "
                           "do not fit, the blocks that do not fit stay in RAM and are streamed in as they run "
                           "(block swap: same output, slower)."}),
        }}

    def load(self, model_name, precision, offload, ram_budget_gb=0.0, vram_budget_gb=0.0):
        if model_name == comfy.EMBEDDED:
            module = _embedded().transformer
        else:
            path = comfy.model_path("diffusion_models", model_name)
            if ram_budget_gb:
                need = models.module_bytes(models.empty_model(path, "transformer", precision, input_name="model_name"))
                if need > ram_budget_gb * 1e9:
                    raise VDOTInputError(
                        "ram_budget_gb", f"{model_name} takes {need / 1e9:.1f} GB in {precision}, over the "
                        f"{ram_budget_gb:g} GB budget", "choose precision fp8_e4m3fn (half of bf16) or raise the budget")
            module = _cached("transformer", (str(path), precision),
                             lambda: models.load_transformer(path, precision=precision, input_name="model_name",
                                                             **_load_options(model_name)))
        return (LoadedModel(module, model_name, offload == "model", vram_budget_gb=vram_budget_gb),)


class VDOTVAELoader:
    DESCRIPTION = "Load the Wan2.1 VAE (wan_2.1_vae.safetensors) from ComfyUI/models/vae."
    CATEGORY = "VDOT/loaders"
    RETURN_TYPES = ("VDOT_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The video VAE, for VDOT Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (comfy.list_models("vae"), {
                "default": comfy.EMBEDDED, "tooltip": "Weight file in models/vae, e.g. wan_2.1_vae.safetensors."}),
            "precision": (VAE_PRECISIONS, {
                "default": "fp32", "tooltip": "fp32 is exact; bf16 halves the VAE's memory at a small quality cost."}),
        }}

    def load(self, vae_name, precision):
        if vae_name == comfy.EMBEDDED:
            return (LoadedModel(_embedded().vae, vae_name),)
        path = comfy.model_path("vae", vae_name, "vae_name")
        module = _cached("vae", (str(path), precision),
                         lambda: models.load_vae(path, precision=precision, input_name="vae_name", **_load_options(vae_name)))
        return (LoadedModel(module, vae_name),)


class VDOTTextEncoderLoader:
    DESCRIPTION = ("Load the UMT5-XXL text encoder (umt5_xxl_fp16.safetensors, tokenizer inside the file) "
                   "from ComfyUI/models/text_encoders.")
    CATEGORY = "VDOT/loaders"
    RETURN_TYPES = ("VDOT_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder and its tokenizer, for VDOT Text Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (comfy.list_models("text_encoders"), {
                "default": comfy.EMBEDDED,
                "tooltip": "Weight file in models/text_encoders, e.g. umt5_xxl_fp16.safetensors."}),
            "precision": (TEXT_PRECISIONS, {
                "default": "bf16", "tooltip": "bf16 needs about 11 GB while encoding; fp8_e4m3fn about half."}),
        }}

    def load(self, text_encoder_name, precision):
        if text_encoder_name == comfy.EMBEDDED:
            pipe = _embedded()
            return (LoadedModel(pipe.text_encoder, text_encoder_name, tokenizer=pipe.tokenizer),)
        path = comfy.model_path("text_encoders", text_encoder_name, "text_encoder_name")
        encoder, tokenizer = _cached(
            "text_encoder", (str(path), precision),
            lambda: models.load_text_encoder(path, precision=precision, input_name="text_encoder_name",
                                             **_load_options(text_encoder_name)))
        return (LoadedModel(encoder, text_encoder_name, tokenizer=tokenizer),)


class VDOTDiffusersLoader:
    DESCRIPTION = ("Load transformer, VAE and text encoder from a diffusers folder "
                   "(e.g. Wan2.1-VACE-14B-diffusers) placed in ComfyUI/models/diffusion_models.")
    CATEGORY = "VDOT/loaders"
    RETURN_TYPES = ("VDOT_MODEL", "VDOT_VAE", "VDOT_TEXT_ENCODER")
    RETURN_NAMES = ("model", "vae", "text_encoder")
    OUTPUT_TOOLTIPS = ("The transformer.", "The VAE.", "The text encoder and tokenizer.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        folders = comfy.list_model_folders("diffusion_models")
        return {"required": {
            "folder_name": (folders, {"tooltip": "A diffusers pipeline folder in models/diffusion_models "
                                                 "(it holds transformer/, vae/, text_encoder/, tokenizer/)."}),
            "precision": (TRANSFORMER_PRECISIONS, {"default": "bf16", "tooltip": "Transformer weight precision."}),
            "offload": (OFFLOAD_MODES, {"default": "model", "tooltip": "See VDOT Model Loader."}),
        }}

    def load(self, folder_name, precision, offload):
        root = comfy.model_path("diffusion_models", folder_name, "folder_name")
        transformer = _cached("transformer", (str(root), precision),
                              lambda: models.load_transformer(root, precision=precision, input_name="folder_name",
                                                              **_load_options(f"{folder_name} transformer")))
        vae = _cached("vae", (str(root), "fp32"), lambda: models.load_vae(root, input_name="folder_name",
                                                          **_load_options(f"{folder_name} VAE")))
        encoder, tokenizer = _cached("text_encoder", (str(root), "bf16"),
                                     lambda: models.load_text_encoder(root, input_name="folder_name",
                                                                   **_load_options(f"{folder_name} text encoder")))
        return (LoadedModel(transformer, folder_name, offload == "model"), LoadedModel(vae, folder_name),
                LoadedModel(encoder, folder_name, tokenizer=tokenizer))


NODE_CLASS_MAPPINGS = {
    "VDOTModelLoader": VDOTModelLoader,
    "VDOTVAELoader": VDOTVAELoader,
    "VDOTTextEncoderLoader": VDOTTextEncoderLoader,
    "VDOTDiffusersLoader": VDOTDiffusersLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VDOTModelLoader": "VDOT Model Loader",
    "VDOTVAELoader": "VDOT VAE Loader",
    "VDOTTextEncoderLoader": "VDOT Text Encoder Loader",
    "VDOTDiffusersLoader": "VDOT Diffusers Loader",
}
