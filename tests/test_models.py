"""Loaders for every weight format users have, checked with tiny models and real 1.3B / 14B layouts.

Original-layout files are produced here by renaming diffusers keys back to the original Wan names.
That inverse mapping is written independently of diffusers' converter (from the module structure of
the original Wan code), so a round trip through ``load_*`` checks the converter too.
"""

import io
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vdot_nodes.core import models
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.tiny import (
    TINY_TRANSFORMER_CONFIG,
    build_tiny_text_encoder,
    build_tiny_tokenizer,
    build_tiny_transformer,
    build_tiny_vae,
)

# --------------------------------------------------------------------------------------------
# Original Wan key names, written from the original module structure
# --------------------------------------------------------------------------------------------


def wan_original_names(num_layers: int, num_vace: int) -> dict[str, str]:
    """{original Wan/VACE name: diffusers name} for every tensor of a WanVACE transformer."""
    m = {}

    def linear(orig, diff):
        m[f"{orig}.weight"], m[f"{orig}.bias"] = f"{diff}.weight", f"{diff}.bias"

    def attention_block(orig, diff):
        m[f"{orig}.modulation"] = f"{diff}.scale_shift_table"
        for o_attn, d_attn in (("self_attn", "attn1"), ("cross_attn", "attn2")):
            for p in "qkv":
                linear(f"{orig}.{o_attn}.{p}", f"{diff}.{d_attn}.to_{p}")
            linear(f"{orig}.{o_attn}.o", f"{diff}.{d_attn}.to_out.0")
            m[f"{orig}.{o_attn}.norm_q.weight"] = f"{diff}.{d_attn}.norm_q.weight"
            m[f"{orig}.{o_attn}.norm_k.weight"] = f"{diff}.{d_attn}.norm_k.weight"
        linear(f"{orig}.norm3", f"{diff}.norm2")  # Wan's affine cross-attention norm is norm3
        linear(f"{orig}.ffn.0", f"{diff}.ffn.net.0.proj")
        linear(f"{orig}.ffn.2", f"{diff}.ffn.net.2")

    linear("patch_embedding", "patch_embedding")
    linear("vace_patch_embedding", "vace_patch_embedding")
    linear("text_embedding.0", "condition_embedder.text_embedder.linear_1")
    linear("text_embedding.2", "condition_embedder.text_embedder.linear_2")
    linear("time_embedding.0", "condition_embedder.time_embedder.linear_1")
    linear("time_embedding.2", "condition_embedder.time_embedder.linear_2")
    linear("time_projection.1", "condition_embedder.time_proj")
    linear("head.head", "proj_out")
    m["head.modulation"] = "scale_shift_table"
    for i in range(num_layers):
        attention_block(f"blocks.{i}", f"blocks.{i}")
    for j in range(num_vace):
        attention_block(f"vace_blocks.{j}", f"vace_blocks.{j}")
        if j == 0:
            linear(f"vace_blocks.{j}.before_proj", f"vace_blocks.{j}.proj_in")
        linear(f"vace_blocks.{j}.after_proj", f"vace_blocks.{j}.proj_out")
    return m


