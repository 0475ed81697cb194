"""The architecture a checkpoint describes: the shipped configs, and configs inferred from tensor shapes.

Shapes record almost everything; what they do not (a custom-size transformer's head count and VACE
layer placement, UMT5's ``relative_attention_max_distance``) comes from the shipped configs in
``core/configs/`` and the Wan conventions documented where they are assumed. Never from the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TRANSFORMER_CONFIGS = {"1.3B": "wan2.1_vace_1.3b_transformer.json", "14B": "wan2.1_vace_14b_transformer.json"}
VAE_CONFIG = "wan2.1_vae.json"
TEXT_ENCODER_CONFIG = "umt5_xxl_encoder.json"


def load_config(name: str) -> dict:
    """One of the shipped JSON configs in ``configs/``."""
    return json.loads((CONFIG_DIR / name).read_text())



def transformer_facts(h: dict) -> dict:
    """Architecture facts readable from diffusers-named shapes."""
    def shape(k):
        return h[k][0] if k in h else None

    pe = shape("patch_embedding.weight") or (0, 0, 1, 1, 1)
    patch = list(pe[2:])
    p = 1
    for s in patch:
        p *= s
    blocks = {int(k.split(".")[1]) for k in h if k.startswith("blocks.")}
    vace = {int(k.split(".")[1]) for k in h if k.startswith("vace_blocks.")}
    return dict(
        dim=pe[0], in_channels=pe[1], patch_size=patch,
        num_layers=max(blocks) + 1 if blocks else 0, num_vace=max(vace) + 1 if vace else 0,
        ffn_dim=(shape("blocks.0.ffn.net.0.proj.weight") or (None,))[0],
        text_dim=(shape("condition_embedder.text_embedder.linear_1.weight") or (None, None))[1],
        freq_dim=(shape("condition_embedder.time_embedder.linear_1.weight") or (None, None))[1],
        out_channels=(shape("proj_out.weight") or (0,))[0] // p,
        vace_in_channels=(shape("vace_patch_embedding.weight") or (None, None))[1],
        qk_norm="blocks.0.attn1.norm_q.weight" in h, cross_attn_norm="blocks.0.norm2.weight" in h,
    )


def facts_of_config(c: dict) -> dict:
    c = {**load_config(TRANSFORMER_CONFIGS["14B"]), **c}  # diffusers' defaults are the 14B values
    return dict(
        dim=c["num_attention_heads"] * c["attention_head_dim"], in_channels=c["in_channels"], patch_size=list(c["patch_size"]),
        num_layers=c["num_layers"], num_vace=len(c["vace_layers"]), ffn_dim=c["ffn_dim"], text_dim=c["text_dim"],
        freq_dim=c["freq_dim"], out_channels=c["out_channels"], vace_in_channels=c["vace_in_channels"],
        qk_norm=bool(c["qk_norm"]), cross_attn_norm=bool(c["cross_attn_norm"]),
    )


def transformer_size(cfg: dict) -> str:
    for size, name in TRANSFORMER_CONFIGS.items():
        ref = load_config(name)
        if facts_of_config(cfg) == facts_of_config(ref) and list(cfg.get("vace_layers", [])) == ref["vace_layers"]:
            return size
    return "custom"


def transformer_config_from_facts(facts: dict) -> tuple[dict | None, str | None]:
    for name in TRANSFORMER_CONFIGS.values():
        ref = load_config(name)
        if facts == facts_of_config(ref):
            return ref, None
    # Another size: the head count and where the VACE blocks sit are not in any tensor shape. Wan
    # uses 128-wide heads and evenly spaced VACE layers; assume those only when they fit exactly.
    if facts["dim"] % 128 or not facts["num_vace"] or facts["num_layers"] % facts["num_vace"]:
        return None, (
            f"a custom-size VACE transformer (width {facts['dim']}, {facts['num_layers']} blocks, {facts['num_vace']} VACE blocks) "
            "whose attention head count and VACE layer placement cannot be read from tensor shapes"
        )
    step = facts["num_layers"] // facts["num_vace"]
    cfg = load_config(TRANSFORMER_CONFIGS["14B"])
    cfg.update(
        num_attention_heads=facts["dim"] // 128, attention_head_dim=128, in_channels=facts["in_channels"],
        out_channels=facts["out_channels"], patch_size=facts["patch_size"], num_layers=facts["num_layers"],
        ffn_dim=facts["ffn_dim"], text_dim=facts["text_dim"], freq_dim=facts["freq_dim"],
        vace_in_channels=facts["vace_in_channels"], vace_layers=list(range(0, facts["num_layers"], step)),
        qk_norm="rms_norm_across_heads" if facts["qk_norm"] else None, cross_attn_norm=facts["cross_attn_norm"],
    )
    return cfg, None



def vae_config_from_shapes(h: dict) -> dict | None:
    """The Wan2.1 VAE config with the base width read from diffusers-named shapes; None when the latent
    has other than 16 channels (Wan2.2's 48-channel VAE, which VDOT does not use)."""
    z = h["post_quant_conv.weight"][0][0] if "post_quant_conv.weight" in h else None
    if z != 16:
        return None
    cfg = load_config(VAE_CONFIG)
    cfg["base_dim"] = h["encoder.conv_in.weight"][0][0] if "encoder.conv_in.weight" in h else None
    return cfg


def t5_config_from_shapes(h: dict) -> dict | None:
    try:
        vocab, d_model = h["shared.weight"][0]
        buckets, heads = h["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][0]
        inner = h["encoder.block.0.layer.0.SelfAttention.q.weight"][0][0]
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in h
        d_ff = h["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"][0][0]
    except KeyError:
        return None
    cfg = load_config(TEXT_ENCODER_CONFIG)
    cfg.update(
        vocab_size=vocab, d_model=d_model, num_heads=heads, d_kv=inner // heads, d_ff=d_ff,
        relative_attention_num_buckets=buckets, num_layers=len({k.split(".")[2] for k in h if k.startswith("encoder.block.")}),
        feed_forward_proj="gated-gelu" if gated else "relu", is_gated_act=gated,
    )
    return cfg


def same_t5(a: dict, b: dict) -> bool:
    fields = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets")
    return all(a.get(f) == b.get(f) for f in fields)



def public_config(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}

