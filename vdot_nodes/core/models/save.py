"""Saving the three components in VDOT's own format: ONE safetensors file each, diffusers / HF key names,
``vdot_format`` and ``vdot_config`` (the model config as JSON) in the metadata.

Written through :func:`vdot_nodes.core.atomic.atomic_save_safetensors` (temporary file beside the target,
fsync, rename), so a crash never leaves a half-written checkpoint. A save replaces an existing ``path``
(the training loop re-saves the same file; callers that must not overwrite check with
:func:`~vdot_nodes.core.atomic.check_target` first).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_save_safetensors
from . import configs
from .checkpoint import FORMAT_TEXT_ENCODER, FORMAT_TRANSFORMER, FORMAT_VAE
from .convert.umt5 import TOKENIZER_TENSOR
from .tokenizer import VOCAB_METADATA, tokenizer_vocab


def save_transformer(model, path) -> Path:
    """Write a ``WanVACETransformer3DModel`` (``vdot_format = "diffusers-wan-vace"``). Replaces ``path``."""
    from diffusers import WanVACETransformer3DModel

    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if not isinstance(model, WanVACETransformer3DModel):
        raise TypeError(f"save_transformer expects a WanVACETransformer3DModel, got {type(model).__name__}")
    return _save(model.state_dict(), path, FORMAT_TRANSFORMER, configs.public_config(model.config))


def save_vae(model, path) -> Path:
    """Like :func:`save_transformer`, for ``AutoencoderKLWan`` (``vdot_format = "diffusers-wan-vae"``)."""
    from diffusers import AutoencoderKLWan

    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, AutoencoderKLWan):
        raise TypeError(f"save_vae expects an AutoencoderKLWan, got {type(model).__name__}")
    return _save(model.state_dict(), path, FORMAT_VAE, configs.public_config(model.config))


def save_text_encoder(model, tokenizer, path) -> Path:
    """Write a ``UMT5EncoderModel`` + tokenizer as ONE safetensors file (HF key names).

    The tokenizer is stored as a ``spiece_model`` uint8 tensor when it was built from a
    SentencePiece model (this keeps the file loadable by ComfyUI's text-encoder loader, same as
    ``umt5_xxl_fp16.safetensors``); a tokenizer built from a vocabulary list (the tiny one) has no
    such model, so its ``[(piece, score), ...]`` list goes into the ``vdot_tokenizer_vocab``
    metadata entry instead. Both rebuild the tokenizer the same way on load.
    """
    model = getattr(model, "_orig_mod", model)
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}  # tied to shared
    extra = {}
    spiece = getattr(tokenizer, "vdot_spiece_model", None)
    if spiece is not None:
        state[TOKENIZER_TENSOR] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    else:
        extra[VOCAB_METADATA] = json.dumps(tokenizer_vocab(tokenizer))
    cfg = {k: v for k, v in model.config.to_dict().items()
           if not k.startswith("_") and k not in ("transformers_version", "torch_dtype", "dtype")}
    return _save(state, path, FORMAT_TEXT_ENCODER, cfg, extra)


def _save(state: dict, path, fmt: str, config: dict, extra_metadata: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"vdot_format": fmt, "vdot_config": json.dumps(config), **(extra_metadata or {})}
    return atomic_save_safetensors(state, path, metadata, overwrite=True)