def wan_vae_original_name(name: str) -> str:
    """Diffusers AutoencoderKLWan name -> original Wan2.1 VAE name (4 levels, 2 res blocks)."""
    resnet = {"norm1.gamma": "residual.0.gamma", "conv1": "residual.2", "norm2.gamma": "residual.3.gamma",
              "conv2": "residual.6", "conv_shortcut": "shortcut"}

    def res(rest):
        for d, o in resnet.items():
            if rest.startswith(d + ".") or rest == d:
                return o + rest[len(d):]
        return rest

    parts = name.split(".")
    if parts[0] in ("quant_conv", "post_quant_conv"):
        return ("conv1." if parts[0] == "quant_conv" else "conv2.") + parts[1]
    side, mod, rest = parts[0], parts[1], ".".join(parts[2:])
    if mod == "conv_in":
        return f"{side}.conv1.{rest}"
    if mod == "norm_out":
        return f"{side}.head.0.{rest}"
    if mod == "conv_out":
        return f"{side}.head.2.{rest}"
    if mod == "mid_block":
        kind, idx, tail = parts[2], int(parts[3]), ".".join(parts[4:])
        slot = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, idx)]
        return f"{side}.middle.{slot}.{res(tail) if kind == 'resnets' else tail}"
    if mod == "down_blocks":
        return f"encoder.downsamples.{parts[2]}.{res('.'.join(parts[3:]))}"
    if mod == "up_blocks":
        level, kind, idx, tail = int(parts[2]), parts[3], int(parts[4]), ".".join(parts[5:])
        if kind == "resnets":
            return f"decoder.upsamples.{4 * level + idx}.{res(tail)}"
        return f"decoder.upsamples.{4 * level + 3}.{tail}"  # the upsampler closes each level
    raise AssertionError(f"unmapped VAE key {name}")


def to_original(state: dict, mapping: dict[str, str], prefix: str = "") -> dict:
    inverse = {d: o for o, d in mapping.items()}
    assert set(inverse) == set(state), "test mapping must cover the diffusers model exactly"
    return {prefix + inverse[k]: v.clone() for k, v in state.items()}


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def transformer_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, generator=g, dtype=dtype),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 5, 32, generator=g, dtype=dtype),
        control_hidden_states=torch.randn(1, 96, 2, 8, 8, generator=g, dtype=dtype),
        return_dict=False,
    )


def tiny_umt5(seed, **overrides):
    from transformers import UMT5Config, UMT5EncoderModel

    from vdot_nodes.core.tiny import TINY_TEXT_ENCODER_CONFIG

    torch.manual_seed(seed)
    return UMT5EncoderModel(UMT5Config(**{**TINY_TEXT_ENCODER_CONFIG, **overrides})).eval()


