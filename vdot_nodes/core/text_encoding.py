"""Step 1 of a generation: prompts → UMT5 embeddings ``[B, 512, D]`` (Wan's convention: each prompt's
tokens, then zeros), with the on-disk prompt cache (``memory.PromptCache``) in front of the encoder.

Used by the pipeline, the text node and training; it needs only the text encoder and its tokenizer
(or a loader for them), never the transformer or the VAE.
"""

from __future__ import annotations

import contextlib
import html
import math
import re
from collections.abc import Callable, Iterator, Sequence

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


def compact_padded_text(embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Wan text ``[B, N, D]`` (each prompt's tokens, then zero rows) → the same cross-attention over
    ``K = longest prompt + 1`` rows: ``(embeds[:, :K], bias [B, 1, 1, K])``.

    Every zero row becomes the same key and value inside the transformer (a per-token MLP, then per-token
    projections), so attending to ``P`` identical pad keys equals attending to the ``p`` kept ones with
    their logits raised by ``log(P / p)``: ``bias`` is that additive attention mask (0 on prompt tokens).
    Exact up to float rounding; a tiny model's cross-attention over 512 mostly-pad rows is a third of
    its compute. ``bias`` is None when nothing can be dropped.
    """
    n = embeds.shape[1]
    nonzero = embeds.detach().abs().amax(-1) > 0  # [B, N]
    positions = torch.arange(1, n + 1, device=embeds.device)
    lengths = (nonzero * positions).amax(-1)  # last non-zero row + 1 (0 for an all-zero prompt)
    keep = min(n, int(lengths.max()) + 1)
    if keep == n:
        return embeds, None
    bias = torch.zeros(embeds.shape[0], keep, dtype=torch.float32, device=embeds.device)
    for i, length in enumerate(lengths.tolist()):
        bias[i, length:] = math.log((n - length) / (keep - length))
    return embeds[:, :keep], bias[:, None, None, :]


@contextlib.contextmanager
def cross_attention_bias(transformer, bias: torch.Tensor | None) -> Iterator[None]:
    """While open, every cross-attention (``attn2``) of a Wan ``transformer`` (main and VACE blocks) adds
    ``bias`` to its logits: the mask :func:`compact_padded_text` returns. Needs an attention backend that
    takes an additive mask (PyTorch SDPA, the default)."""
    if bias is None:
        yield
        return

    def with_bias(module, args, kwargs):
        if len(args) > 2:
            args = (*args[:2], bias.to(args[0].dtype), *args[3:])
        else:
            kwargs = {**kwargs, "attention_mask": bias.to(args[0].dtype)}
        return args, kwargs

    handles = [m.register_forward_pre_hook(with_bias, with_kwargs=True)
               for name, m in transformer.named_modules() if name.endswith("attn2")]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["MAX_TEXT_TOKENS", "PromptEncoder", "check_prompt_embeds", "clean_prompt", "compact_padded_text",
           "cross_attention_bias"]
