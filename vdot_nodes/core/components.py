"""Build a ready :class:`VDOTPipeline` from user paths, or from the embedded default.

The one place the CLI and the nodes turn "which weights?" into models. With no paths, the embedded
default is used: the toy-world checkpoints shipped in ``vdot_nodes/assets/toy`` when present, else
tiny randomly initialised components (noise-like output, for trying the plumbing). Either way the
pipeline says so (``is_toy``), and the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import VDOTInputError
from .pipeline import VDOTPipeline

TOY_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy"
TOY_FILES = {"transformer": "transformer.safetensors", "vae": "vae.safetensors", "text_encoder": "text_encoder.safetensors"}


def toy_checkpoints_available() -> bool:
    return all((TOY_DIR / name).is_file() for name in TOY_FILES.values())


def default_model_description() -> str:
    if toy_checkpoints_available():
        return f"the embedded toy-world VDOT model ({TOY_DIR}); it knows only the toy world's synthetic scenes"
    return "a tiny randomly initialised Wan-VACE (no toy checkpoints found): output is noise, for testing the plumbing"


def load_pipeline(
    model: str | Path | None = None,
    vae: str | Path | None = None,
    text_encoder: str | Path | None = None,
    *,
    precision: str = "bf16",
    vae_precision: str = "fp32",
    text_precision: str = "bf16",
    device: str | None = None,
    offload: str = "model",
    loras: Sequence = (),
) -> VDOTPipeline:
    """Load the transformer, VAE and text encoder (each a file or a diffusers folder).

    A diffusers pipeline root given as ``model`` also provides the VAE and text encoder when those
    are not given. With nothing given, returns the embedded default (see module docstring).
    ``loras``: ``(file or LoraFile, strength)`` pairs applied to the transformer for good (merged, or
    on the fly when it is stored in fp8; :mod:`vdot_nodes.core.lora`); their reports are in
    ``pipeline.lora_reports``.
    """
    if model is None and vae is None and text_encoder is None:
        return _with_loras(default_pipeline(device=device, offload=offload), loras)
    if model is None:
        raise VDOTInputError("model", "a VAE or text encoder was given but no transformer", "pass --model too")
    from . import models

    model = Path(model)
    is_pipeline_root = model.is_dir() and (model / "transformer").is_dir()
    if vae is None:
        if not is_pipeline_root:
            raise VDOTInputError("vae", "no VAE given", "pass --vae wan_2.1_vae.safetensors (or a diffusers folder as --model)")
        vae = model
    if text_encoder is None:
        if not is_pipeline_root:
            raise VDOTInputError(
                "text_encoder", "no text encoder given", "pass --text-encoder umt5_xxl_fp16.safetensors (or a diffusers folder)"
            )
        text_encoder = model
    transformer = models.load_transformer(model, precision=precision)
    vae_model = models.load_vae(vae, precision=vae_precision)
    encoder, tokenizer = models.load_text_encoder(text_encoder, precision=text_precision)
    return _with_loras(VDOTPipeline(transformer, vae_model, encoder, tokenizer, device=device, offload=offload), loras)


def _with_loras(pipe: VDOTPipeline, loras: Sequence) -> VDOTPipeline:
    if loras:
        from .lora import apply_loras

        pipe.lora_reports = apply_loras(pipe.transformer, loras, input_name="--lora").reports
    return pipe


def default_pipeline(device: str | None = None, offload: str = "model") -> VDOTPipeline:
    if toy_checkpoints_available():
        from . import models

        transformer = models.load_transformer(TOY_DIR / TOY_FILES["transformer"], precision="fp32")
        vae = models.load_vae(TOY_DIR / TOY_FILES["vae"], precision="fp32")
        encoder, tokenizer = models.load_text_encoder(TOY_DIR / TOY_FILES["text_encoder"], precision="fp32")
        return VDOTPipeline(transformer, vae, encoder, tokenizer, device=device or "cpu", offload=offload, is_toy=True)
    from .tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae

    with torch.no_grad():
        return VDOTPipeline(
            build_tiny_transformer(),
            build_tiny_vae(),
            build_tiny_text_encoder(),
            build_tiny_tokenizer(),
            device=device or "cpu",
            offload=offload,
            is_toy=True,
        )
