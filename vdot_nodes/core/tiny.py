"""Tiny, randomly initialised Wan2.1-VACE components built offline from configs.

They are the same classes as the 14B model (diffusers ``WanVACETransformer3DModel``,
``AutoencoderKLWan``, transformers ``UMT5EncoderModel``) at a size that runs on a CPU in
milliseconds. Tests use them, and the CLI falls back to them when no model is configured and the
toy-world checkpoints are not available. They generate noise-like video: they are for exercising
code paths, not for pictures.
"""

from __future__ import annotations

from .seeding import seeded

# Small enough for a CPU, large enough to exercise every code path: two Wan blocks with a VACE
# block on the first, rope head_dim 12 (split 4/4/4 over t/h/w), text width 32.
TINY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=48,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
    vace_layers=[0],
    vace_in_channels=96,
)

# The smallest AutoencoderKLWan that diffusers' single-file converter also accepts.
TINY_VAE_CONFIG = dict(
    base_dim=4,
    z_dim=16,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_scales=[],
    temperal_downsample=[False, True, True],
)

TINY_TEXT_ENCODER_CONFIG = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
    dense_act_fn="gelu_new",
    is_encoder_decoder=False,
    use_cache=False,
    tie_word_embeddings=False,
)


def tiny_vocab() -> list[tuple[str, float]]:
    """SentencePiece-style unigram vocabulary: specials, lowercase letters, digits, a few words."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    words = "a the of and in on with red blue green cat dog person walks runs video ball car".split()
    pieces += [("▁" + w, -1.0) for w in words]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,"]
    return pieces


def build_tiny_tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=tiny_vocab(), extra_ids=0)


def build_tiny_transformer(seed: int = 0, **overrides):
    from diffusers import WanVACETransformer3DModel

    with seeded(seed):
        return WanVACETransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, **overrides}).eval()


def build_tiny_vae(seed: int = 0, **overrides):
    from diffusers import AutoencoderKLWan

    with seeded(seed):
        return AutoencoderKLWan(**{**TINY_VAE_CONFIG, **overrides}).eval()


def build_tiny_text_encoder(seed: int = 0, **overrides):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(**{"vocab_size": len(tiny_vocab()), **TINY_TEXT_ENCODER_CONFIG, **overrides})
    with seeded(seed):
        return UMT5EncoderModel(cfg).eval()
