"""Step 1 of a generation: prompts → UMT5 embeddings ``[B, 512, D]`` (Wan's convention: each prompt's
tokens, then zeros), with the on-disk prompt cache (``memory.PromptCache``) in front of the encoder.

Used by the pipeline, the text node and training; it needs only the text encoder and its tokenizer
(or a loader for them), never the transformer or the VAE.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence

import torch

from .errors import VDOTInputError
from .placement import compute_device, on_device

MAX_TEXT_TOKENS = 512  # Wan2.1 pads/truncates prompts to 512 UMT5 tokens


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: unescape HTML entities, collapse whitespace."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class PromptEncoder:
    """UMT5 encoder + tokenizer on ``device`` (offloaded to the CPU between uses with ``offload``).

    ``loader() -> (text_encoder, tokenizer)`` loads them on the first cache miss; :meth:`release` drops
    loaded ones again (host memory holds one large component at a time).
    """

    def __init__(self, text_encoder=None, tokenizer=None, *, device: str | torch.device | None = None, offload: bool = False,
                 loader: Callable[[], tuple] | None = None, prompt_cache=None):
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.device, self.offload = compute_device(device), offload
        self.loader, self.prompt_cache = loader, prompt_cache

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], max_length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
        """UMT5 embeddings ``[B, max_length, D]`` float32 on the CPU: each prompt's tokens, then zeros.

        With a ``prompt_cache`` a prompt seen before is read from disk and the encoder is not touched
        (nor loaded, when it comes from ``loader``).
        """
        if self.prompt_cache is not None:
            cached = [self.prompt_cache.get(clean_prompt(p), max_length) for p in prompts]
            if all(c is not None for c in cached):
                return torch.stack(cached)
        if self.text_encoder is None and self.loader is not None:
            self.text_encoder, self.tokenizer = self.loader()
        if self.text_encoder is None or self.tokenizer is None:
            raise VDOTInputError(
                "text_encoder", "no text encoder is loaded", "load a UMT5 text encoder or pass prompt embeddings"
            )
        prompts = [clean_prompt(p) for p in prompts]
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        lengths = tokens.attention_mask.gt(0).sum(dim=1)
        with on_device(self.text_encoder, self.device, self.offload):
            hidden = self.text_encoder(
                tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
            ).last_hidden_state
        hidden = hidden.float().cpu()
        embeds = torch.zeros_like(hidden)
        for i, n in enumerate(lengths.tolist()):
            embeds[i, :n] = hidden[i, :n]
            if self.prompt_cache is not None:
                self.prompt_cache.put(prompts[i], max_length, embeds[i], n)
        return embeds

    def release(self) -> bool:
        """Drop an encoder that the loader can bring back; True when something was dropped."""
        if self.loader is None or self.text_encoder is None:
            return False
        self.text_encoder = self.tokenizer = None
        return True


def check_prompt_embeds(name: str, embeds: torch.Tensor | None, text_dim: int) -> None:
    """Embeddings given to a transformer of text width ``text_dim``: ``[batch, tokens, text_dim]``, finite."""
    if embeds is None:
        return
    if embeds.ndim != 3 or embeds.shape[-1] != text_dim:
        raise VDOTInputError(
            name, f"text embeddings of shape {tuple(embeds.shape)} do not fit this model "
            f"(it takes [batch, tokens, {text_dim}])",
            "encode the prompt with the text encoder that belongs to this model (UMT5-XXL for Wan2.1)",
        )
    if not torch.isfinite(embeds).all():
        raise VDOTInputError(name, "text embeddings contain NaN/inf", "re-encode the prompt; check the text encoder weights")


__all__ = ["MAX_TEXT_TOKENS", "PromptEncoder", "check_prompt_embeds", "clean_prompt"]
