"""Prompt nodes: UMT5 text encoding (cached), or ComfyUI's own Wan CONDITIONING."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from ..core.errors import VDOTInputError
from ..core.text_encoding import MAX_TEXT_TOKENS, PromptEncoder
from . import comfy

# Wan2.1's recommended negative prompt (from its reference code), in English.
DEFAULT_NEGATIVE = ("bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, "
                    "still picture, grey overall, worst quality, low quality, JPEG artifacts, ugly, deformed, "
                    "extra fingers, poorly drawn hands, poorly drawn face, malformed limbs, fused fingers, "
                    "cluttered background, three legs, many people in the background, walking backwards")


@dataclass
class Embeds:
    """What a ``VDOT_EMBEDS`` socket carries: UMT5 embeddings ``[1, 512, D]`` for each prompt."""

    positive: torch.Tensor
    negative: torch.Tensor | None


# (id of the encoder module, text) → (weak reference to that module, embeddings): re-running a graph
# with the same prompt does not re-encode, so the 11 GB encoder can stay off the GPU. The weak
# reference guards against a freed encoder's id being reused by a newly loaded one. Bounded:
# prompts are small, encoders few.
_EMBED_CACHE: dict[tuple[int, str], tuple[weakref.ref, torch.Tensor]] = {}
_EMBED_CACHE_SIZE = 64


def _encode(text_encoder, text: str) -> torch.Tensor:
    key = (id(text_encoder.module), text)
    hit = _EMBED_CACHE.get(key)
    if hit is not None and hit[0]() is text_encoder.module:
        return hit[1]
    encoder = PromptEncoder(text_encoder.module, text_encoder.tokenizer, device=comfy.torch_device(), offload=True)
    embeds = encoder.encode([text])
    if len(_EMBED_CACHE) >= _EMBED_CACHE_SIZE:
        _EMBED_CACHE.pop(next(iter(_EMBED_CACHE)))
    _EMBED_CACHE[key] = (weakref.ref(text_encoder.module), embeds)
    return embeds


class VDOTTextEncode:
    DESCRIPTION = ("Encode the prompt and negative prompt with UMT5. Results are cached per prompt, and the "
                   "encoder leaves the GPU after encoding.")
    CATEGORY = "VDOT/conditioning"
    RETURN_TYPES = ("VDOT_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Prompt embeddings for VDOT Sampler.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("VDOT_TEXT_ENCODER", {"tooltip": "From VDOT Text Encoder Loader."}),
            "positive": ("STRING", {"multiline": True, "default": "",
                                    "tooltip": "What the video shows: subject, action, scene, camera, style."}),
            "negative": ("STRING", {"multiline": True, "default": DEFAULT_NEGATIVE,
                                    "tooltip": "What to avoid. Only used when the sampler's cfg is above 1."}),
        }}

    def encode(self, text_encoder, positive, negative):
        return (Embeds(_encode(text_encoder, positive), _encode(text_encoder, negative)),)


def _from_conditioning(conditioning, name: str) -> torch.Tensor:
    """ComfyUI CONDITIONING (``[[tensor [1, L, D], {...}], ...]``) → ``[1, 512, D]`` zero-padded."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning or not isinstance(conditioning[0], (list, tuple)) \
            or not conditioning[0]:
        raise VDOTInputError(name, f"is a {type(conditioning).__name__}, not a ComfyUI CONDITIONING",
                             "connect a CLIP Text Encode output")
    cond = conditioning[0][0]
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[0] != 1:
        raise VDOTInputError(name, f"holds {type(cond).__name__} {getattr(cond, 'shape', '')}, not [1, tokens, dim]",
                             "connect CLIP Text Encode with a umt5_xxl CLIP (type wan)")
    cond = cond.float().cpu()[:, :MAX_TEXT_TOKENS]
    out = torch.zeros(1, MAX_TEXT_TOKENS, cond.shape[-1])
    out[:, : cond.shape[1]] = cond
    return out


class VDOTConditioningToEmbeds:
    DESCRIPTION = ("Use ComfyUI's own Wan prompt encoding (Load CLIP with umt5_xxl, type 'wan' → CLIP Text Encode) "
                   "instead of VDOT Text Encode.")
    CATEGORY = "VDOT/conditioning"
    RETURN_TYPES = ("VDOT_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = ("Prompt embeddings for VDOT Sampler.",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"positive": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (umt5_xxl, type wan)."})},
            "optional": {"negative": ("CONDITIONING", {"tooltip": "Negative prompt; only used with cfg above 1."})},
        }

    def convert(self, positive, negative=None):
        neg = None if negative is None else _from_conditioning(negative, "negative")
        return (Embeds(_from_conditioning(positive, "positive"), neg),)


NODE_CLASS_MAPPINGS = {"VDOTTextEncode": VDOTTextEncode, "VDOTConditioningToEmbeds": VDOTConditioningToEmbeds}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTTextEncode": "VDOT Text Encode",
                              "VDOTConditioningToEmbeds": "VDOT Conditioning to Embeds"}
