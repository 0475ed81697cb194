"""UMT5 text encoder: HF ``UMT5EncoderModel`` names (ComfyUI's ``umt5_xxl_*.safetensors``, HF folders) and
Wan's own T5 module names (the release's ``models_t5_umt5-xxl-enc-bf16.pth``, ``wan/modules/t5.py``:
``token_embedding``, ``blocks.N.{norm1,attn,norm2,ffn,pos_embedding}``, ``norm``)."""

from __future__ import annotations

import re

HF_MARKER = "encoder.block.0.layer.0.SelfAttention.q.weight"
TOKENIZER_TENSOR = "spiece_model"  # ComfyUI keeps the SentencePiece model in the file as a uint8 tensor


def hf_encoder_names(keys) -> tuple[dict[str, str], list[str]]:
    """``({UMT5EncoderModel name: stored name}, dropped)``: the decoder / LM head of a full T5 is dropped
    (and returned), ``encoder.embed_tokens`` is tied to ``shared``, the tokenizer tensor is no weight."""
    out, dropped = {}, []
    for k in keys:
        if k == TOKENIZER_TENSOR:
            continue
        if k.startswith(("decoder.", "lm_head.")):
            dropped.append(k)
            continue
        out[k] = k
    if "shared.weight" not in out and "encoder.embed_tokens.weight" in out:
        out["shared.weight"] = out.pop("encoder.embed_tokens.weight")
    out.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight
    return out, dropped


def is_wan_t5(keys) -> bool:
    """Wan's T5 encoder names (``token_embedding``, ``blocks.N.attn.*``)."""
    keys = set(keys)
    return "token_embedding.weight" in keys and any(k.startswith("blocks.0.attn.") for k in keys)


_T5_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # gelu(gate(x)) * fc1(x): wi_0 is the gated path
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def wan_t5_to_hf(name: str) -> str | None:
    """HF ``UMT5EncoderModel`` name of a Wan T5 encoder tensor, or None for a name Wan's encoder lacks."""
    if name == "token_embedding.weight":
        return "shared.weight"
    if name == "norm.weight":
        return "encoder.final_layer_norm.weight"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in _T5_BLOCK:
        return f"encoder.block.{m.group(1)}.{_T5_BLOCK[m.group(2)]}"
    return None


def hf_to_wan_t5(name: str) -> str:
    """The Wan T5 name of an HF ``UMT5EncoderModel`` tensor (the name itself when Wan has no such tensor)."""
    if name == "shared.weight":
        return "token_embedding.weight"
    if name == "encoder.final_layer_norm.weight":
        return "norm.weight"
    m = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", name)
    inverse = {v: k for k, v in _T5_BLOCK.items()}
    if m and m.group(2) in inverse:
        return f"blocks.{m.group(1)}.{inverse[m.group(2)]}"
    return name


def wan_t5_names(keys) -> dict[str, str]:
    """``{UMT5EncoderModel name: stored Wan T5 name}``; names Wan's encoder lacks keep their own name (so
    the shape check reports them as unexpected)."""
    return {(wan_t5_to_hf(k) or k): k for k in keys}
