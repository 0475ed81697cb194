"""GAN discriminator head on the fake score's hidden states (paper §4.3).

Three learnable *register tokens*, one per tapped transformer block, each cross-attend to the fake
score's hidden states ``[B, L, D]`` after that block; the attended tokens are concatenated along
channels and a linear classifier maps them to one logit per sample. The fake score itself is the
feature extractor (its parameters are trained by the discriminator loss through the taps, as in
DMD2 / Self-Forcing-Plus), so the head is tiny compared with the transformer.

Taps (:func:`default_tap_blocks`): the last block and every 8th block before it — 40 layers (14B)
→ ``[23, 31, 39]``; 30 layers (1.3B) → ``[13, 21, 29]``.

Hidden states are recorded by :func:`capture_block_hidden_states`, forward hooks on
``transformer.blocks[i]`` of diffusers' ``WanVACETransformer3DModel`` / ``WanTransformer3DModel``
(``WanTransformerBlock.forward`` returns a plain ``[B, L, D]`` tensor).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

__all__ = ["default_tap_blocks", "capture_block_hidden_states", "RegisterTokenDiscriminator"]


def default_tap_blocks(num_layers: int, num_taps: int = 3, stride: int = 8) -> list[int]:
    """Block indices to tap: the last block and every ``stride``-th block before it.

    Rule: ``stride' = min(stride, (num_layers − 1) // (num_taps − 1))`` and
    ``taps = [L−1 − k·stride' for k = num_taps−1 … 0]``. So 40 → [23, 31, 39], 30 → [13, 21, 29],
    10 → [1, 5, 9], 4 → [1, 2, 3], 3 → [0, 1, 2]; with fewer layers than taps every block is
    tapped (2 → [0, 1], 1 → [0]). Always ``min(num_taps, num_layers)`` distinct, ascending indices
    ending at the last block.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if num_taps < 1:
        raise ValueError(f"num_taps must be >= 1, got {num_taps}")
    if num_layers <= num_taps:
        return list(range(num_layers))
    step = stride if num_taps == 1 else min(stride, (num_layers - 1) // (num_taps - 1))
    return [num_layers - 1 - k * step for k in range(num_taps - 1, -1, -1)]


def _in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. re-running a checkpointed block)."""
    fn = getattr(torch._C, "_current_graph_task_id", None)
    return fn is not None and fn() != -1


@contextlib.contextmanager
def capture_block_hidden_states(transformer: nn.Module, tap_blocks: Sequence[int], *,
                                include_vace_hint: bool = True) -> Iterator[dict[int, torch.Tensor]]:
    """Record the hidden states ``[B, L, D]`` after each tapped block during forwards in the block.

    Usage::

        with capture_block_hidden_states(fake_score, [23, 31, 39]) as feats:
            fake_score(hidden_states=x_t, timestep=t, encoder_hidden_states=ctx, ...)
        logits = disc(feats)

    ``feats`` maps block index → hidden states of the latest forward (a second forward inside the
    block overwrites them). The tensors keep their graph, so a loss on them trains the transformer's
    blocks up to the tap (and none after it). Works with diffusers' gradient checkpointing
    (non-reentrant): hook calls made during backward (a recomputation, in torch versions that
    re-run module hooks there) are ignored, so the recorded tensors stay the graph-carrying ones.

    In ``WanVACETransformer3DModel`` the VACE hint of layer ``i`` is added *outside* ``blocks[i]``.
    With ``include_vace_hint=True`` (default) a tap on a VACE layer records the residual stream after
    the hint (the input of ``blocks[i+1]``, or of ``norm_out`` for the last block, cast back to the
    block's dtype); otherwise, and for all other taps, the block's own output. The default taps of
    the 14B / 1.3B models are not VACE layers, so both choices coincide there.
    """
    blocks = getattr(transformer, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(transformer).__name__} has no .blocks to tap")
    taps = [int(i) for i in tap_blocks]
    n = len(blocks)
    bad = [i for i in taps if not 0 <= i < n]
    if bad or len(set(taps)) != len(taps):
        raise ValueError(f"tap_blocks {taps} must be distinct indices in [0, {n})")
    config = getattr(transformer, "config", None)
    vace_layers = set(getattr(config, "vace_layers", None) or []) if include_vace_hint else set()

    feats: dict[int, torch.Tensor] = {}
    dtypes: dict[int, torch.dtype] = {}
    handles = []

    def _first(x):
        return x[0] if isinstance(x, (tuple, list)) else x

    def block_hook(i, record):
        def hook(_module, _args, output):
            if _in_backward():
                return
            out = _first(output)
            dtypes[i] = out.dtype
            if record:
                feats[i] = out
        return hook

    def next_pre_hook(i):
        def hook(_module, args, kwargs):
            if _in_backward():
                return
            x = args[0] if args else kwargs.get("hidden_states")
            feats[i] = x.to(dtypes.get(i, x.dtype))
        return hook

    try:
        for i in taps:
            after_hint = i in vace_layers
            handles.append(blocks[i].register_forward_hook(block_hook(i, not after_hint)))
            if after_hint:
                nxt = blocks[i + 1] if i + 1 < n else getattr(transformer, "norm_out", None)
                if nxt is None:
                    raise TypeError("cannot locate the module after the last block (norm_out)")
                handles.append(nxt.register_forward_pre_hook(next_pre_hook(i), with_kwargs=True))
        yield feats
    finally:
        for h in handles:
            h.remove()


class RegisterTokenDiscriminator(nn.Module):
    """Register-token cross-attention discriminator: features of the tapped blocks → logits ``[B]``.

    For tap k: ``o_k = token_k + MHA(q = token_k, k = v = LN(h_k))`` with ``h_k [B, L, D]`` the
    hidden states after block ``tap_blocks[k]``; then ``logits = classifier(LN([o_1, …, o_T]))``.

    Args:
        hidden_dim: transformer width D (heads × head_dim; 5120 for 14B).
        tap_blocks: the tapped block indices (their order fixes the channel order).
        num_heads: attention heads (default: ``attn_dim // 128`` when divisible, else 1).
        attn_dim: width of the register tokens / attention (default D; smaller values project
            the keys / values down and shrink the head, e.g. 1024 for 14B).
        classifier_hidden_dim: ``None`` → a single linear layer (the paper); an int → a
            Linear-SiLU-Linear MLP.
        dropout: attention dropout.
    """

    def __init__(self, hidden_dim: int, tap_blocks: Sequence[int], num_heads: Optional[int] = None,
                 *, attn_dim: Optional[int] = None, classifier_hidden_dim: Optional[int] = None,
                 dropout: float = 0.0, token_init_std: float = 0.02):
        super().__init__()
        self.hidden_dim = int(hidden_dim)
        self.tap_blocks = [int(i) for i in tap_blocks]
        if not self.tap_blocks or len(set(self.tap_blocks)) != len(self.tap_blocks):
            raise ValueError(f"tap_blocks must be non-empty and distinct, got {self.tap_blocks}")
        self.attn_dim = int(attn_dim or hidden_dim)
        if num_heads is None:
            num_heads = self.attn_dim // 128 if self.attn_dim % 128 == 0 else 1
        n_taps = len(self.tap_blocks)
        self.register_tokens = nn.Parameter(torch.randn(n_taps, self.attn_dim) * token_init_std)
        self.kv_norms = nn.ModuleList(nn.LayerNorm(self.hidden_dim) for _ in range(n_taps))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(self.attn_dim, num_heads, dropout=dropout, batch_first=True,
                                  kdim=self.hidden_dim, vdim=self.hidden_dim)
            for _ in range(n_taps))
        width = n_taps * self.attn_dim
        self.out_norm = nn.LayerNorm(width)
        if classifier_hidden_dim:
            self.classifier = nn.Sequential(nn.Linear(width, classifier_hidden_dim), nn.SiLU(),
                                            nn.Linear(classifier_hidden_dim, 1))
        else:
            self.classifier = nn.Linear(width, 1)

    @classmethod
    def from_transformer(cls, transformer: nn.Module, tap_blocks: Optional[Sequence[int]] = None,
                         **kwargs) -> "RegisterTokenDiscriminator":
        """Size the head for a diffusers Wan transformer (taps default to :func:`default_tap_blocks`)."""
        cfg = transformer.config
        hidden = cfg.num_attention_heads * cfg.attention_head_dim
        taps = default_tap_blocks(cfg.num_layers) if tap_blocks is None else tap_blocks
        return cls(hidden, taps, **kwargs)

    def forward(self, features: Mapping[int, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: ``{block: [B, L, D]}`` (from :func:`capture_block_hidden_states`) or a
        sequence in ``tap_blocks`` order. Returns fp32-or-param-dtype logits ``[B]``."""
        if isinstance(features, Mapping):
            missing = [i for i in self.tap_blocks if i not in features]
            if missing:
                raise KeyError(f"hidden states of tapped blocks {missing} were not captured "
                               f"(got {sorted(features)})")
            hs = [features[i] for i in self.tap_blocks]
        else:
            hs = list(features)
            if len(hs) != len(self.tap_blocks):
                raise ValueError(f"expected {len(self.tap_blocks)} feature tensors, got {len(hs)}")
        dtype = self.register_tokens.dtype
        outs = []
        for k, h in enumerate(hs):
            if h.ndim != 3 or h.shape[-1] != self.hidden_dim:
                raise ValueError(f"tap {self.tap_blocks[k]}: expected [B, L, {self.hidden_dim}], "
                                 f"got {tuple(h.shape)}")
            kv = self.kv_norms[k](h.to(dtype))
            q = self.register_tokens[k].expand(h.shape[0], 1, self.attn_dim)
            o, _ = self.attns[k](q, kv, kv, need_weights=False)
            outs.append((o + q)[:, 0])
        z = self.out_norm(torch.cat(outs, dim=-1))
        return self.classifier(z).squeeze(-1)