def train_spiece(byte_fallback=False) -> bytes:
    import sentencepiece as spm

    text = ["a red ball rolls on the green grass", "the cat walks with a dog in the park",
            "person runs fast, video of a blue car", "Ｆｕｌｌ width ﬁne text", "numbers 123 and 456 in the scene"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=buf, vocab_size=300 if byte_fallback else 48, model_type="unigram", pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, character_coverage=1.0, byte_fallback=byte_fallback, num_threads=1, minloglevel=2,
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_transformer(seed=1)


@pytest.fixture(scope="module")
def tiny_original(tiny):
    return to_original(tiny.state_dict(), wan_original_names(2, 1))


# --------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------


def test_transformer_diffusers_folder_pipeline_root_and_shards(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "pipe" / "transformer")
    tiny.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert list((tmp_path / "sharded").glob("*.index.json"))
    for path in (tmp_path / "pipe" / "transformer", tmp_path / "pipe", tmp_path / "sharded"):
        assert_same_state(models.load_transformer(path, precision="fp32"), tiny)
    assert models.describe_checkpoint(tmp_path / "pipe")["components"]["transformer"]["variant"] == "vace"


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_transformer_original_single_file(tiny, tiny_original, tmp_path, prefix):
    path = tmp_path / "wan2.1_vace_tiny.safetensors"
    save_file({prefix + k: v for k, v in tiny_original.items()}, path)
    info = models.describe_checkpoint(path)
    assert (info["kind"], info["layout"], info["variant"], info["prefix"]) == ("transformer", "original", "vace", prefix)
    # The tiny model's 12-wide heads cannot be read from shapes: it needs its config, and says so.
    with pytest.raises(VDOTInputError, match="head count"):
        models.load_transformer(path, precision="fp32")
    loaded = models.load_transformer(path, precision="fp32", config=TINY_TRANSFORMER_CONFIG)
    assert_same_state(loaded, tiny)
    with torch.no_grad():
        assert torch.equal(loaded(**transformer_inputs())[0], tiny(**transformer_inputs())[0])


def test_transformer_vdot_format_roundtrip_is_atomic(tiny, tmp_path):
    path = tmp_path / "ckpt" / "student.safetensors"
    models.save_transformer(build_tiny_transformer(seed=5), path)
    models.save_transformer(tiny, path)  # overwrite via os.replace
    assert sorted(p.name for p in path.parent.iterdir()) == ["student.safetensors"]  # no temp file left
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        assert meta["vdot_format"] == "diffusers-wan-vace"
        assert set(f.keys()) == set(tiny.state_dict())  # diffusers names
    assert json.loads(meta["vdot_config"])["attention_head_dim"] == 12
    assert_same_state(models.load_transformer(path, precision="fp32"), tiny)


@pytest.mark.parametrize("size", ["1.3B", "14B"])
def test_real_layouts_map_through_diffusers_converter(size):
    """The full original key set of the real models converts onto the diffusers model, shapes and all."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    cfg = models.load_config(models.TRANSFORMER_CONFIGS[size])
    with init_empty_weights():
        meta = WanVACETransformer3DModel.from_config(cfg)
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    assert len({s for s in shapes.values()}) > 5 and meta.config.num_layers == cfg["num_layers"]
    mapping = wan_original_names(cfg["num_layers"], len(cfg["vace_layers"]))
    assert set(mapping.values()) == set(shapes)
    header = {"model.diffusion_model." + o: (shapes[d], "F16") for o, d in mapping.items()}
    info = models.identify(header)
    key_map = info.key_map
    assert (info.kind, info.layout, info.variant, info.size) == ("transformer", "original", "vace", size)
    assert info.config == cfg
    assert set(key_map) == set(shapes)
    assert all(header[key_map[k]][0] == shapes[k] for k in shapes)
    # the same file without VACE blocks is a plain T2V model of that size
    t2v = {k: v for k, v in header.items() if "vace" not in k}
    info = models.identify(t2v)
    assert (info.variant, info.size, info.config) == ("t2v", size, None)


def test_custom_size_with_128_wide_heads_is_derived_from_shapes(tmp_path):
    model = build_tiny_transformer(num_attention_heads=1, attention_head_dim=128, ffn_dim=64, num_layers=2, vace_layers=[0])
    path = tmp_path / "custom.safetensors"
    save_file(to_original(model.state_dict(), wan_original_names(2, 1)), path)
    loaded = models.load_transformer(path, precision="fp32")
    assert loaded.config.num_attention_heads == 1 and loaded.config.vace_layers == [0]
    assert_same_state(loaded, model)
    assert models.describe_checkpoint(path)["size"] == "custom"


# --------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------


def test_precisions(tiny, tmp_path):
    path = models.save_transformer(tiny, tmp_path / "t.safetensors")
    bf16 = models.load_transformer(path, precision="bf16")
    fp16 = models.load_transformer(path, precision="fp16")
    assert bf16.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert fp16.blocks[0].ffn.net[2].weight.dtype == torch.float16
    # diffusers keeps these in fp32 at low precision
    assert fp16.scale_shift_table.dtype == torch.float32 and bf16.blocks[0].norm2.weight.dtype == torch.float32
    with torch.no_grad():
        ref = bf16(**transformer_inputs(torch.bfloat16))[0].float()
        for name, storage in (("fp8_e4m3fn", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)):
            m = models.load_transformer(path, precision=name)
            assert m.blocks[0].attn1.to_q.weight.dtype == storage
            assert m.vace_blocks[0].proj_out.weight.dtype == storage
            assert m.patch_embedding.weight.dtype == torch.bfloat16  # skipped, per diffusers defaults
            assert m.condition_embedder.text_embedder.linear_1.weight.dtype == torch.bfloat16
            out = m(**transformer_inputs(torch.bfloat16))[0].float()
            assert out.dtype == torch.float32 and torch.isfinite(out).all()
            rel = ((out - ref).norm() / ref.norm()).item()
            assert 0 < rel < 0.1, (name, rel)  # measured: e4m3 ~0.02, e5m2 ~0.05
    with pytest.raises(VDOTInputError, match="fp32, bf16, fp16, fp8_e4m3fn, fp8_e5m2"):
        models.load_transformer(path, precision="int4")


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------


def test_vae_original_file_folder_and_vdot_format(tmp_path):
    vae = build_tiny_vae(seed=2)
    original = {wan_vae_original_name(k): v.clone() for k, v in vae.state_dict().items()}
    # names the real wan_2.1_vae.safetensors has
    assert {"encoder.downsamples.5.time_conv.weight", "decoder.upsamples.3.time_conv.weight",
            "decoder.upsamples.4.shortcut.weight", "decoder.middle.1.to_qkv.weight", "conv2.weight"} <= set(original)
    save_file(original, tmp_path / "wan_vae_tiny.safetensors")
    vae.save_pretrained(tmp_path / "pipe" / "vae")
    models.save_vae(vae, tmp_path / "vae_vdot.safetensors")
    for path in (tmp_path / "wan_vae_tiny.safetensors", tmp_path / "pipe", tmp_path / "vae_vdot.safetensors"):
        loaded = models.load_vae(path)
        assert loaded.config.base_dim == 4 and loaded.config.z_dim == 16
        assert_same_state(loaded, vae)
    info = models.describe_checkpoint(tmp_path / "wan_vae_tiny.safetensors")
    assert (info["kind"], info["layout"], info["variant"], info["size"]) == ("vae", "original", "wan2.1", "custom")


def test_vae_of_another_latent_width_loads_but_wan22s_48_channels_are_refused(tmp_path):
    # The toy VAE has 4 latent channels: a Wan2.1-family AutoencoderKLWan whose fit to the transformer the
    # pipeline checks. Wan2.2's 48-channel VAE is another latent space and is refused by name.
    for z_dim in (4, 48):
        vae = build_tiny_vae(seed=3, z_dim=z_dim, latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
        path = models.save_vae(vae, tmp_path / f"vae_z{z_dim}.safetensors")
        for source in (path, vae.save_pretrained(tmp_path / f"folder_z{z_dim}") or tmp_path / f"folder_z{z_dim}"):
            if z_dim == 4:
                assert_same_state(models.load_vae(source), vae)
                assert models.describe_checkpoint(source)["variant"] == "wan2.1"
            else:
                with pytest.raises(VDOTInputError, match=r"is Wan2.2 VAE \(48 latent channels\).*VDOT uses the Wan2.1 VAE"):
                    models.load_vae(source)


# --------------------------------------------------------------------------------------------
# Text encoder
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_umt5_comfy_single_file_with_spiece(tmp_path, byte_fallback):
    import sentencepiece as spm

    spiece = train_spiece(byte_fallback)
    sp = spm.SentencePieceProcessor(model_proto=spiece)
    # UMT5 pads its embedding beyond the SentencePiece vocabulary, as 256384 vs 256300 pieces.
    enc = tiny_umt5(3, vocab_size=sp.get_piece_size() + 16, relative_attention_max_distance=128)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    if byte_fallback:
        state.pop("encoder.embed_tokens.weight")  # files differ on whether the tied copy is there
    state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    path = tmp_path / "umt5_tiny.safetensors"
    save_file(state, path)
    info = models.describe_checkpoint(path)
    assert (info["kind"], info["layout"], info["variant"], info["has_tokenizer"]) == ("text_encoder", "hf", "umt5", True)

    loaded, tok = models.load_text_encoder(path, precision="fp32")
    assert_same_state(loaded, enc)
    assert loaded.encoder.embed_tokens.weight.data_ptr() == loaded.shared.weight.data_ptr()  # still tied
    texts = ["a red ball rolls", "the  cat   walks", "Ｆｕｌｌ width ﬁne", "zzz Xylophone!", "日本 video"]
    for text in texts:
        assert tok(text, add_special_tokens=False).input_ids == sp.encode(text), text
    ids = tok(texts[0], return_tensors="pt").input_ids
    assert ids[0, -1].item() == sp.eos_id()
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, enc(ids).last_hidden_state)

    # save_text_encoder keeps the SentencePiece model, so the file stays ComfyUI-shaped
    out = models.save_text_encoder(loaded, tok, tmp_path / "te_vdot.safetensors")
    assert torch.equal(load_file(out)["spiece_model"], state["spiece_model"])
    again, tok2 = models.load_text_encoder(out, precision="fp32")
    assert_same_state(again, enc)
    assert all(tok2(t).input_ids == tok(t).input_ids for t in texts)


def test_text_encoder_folder_and_vocab_format(tmp_path):
    enc, tok = build_tiny_text_encoder(seed=4), build_tiny_tokenizer()
    enc.save_pretrained(tmp_path / "pipe" / "text_encoder")
    tok.save_pretrained(tmp_path / "pipe" / "tokenizer")
    path = models.save_text_encoder(enc, tok, tmp_path / "te.safetensors")
    with safe_open(path, framework="pt") as f:
        assert "spiece_model" not in f.keys() and "vdot_tokenizer_vocab" in f.metadata()
    for src in (tmp_path / "pipe", tmp_path / "pipe" / "text_encoder", path):
        loaded, tok2 = models.load_text_encoder(src, precision="fp32")
        assert_same_state(loaded, enc)
        assert loaded.config.relative_attention_max_distance == 16
        assert tok2("a red cat walks").input_ids == tok("a red cat walks").input_ids
    loaded, _ = models.load_text_encoder(path, precision="fp8_e4m3fn")
    assert loaded.encoder.block[0].layer[1].DenseReluDense.wi_0.weight.dtype == torch.float8_e4m3fn
    assert loaded.shared.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(loaded(tok("a red cat", return_tensors="pt").input_ids).last_hidden_state.float()).all()


def test_umt5_xxl_layout_is_recognised():
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = models.load_config(models.TEXT_ENCODER_CONFIG)
    with init_empty_weights():
        meta = UMT5EncoderModel(UMT5Config.from_dict(cfg))
    header = {k: (tuple(v.shape), "F16") for k, v in meta.state_dict().items() if k != "encoder.embed_tokens.weight"}
    header["spiece_model"] = ((1000,), "U8")
    info = models.identify(header)
    assert (info.kind, info.variant, info.size) == ("text_encoder", "umt5", "xxl")
    assert models.configs.same_t5(info.config, cfg) and "spiece_model" not in info.key_map


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["wan.pt", "wan.ckpt", "disguised.safetensors"])
def test_pickles_are_refused_never_unpickled(tmp_path, name):
    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(VDOTInputError, match="pickle") as e:
        models.load_transformer(path)
    assert "safetensors" in str(e.value) and not marker.exists()
    assert models.describe_checkpoint(path)["kind"] == "unknown" and not marker.exists()


def test_wrong_model_kinds(tiny_original, tmp_path):
    t2v = {k: v for k, v in tiny_original.items() if "vace" not in k}
    save_file(t2v, tmp_path / "wan_t2v.safetensors")
    with pytest.raises(VDOTInputError, match="without VACE blocks; VDOT needs a VACE checkpoint"):
        models.load_transformer(tmp_path / "wan_t2v.safetensors")
    i2v = {**t2v, "img_emb.proj.1.weight": torch.zeros(4, 4)}
    save_file(i2v, tmp_path / "wan_i2v.safetensors")
    with pytest.raises(VDOTInputError, match="image-to-video"):
        models.load_transformer(tmp_path / "wan_i2v.safetensors")
    models.save_vae(build_tiny_vae(), tmp_path / "vae.safetensors")
    with pytest.raises(VDOTInputError, match=r"^model: vae.safetensors looks like a VAE .* not a diffusion transformer"):
        models.load_transformer(tmp_path / "vae.safetensors")
    with pytest.raises(VDOTInputError, match="looks like a diffusion transformer"):
        models.load_vae(tmp_path / "wan_t2v.safetensors")
    save_file({"lora_unet_blocks_0.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    with pytest.raises(VDOTInputError, match="LoRA"):
        models.load_text_encoder(tmp_path / "lora.safetensors")


def test_missing_file_names_path_and_comfy_folder(tmp_path):
    with pytest.raises(VDOTInputError, match=r"nope\.safetensors does not exist.*models/diffusion_models"):
        models.load_transformer(tmp_path / "nope.safetensors")
    with pytest.raises(VDOTInputError, match="models/vae"):
        models.load_vae(tmp_path / "nope.safetensors")
    with pytest.raises(VDOTInputError, match="models/text_encoders"):
        models.load_text_encoder(tmp_path / "nope.safetensors")


def test_truncated_mismatched_missing_and_unexpected_tensors(tiny_original, tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(tiny_original, good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(VDOTInputError, match="truncated"):
        models.load_transformer(truncated, config=TINY_TRANSFORMER_CONFIG)

    cases = {
        "shape": ({**tiny_original, "blocks.1.ffn.0.weight": torch.zeros(50, 24)},
                  r"tensor blocks\.1\.ffn\.0\.weight has shape \[50, 24\], WanVACETransformer3DModel expects \[48, 24\]"),
        "missing": ({k: v for k, v in tiny_original.items() if k != "blocks.1.self_attn.o.bias"},
                    r"1 tensors missing \(e\.g\. blocks\.1\.attn1\.to_out\.0\.bias\)"),
        "unexpected": ({**tiny_original, "blocks.0.extra.weight": torch.zeros(3)}, r"1 unexpected tensors \(e\.g\. blocks\.0\.extra\.weight\)"),
    }
    for name, (state, pattern) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(state, path)
        with pytest.raises(VDOTInputError, match=pattern) as e:
            models.load_transformer(path, config=TINY_TRANSFORMER_CONFIG)
        assert f"{name}.safetensors" in str(e.value)


def test_scaled_fp8_and_unreadable_spiece_are_refused(tiny_original, tmp_path):
    save_file({**tiny_original, "scaled_fp8": torch.zeros(0)}, tmp_path / "fp8_scaled.safetensors")
    with pytest.raises(VDOTInputError, match="fp8_scaled"):
        models.load_transformer(tmp_path / "fp8_scaled.safetensors", config=TINY_TRANSFORMER_CONFIG)
    state = {k: v.clone() for k, v in build_tiny_text_encoder().state_dict().items()}
    save_file({**state, "spiece_model": torch.zeros(10, dtype=torch.uint8)}, tmp_path / "bad_spiece.safetensors")
    with pytest.raises(VDOTInputError, match="spiece_model is not a usable SentencePiece model"):
        models.load_text_encoder(tmp_path / "bad_spiece.safetensors")
    save_file(state, tmp_path / "no_tokenizer.safetensors")
    with pytest.raises(VDOTInputError, match="holds no tokenizer"):
        models.load_text_encoder(tmp_path / "no_tokenizer.safetensors")


def test_vdot_export_of_a_custom_size_loads_without_a_config(tiny, tmp_path):
    """`vdot train` exports in the ComfyUI layout with the architecture in the metadata, so custom
    sizes (the toy model) load from the file alone — as the ComfyUI loader node needs."""
    from training.export import export_generator

    path = export_generator(tiny, tmp_path / "student.safetensors", precision="fp32")
    info = models.describe_checkpoint(path)
    assert info["kind"] == "transformer" and info["layout"] == "original" and info["size"] == "custom"
    loaded = models.load_transformer(path, precision="fp32")
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
