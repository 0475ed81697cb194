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


# --------------------------------------------------------------------------- the released VDOT head


@contextlib.contextmanager
def capture_time_embedding(transformer: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record the time embedding ``e`` ``[B, D]`` (the time MLP's output, before the 6·D projection).

    Diffusers' Wan models compute it in ``condition_embedder`` (first output, ``temb``); Wan's own code
    calls it ``time_embedding``. ``out["e"]`` keeps its graph.
    """
    embedder = getattr(transformer, "condition_embedder", None)
    if embedder is None:
        raise TypeError(f"{type(transformer).__name__} has no condition_embedder to read the time embedding from")
    out: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        if not _in_backward():
            out["e"] = output[0] if isinstance(output, (tuple, list)) else output

    handle = embedder.register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


class _RMSNorm(nn.Module):
    """RMS norm with a learnable scale, computed in fp32 (Wan's ``WanRMSNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _mlp_proj(in_dim: int, out_dim: int) -> nn.Sequential:
    """LN → Linear(in, in) → GELU → Linear(in, out) → LN (Wan's ``MLPProj``)."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim),
                         nn.LayerNorm(out_dim))


class GanAttentionBlock(nn.Module):
    """One tapped block of the released head: the register token cross-attends to the projected video tokens.

    ``x`` = proj1(hidden states) ``[B, L, small]``; ``a`` = attention with the register token as the
    single query and ``x`` as keys / values (``heads`` heads, RMS qk-norm); ``token = register + a``;
    ``y = FFN(LN(token)) + token`` (FFN small → ffn → small, tanh-GELU; LN without affine);
    output proj2(y) ``[B, 1, dim]``.
    """

    def __init__(self, dim: int, small_dim: int = 512, ffn_dim: int = 13824, num_heads: int = 8, eps: float = 1e-6):
        super().__init__()
        if small_dim % num_heads:
            raise ValueError(f"head width {small_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.proj1 = _mlp_proj(dim, small_dim)
        self.proj2 = _mlp_proj(small_dim, dim)
        self.norm2 = nn.LayerNorm(small_dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(small_dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, small_dim))
        self.q, self.k, self.v, self.o = (nn.Linear(small_dim, small_dim) for _ in range(4))
        self.norm_q, self.norm_k = _RMSNorm(small_dim, eps), _RMSNorm(small_dim, eps)

    def forward(self, hidden: torch.Tensor, register: torch.Tensor) -> torch.Tensor:
        x = self.proj1(hidden)
        b, n = x.shape[0], self.num_heads
        q = self.norm_q(self.q(register)).view(b, 1, n, -1).transpose(1, 2)
        k = self.norm_k(self.k(x)).view(b, x.shape[1], n, -1).transpose(1, 2)
        v = self.v(x).view(b, x.shape[1], n, -1).transpose(1, 2)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        token = register + self.o(a)
        y = self.ffn(self.norm2(token)) + token
        return self.proj2(y)


class VDOTGanHead(nn.Module):
    """The discriminator head of the released VDOT code (``gan.head: vdot``).

    ``registers`` = RMSNorm(3 learnable tokens of width ``small_dim``); for tap k a
    :class:`GanAttentionBlock` reads the hidden states after block ``tap_blocks[k]`` with register k;
    the outputs ``[B, 3, D]`` are concatenated with ``time_scale·e`` (the time embedding ``[B, D]``)
    into ``[B, 4·D]`` → LN → Linear(4D → D) → SiLU → Linear(D → 1). At 14B: D 5120, small 512, FFN
    13824, 8 heads, taps 23/31/39.
    """

    def __init__(self, hidden_dim: int, tap_blocks: Sequence[int], *, small_dim: int = 512, ffn_dim: int = 13824,
                 num_heads: int = 8, time_scale: float = 10.0, token_init_std: float = 0.02):
        super().__init__()
        self.hidden_dim = int(hidden_dim)
        self.tap_blocks = [int(i) for i in tap_blocks]
        if not self.tap_blocks or len(set(self.tap_blocks)) != len(self.tap_blocks):
            raise ValueError(f"tap_blocks must be non-empty and distinct, got {self.tap_blocks}")
        n = len(self.tap_blocks)
        self.time_scale = float(time_scale)
        self.register_tokens = nn.Parameter(torch.randn(n, small_dim) * token_init_std)
        self.register_norm = _RMSNorm(small_dim)
        self.attns = nn.ModuleList(GanAttentionBlock(self.hidden_dim, small_dim, ffn_dim, num_heads) for _ in range(n))
        width = (n + 1) * self.hidden_dim
        self.classifier = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.hidden_dim), nn.SiLU(),
                                        nn.Linear(self.hidden_dim, 1))

    @classmethod
    def from_transformer(cls, transformer: nn.Module, tap_blocks: Optional[Sequence[int]] = None, **kwargs
                         ) -> "VDOTGanHead":
        cfg = transformer.config
        hidden = cfg.num_attention_heads * cfg.attention_head_dim
        taps = default_tap_blocks(cfg.num_layers) if tap_blocks is None else tap_blocks
        return cls(hidden, taps, **kwargs)

    def forward(self, features: Mapping[int, torch.Tensor], time_embedding: torch.Tensor) -> torch.Tensor:
        """``features`` ``{block: [B, L, D]}``, ``time_embedding`` ``[B, D]`` → logits ``[B]``."""
        missing = [i for i in self.tap_blocks if i not in features]
        if missing:
            raise KeyError(f"hidden states of tapped blocks {missing} were not captured (got {sorted(features)})")
        dtype = self.register_tokens.dtype
        regs = self.register_norm(self.register_tokens)
        outs = []
        for k, i in enumerate(self.tap_blocks):
            h = features[i].to(dtype)
            if h.ndim != 3 or h.shape[-1] != self.hidden_dim:
                raise ValueError(f"tap {i}: expected [B, L, {self.hidden_dim}], got {tuple(h.shape)}")
            outs.append(self.attns[k](h, regs[k].expand(h.shape[0], 1, -1)))
        e = time_embedding.to(dtype).reshape(time_embedding.shape[0], 1, self.hidden_dim)
        z = torch.cat(outs + [self.time_scale * e], dim=1).flatten(1)
        return self.classifier(z).squeeze(-1)


def vdot_head_parameter_count(dim: int, num_taps: int = 3, small_dim: int = 512, ffn_dim: int = 13824) -> int:
    """Parameters of :class:`VDOTGanHead` from its spec (LayerNorms with affine except the FFN's pre-norm)."""
    s, f = small_dim, ffn_dim
    proj1 = 2 * dim + (dim * dim + dim) + (dim * s + s) + 2 * s
    proj2 = 2 * s + (s * s + s) + (s * dim + dim) + 2 * dim
    attn = 4 * (s * s + s) + 2 * s
    ffn = (s * f + f) + (f * s + s)
    width = (num_taps + 1) * dim
    classifier = 2 * width + (width * dim + dim) + (dim + 1)
    return num_taps * s + s + num_taps * (proj1 + proj2 + attn + ffn) + classifier
