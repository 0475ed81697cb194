"""AccWanInit (stage-1 Wan T2V → stage-2 VACE) and generator export, on tiny models and the real configs on meta."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training.export import comfy_key_names, export_generator
from training.init import VACE_ONLY_PREFIXES, init_vace_from_t2v, load_t2v_state_dict, t2v_config_from_vace
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.models import TRANSFORMER_CONFIGS, load_config, load_transformer
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.tiny import TINY_TRANSFORMER_CONFIG, build_tiny_transformer, build_tiny_vae
from vdot_nodes.core.vcu import build_t2v_vcu


def tiny_t2v(seed=7, **overrides):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**t2v_config_from_vace({**TINY_TRANSFORMER_CONFIG, **overrides})).eval()


@pytest.fixture(scope="module")
def t2v():
    return tiny_t2v()


def test_accwaninit_copies_every_wan_key_bit_exactly_and_leaves_vace_untouched(t2v):
    vace = build_tiny_transformer(seed=1)
    before = {k: v.clone() for k, v in vace.state_dict().items()}
    report = init_vace_from_t2v(vace, t2v.state_dict())
    after = vace.state_dict()
    t2v_state = t2v.state_dict()
    assert sorted(report["copied"]) == sorted(t2v_state)  # every stage-1 key maps
    assert report["vace_only"] and all(k.startswith(VACE_ONLY_PREFIXES) for k in report["vace_only"])
    assert set(report["copied"]) | set(report["vace_only"]) == set(after)
    for k in report["copied"]:
        assert torch.equal(after[k], t2v_state[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in report["copied"])  # the two seeds differ
    for k in report["vace_only"]:
        assert torch.equal(after[k], before[k]), k
    # With the VACE branch switched off, the initialised model computes exactly what the T2V model does.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 4, generator=gen)
    text = torch.randn(1, 8, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ref = t2v(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        out = vace(hidden_states=x, timestep=t, encoder_hidden_states=text,
                   control_hidden_states=torch.randn(1, 96, 2, 4, 4, generator=gen),
                   control_hidden_states_scale=torch.zeros(1), return_dict=False)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_accwaninit_reads_original_layout_files_and_refuses_vace_files(t2v, tmp_path):
    # A stage-1 checkpoint in the original / ComfyUI layout, written with the export's key names.
    names = comfy_key_names(t2v.state_dict())
    file = tmp_path / "wan_t2v_distilled.safetensors"
    save_file({"model.diffusion_model." + names[k]: v.contiguous() for k, v in t2v.state_dict().items()}, str(file))
    state = load_t2v_state_dict(file)
    assert set(state) == set(t2v.state_dict())
    vace = build_tiny_transformer(seed=1)
    report = init_vace_from_t2v(vace, str(file))
    assert all(torch.equal(vace.state_dict()[k], v) for k, v in t2v.state_dict().items() if k in report["copied"])
    # The original-layout dict itself (not a file) is renamed too.
    vace2 = build_tiny_transformer(seed=1)
    init_vace_from_t2v(vace2, {names[k]: v for k, v in t2v.state_dict().items()})
    assert all(torch.equal(vace2.state_dict()[k], v) for k, v in t2v.state_dict().items())
    # A diffusers folder (what save_pretrained / the public *-diffusers releases hold) reads the same.
    t2v.save_pretrained(tmp_path / "t2v-diffusers")
    folder_state = load_t2v_state_dict(tmp_path / "t2v-diffusers")
    assert all(torch.equal(folder_state[k], v) for k, v in t2v.state_dict().items())
    vace_file = export_generator(build_tiny_transformer(seed=2), tmp_path / "vace.safetensors", precision="fp32")
    with pytest.raises(VDOTInputError, match="already a Wan-VACE"):
        load_t2v_state_dict(vace_file)


def test_accwaninit_shape_mismatch_names_key_and_both_shapes(t2v):
    wider = tiny_t2v(ffn_dim=64)
    vace = build_tiny_transformer(seed=1)
    before = {k: v.clone() for k, v in vace.state_dict().items()}
    with pytest.raises(VDOTInputError) as e:
        init_vace_from_t2v(vace, wider.state_dict())
    msg = str(e.value)
    assert "blocks.0.ffn.net.0.proj.bias" in msg and "[64]" in msg and "[48]" in msg
    assert all(torch.equal(v, before[k]) for k, v in vace.state_dict().items())  # nothing half-copied
    bad = dict(t2v.state_dict())
    bad["blocks.0.attn2.add_k_proj.weight"] = torch.zeros(24, 32)  # an i2v-only tensor
    with pytest.raises(VDOTInputError, match="add_k_proj"):
        init_vace_from_t2v(vace, bad)
    missing = dict(t2v.state_dict())
    missing.pop("proj_out.weight")
    with pytest.raises(VDOTInputError, match="proj_out.weight"):
        init_vace_from_t2v(vace, missing)


@pytest.mark.parametrize("size", ["1.3B", "14B"])
def test_every_real_t2v_key_maps_into_vace_on_meta(size):
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    cfg = load_config(TRANSFORMER_CONFIGS[size])
    with torch.device("meta"):
        vace = WanVACETransformer3DModel.from_config(cfg)
        t2v = WanTransformer3DModel.from_config(t2v_config_from_vace(cfg))
    vace_keys = {k: tuple(v.shape) for k, v in vace.state_dict().items()}
    t2v_keys = {k: tuple(v.shape) for k, v in t2v.state_dict().items()}
    assert set(t2v_keys) <= set(vace_keys)
    assert all(t2v_keys[k] == vace_keys[k] for k in t2v_keys)
    rest = set(vace_keys) - set(t2v_keys)
    assert rest and all(k.startswith(VACE_ONLY_PREFIXES) for k in rest)
    # ...and the original (ComfyUI) names of both models convert back one-to-one.
    assert len(set(comfy_key_names(vace_keys).values())) == len(vace_keys)


def test_export_comfy_round_trips_bit_exactly_and_generates(tmp_path):
    from training.ema import EMA

    model = build_tiny_transformer(seed=3)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    ema.update(model)  # shadow = (old + new) / 2, different from the live weights
    path = export_generator(model, tmp_path / "vdot_tiny.safetensors", ema=ema, precision="fp32", metadata={"step": 10})
    with safe_open(path, framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    assert "blocks.0.self_attn.q.weight" in keys and "head.head.weight" in keys and "vace_blocks.0.before_proj.weight" in keys
    assert meta["step"] == "10" and "vdot_format" not in meta
    cfg = json.loads(meta["vdot_transformer_config"])
    loaded = load_transformer(path, precision="fp32", config=cfg)
    shadow = ema.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, shadow.get(k, model.state_dict()[k])), k
    # Never overwritten without overwrite=True; the file is unchanged after the refusal.
    with pytest.raises(VDOTInputError, match="already exists"):
        export_generator(model, path, precision="fp32")
    assert torch.equal(load_transformer(path, precision="fp32", config=cfg).proj_out.weight, shadow["proj_out.weight"])
    export_generator(model, path, precision="fp32", overwrite=True)
    assert torch.equal(load_transformer(path, precision="fp32", config=cfg).proj_out.weight, model.proj_out.weight)
    # The exported generator runs the 4-step sampler through the pipeline.
    pipe = VDOTPipeline(loaded, build_tiny_vae(seed=2), device="cpu")
    vcu = build_t2v_vcu(num_frames=5, height=16, width=16, prompt="x")
    text = torch.randn(1, 512, TINY_TRANSFORMER_CONFIG["text_dim"], generator=torch.Generator().manual_seed(0))
    video = pipe.generate(vcu, seed=0, prompt_embeds=text)
    assert video.shape == (1, 5, 16, 16, 3) and torch.isfinite(video).all()


def test_export_diffusers_folder_and_bf16(tmp_path):
    from diffusers import WanVACETransformer3DModel

    model = build_tiny_transformer(seed=4)
    folder = export_generator(model, tmp_path / "vdot-diffusers", layout="diffusers", precision="fp32")
    assert (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file()
    for loaded in (load_transformer(folder, precision="fp32"), WanVACETransformer3DModel.from_pretrained(folder)):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    half = export_generator(model, tmp_path / "vdot_bf16.safetensors", precision="bf16")
    with safe_open(half, framework="pt") as f:
        assert f.get_tensor("blocks.0.ffn.0.weight").dtype == torch.bfloat16
    with pytest.raises(VDOTInputError, match="layout"):
        export_generator(model, tmp_path / "x.safetensors", layout="ckpt")
    with pytest.raises(VDOTInputError, match="precision"):
        export_generator(model, tmp_path / "x.safetensors", precision="int4")
    wrong_ema = {k: v for k, v in model.state_dict().items() if k != "proj_out.bias"}
    with pytest.raises(VDOTInputError, match="proj_out.bias"):
        export_generator(model, tmp_path / "x.safetensors", ema=wrong_ema)
    assert not (tmp_path / "x.safetensors").exists() and not list(tmp_path.glob(".*.tmp"))


def test_comfy_export_loads_through_the_model_loader_node(comfy_root, monkeypatch):
    # 128-wide heads and evenly spaced VACE layers: a custom size whose architecture the loader reads
    # from shapes alone, as it does for the real 1.3B / 14B files (no config travels with a file).
    from vdot_nodes.nodes import loaders

    model = build_tiny_transformer(seed=5, num_attention_heads=1, attention_head_dim=128)
    export_generator(model, comfy_root / "models" / "diffusion_models" / "vdot_custom.safetensors", precision="fp32")
    monkeypatch.setattr(loaders, "_CACHE", {})
    (loaded,) = loaders.VDOTModelLoader().load("vdot_custom.safetensors", "fp32", "none")
    assert loaded.module.config.vace_layers == [0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.module.state_dict().items())
