"""Wan LoRAs: the three file formats, merged vs on the fly, fp8 storage, reports and errors (tiny model)."""

import copy

import pytest
import torch
from vdot_nodes.core import lora as L
from vdot_nodes.core.atomic import atomic_save_safetensors
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.models import load_transformer, save_transformer
from vdot_nodes.core.tiny import build_tiny_transformer

R = 4  # rank
DIM, FFN = 24, 48  # tiny transformer width and FFN width


@pytest.fixture(scope="module")
def base():
    return build_tiny_transformer(seed=3).float()


def _model(base):
    return copy.deepcopy(base)


def _pair(out_f, in_f, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(R, in_f, generator=g) * 0.1, torch.randn(out_f, R, generator=g) * 0.1  # down, up


def _save(tmp_path, tensors, name="lora.safetensors", metadata=None):
    return atomic_save_safetensors(tensors, tmp_path / name, metadata=metadata)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, 16, 2, 8, 8, generator=g),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 7, 32, generator=g),
        control_hidden_states=torch.randn(1, 96, 2, 8, 8, generator=g),
        control_hidden_states_scale=torch.ones(1),
        return_dict=False,
    )


def _run(model, seed=0):
    dtype = model.patch_embedding.weight.dtype  # the compute dtype, also under fp8 storage
    inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and k != "timestep" else v for k, v in _inputs(seed).items()}
    with torch.no_grad():
        return model(**inputs)[0].float()


def test_comfy_format_merges_hand_computed_delta_on_wan_and_vace_blocks(base, tmp_path):
    dq, uq = _pair(DIM, DIM, 1)  # a Wan block
    dv, uv = _pair(DIM, DIM, 2)  # a VACE block's output projection
    diff = torch.randn(FFN, DIM) * 0.01
    diff_b = torch.randn(FFN) * 0.01
    norm_diff = torch.randn(DIM) * 0.01
    path = _save(tmp_path, {
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": dq,
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": uq,
        "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(8.0),
        "diffusion_model.vace_blocks.0.after_proj.lora_down.weight": dv,
        "diffusion_model.vace_blocks.0.after_proj.lora_up.weight": uv,
        "diffusion_model.blocks.1.ffn.0.diff": diff,
        "diffusion_model.blocks.1.ffn.0.diff_b": diff_b,
        "diffusion_model.blocks.1.norm3.diff": norm_diff,
    })
    model = _model(base)
    done = L.apply_loras(model, [(str(path), 0.7)])
    s = 0.7
    torch.testing.assert_close(model.blocks[0].attn1.to_q.weight,
                               base.blocks[0].attn1.to_q.weight + s * (uq @ dq) * 8.0 / R, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.vace_blocks[0].proj_out.weight,
                               base.vace_blocks[0].proj_out.weight + s * (uv @ dv), rtol=0, atol=1e-6)  # no alpha: α = r
    torch.testing.assert_close(model.blocks[1].ffn.net[0].proj.weight, base.blocks[1].ffn.net[0].proj.weight + s * diff)
    torch.testing.assert_close(model.blocks[1].ffn.net[0].proj.bias, base.blocks[1].ffn.net[0].proj.bias + s * diff_b)
    torch.testing.assert_close(model.blocks[1].norm2.weight, base.blocks[1].norm2.weight + s * norm_diff)  # Wan norm3
    assert torch.equal(model.blocks[1].attn1.to_q.weight, base.blocks[1].attn1.to_q.weight)  # untouched
    (report,) = done.reports
    assert report.format == "comfy" and not report.unmatched
    assert sorted(report.merged) == ["blocks.0.self_attn.q", "blocks.1.ffn.0", "blocks.1.norm3", "vace_blocks.0.after_proj"]


def test_kohya_format_without_alpha_uses_rank(base, tmp_path):
    d1, u1 = _pair(DIM, DIM, 4)
    d2, u2 = _pair(DIM, FFN, 5)
    path = _save(tmp_path, {
        "lora_unet_blocks_1_cross_attn_o.lora_down.weight": d1,
        "lora_unet_blocks_1_cross_attn_o.lora_up.weight": u1,
        "lora_unet_vace_blocks_0_ffn_2.lora_down.weight": d2,
        "lora_unet_vace_blocks_0_ffn_2.lora_up.weight": u2,
        "lora_unet_vace_blocks_0_ffn_2.alpha": torch.tensor(2.0),
    })
    model = _model(base)
    (report,) = L.apply_loras(model, [(str(path), 1.0)]).reports
    assert report.format == "kohya"
    torch.testing.assert_close(model.blocks[1].attn2.to_out[0].weight, base.blocks[1].attn2.to_out[0].weight + u1 @ d1,
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(model.vace_blocks[0].ffn.net[2].weight,
                               base.vace_blocks[0].ffn.net[2].weight + (u2 @ d2) * 2.0 / R, rtol=0, atol=1e-6)


def test_diffusers_peft_format_and_bias_delta(base, tmp_path):
    d, u = _pair(DIM, DIM, 6)
    bias = torch.randn(DIM) * 0.01
    d2, u2 = _pair(DIM, DIM, 7)
    path = _save(tmp_path, {
        "transformer.blocks.0.attn1.to_out.0.lora_A.weight": d,
        "transformer.blocks.0.attn1.to_out.0.lora_B.weight": u,
        "transformer.blocks.0.attn1.to_out.0.lora_B.bias": bias,
        "transformer.vace_blocks.0.proj_in.lora_A.weight": d2,
        "transformer.vace_blocks.0.proj_in.lora_B.weight": u2,
    }, metadata={"lora_adapter_metadata": '{"r": 4, "lora_alpha": 2}'})
    model = _model(base)
    (report,) = L.apply_loras(model, [(str(path), 1.5)]).reports
    assert report.format == "diffusers" and sorted(report.merged) == ["blocks.0.self_attn.o", "vace_blocks.0.before_proj"]
    torch.testing.assert_close(model.blocks[0].attn1.to_out[0].weight,
                               base.blocks[0].attn1.to_out[0].weight + 1.5 * (u @ d) * 2 / R, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.blocks[0].attn1.to_out[0].bias, base.blocks[0].attn1.to_out[0].bias + 1.5 * bias)
    torch.testing.assert_close(model.vace_blocks[0].proj_in.weight,
                               base.vace_blocks[0].proj_in.weight + 1.5 * (u2 @ d2) * 2 / R, rtol=0, atol=1e-6)


def test_unmatched_keys_are_reported(base, tmp_path, caplog):
    d, u = _pair(DIM, DIM, 8)
    path = _save(tmp_path, {
        "diffusion_model.blocks.0.self_attn.k.lora_down.weight": d,
        "diffusion_model.blocks.0.self_attn.k.lora_up.weight": u,
        "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight": d,  # an I2V module: not in a VACE model
        "diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight": u,
        "diffusion_model.blocks.7.self_attn.q.lora_down.weight": d,  # a block the tiny model lacks
        "diffusion_model.blocks.7.self_attn.q.lora_up.weight": u,
    })
    with caplog.at_level("WARNING"):
        (report,) = L.apply_loras(_model(base), [(str(path), 1.0)]).reports
    assert report.merged == ["blocks.0.self_attn.k"]
    assert len(report.unmatched) == 4 and "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight" in report.unmatched
    assert "4 keys matched nothing" in report.summary() and "4 keys matched nothing" in caplog.text


def test_nothing_matched_and_wrong_size_are_errors(base, tmp_path):
    other = _save(tmp_path, {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(R, 8),
                             "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(8, R)}, "sd.safetensors")
    model = _model(base)
    with pytest.raises(VDOTInputError, match="none of the 2 keys of sd.safetensors match"):
        L.apply_loras(model, [(str(other), 1.0)])
    d, u = _pair(5120, 5120, 9)  # a 14B LoRA: 5120 features
    big = _save(tmp_path, {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": d,
                           "diffusion_model.blocks.0.self_attn.q.lora_up.weight": u}, "wan14b.safetensors")
    with pytest.raises(VDOTInputError, match=r"maps 5120 -> 5120 features but blocks.0.self_attn.q is \[24, 24\]"):
        L.apply_loras(model, [(str(big), 1.0)])
    loha = _save(tmp_path, {"lora_unet_blocks_0_self_attn_q.hada_w1_a": torch.zeros(R, 8),
                            "lora_unet_blocks_0_self_attn_q.hada_w1_b": torch.zeros(R, 8)}, "loha.safetensors")
    with pytest.raises(VDOTInputError, match="loha.safetensors is a LyCORIS LoHa, not a plain LoRA"):
        L.apply_loras(model, [(str(loha), 1.0)])
    pickle = tmp_path / "lora.pt"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(VDOTInputError, match="lora.pt is a PyTorch pickle"):
        L.read_lora(pickle)
    for name, p in base.named_parameters():  # a failed call changed nothing
        assert torch.equal(p, model.get_parameter(name)), name


def _full_lora(tmp_path, seed=10):
    """A LoRA on every Linear of blocks and VACE blocks (+ a diff_b), in ComfyUI format."""
    tensors = {}
    for i, prefix in enumerate(["blocks.0", "blocks.1", "vace_blocks.0"]):
        for j, (mod, out_f, in_f) in enumerate([("self_attn.q", DIM, DIM), ("cross_attn.v", DIM, DIM),
                                                ("ffn.0", FFN, DIM), ("ffn.2", DIM, FFN)]):
            d, u = _pair(out_f, in_f, seed + 10 * i + j)
            tensors[f"diffusion_model.{prefix}.{mod}.lora_down.weight"] = d * 3
            tensors[f"diffusion_model.{prefix}.{mod}.lora_up.weight"] = u * 3
            tensors[f"diffusion_model.{prefix}.{mod}.alpha"] = torch.tensor(2.0)
    tensors["diffusion_model.blocks.1.ffn.2.diff_b"] = torch.randn(DIM) * 0.05
    return _save(tmp_path, tensors, "full.safetensors")


def test_on_the_fly_equals_merged_in_fp32(base, tmp_path):
    path = _full_lora(tmp_path)
    merged, hooked = _model(base), _model(base)
    L.apply_loras(merged, [L.LoraSpec(str(path), 0.8, "merge")])
    done = L.apply_loras(hooked, [L.LoraSpec(str(path), 0.8, "on_the_fly")])
    assert len(done.reports[0].on_the_fly) == 12 and not done.reports[0].merged
    for name, p in base.named_parameters():
        assert torch.equal(p, hooked.get_parameter(name))  # on the fly never writes a weight
    out_base, out_merged, out_hooked = _run(base), _run(merged), _run(hooked)
    assert (out_merged - out_base).abs().max() > 1e-3  # the LoRA does something
    torch.testing.assert_close(out_hooked, out_merged, rtol=1e-4, atol=1e-5)


def test_fp8_storage_is_patched_on_the_fly(base, tmp_path):
    path = _full_lora(tmp_path)
    reference = _model(base)
    L.apply_loras(reference, [(str(path), 1.0)])
    save_transformer(base, tmp_path / "tiny.safetensors")
    fp8 = load_transformer(tmp_path / "tiny.safetensors", precision="fp8_e4m3fn")  # what the loaders do
    before = fp8.blocks[0].attn1.to_q.weight.clone()
    (report,) = L.apply_loras(fp8, [(str(path), 1.0)]).reports  # auto
    assert len(report.on_the_fly) == 12 and report.merged == []
    assert torch.equal(fp8.blocks[0].attn1.to_q.weight.view(torch.uint8), before.view(torch.uint8))
    out, ref = _run(fp8).float(), _run(reference)
    assert torch.isfinite(out).all()
    plain_fp8 = load_transformer(tmp_path / "tiny.safetensors", precision="fp8_e4m3fn")
    err_lora = (out - ref).norm() / ref.norm()
    err_without = (_run(plain_fp8).float() - ref).norm() / ref.norm()
    assert err_lora < 0.1 and err_lora < 0.5 * err_without  # fp8 + LoRA is close to the fp32 merge, not to no LoRA


def test_strength_change_reapplies_from_original_weights(base, tmp_path):
    path = _full_lora(tmp_path)
    shared = _model(base)  # the loader's cached model
    lora = L.read_lora(path)
    expected, params = {}, list(shared.parameters())
    for s in (1.0, 0.25):
        ref = _model(base)
        L.apply_loras(ref, [(lora, s)])
        expected[s] = _run(ref)
    for s in (1.0, 0.25, 1.0):
        with L.applied(shared, [L.LoraSpec(lora, s)]) as reports:
            assert reports[0].strength == s
            torch.testing.assert_close(_run(shared), expected[s], rtol=0, atol=0)
        for name, p in base.named_parameters():
            assert torch.equal(p, shared.get_parameter(name)), name  # restored exactly after every run
        assert all(a is b for a, b in zip(params, shared.parameters()))  # the very same parameter objects
    with L.applied(shared, [L.LoraSpec(lora, 0.5, "on_the_fly")]):
        assert not torch.equal(_run(shared), _run(base))
    torch.testing.assert_close(_run(shared), _run(base), rtol=0, atol=0)  # hooks removed


def test_parse_lora_arg():
    assert L.parse_lora_arg("a.safetensors") == ("a.safetensors", 1.0)
    assert L.parse_lora_arg("dir/a.safetensors:0.6") == ("dir/a.safetensors", 0.6)
    assert L.parse_lora_arg("C:/loras/a.safetensors") == ("C:/loras/a.safetensors", 1.0)
    assert L.parse_lora_arg("C:/loras/a.safetensors:-1") == ("C:/loras/a.safetensors", -1.0)


def test_accwaninit_from_a_t2v_lora_merges_wan_blocks_only(tmp_path):
    """``models.generator_init_lora: FILE:STRENGTH`` through build_networks: the generator's Wan blocks get the
    LoRA, the VACE blocks and the teacher keep their weights."""
    import torch as _torch

    from training.config import config_from_dict
    from training.init import init_vace_from_t2v_lora
    from training.models import build_networks

    dq, uq = _pair(DIM, DIM, 20)
    dv, uv = _pair(DIM, DIM, 21)
    diff_b = torch.randn(DIM) * 0.1
    _save(tmp_path, {
        "diffusion_model.blocks.1.self_attn.q.lora_down.weight": dq,
        "diffusion_model.blocks.1.self_attn.q.lora_up.weight": uq,
        "diffusion_model.blocks.1.self_attn.q.alpha": torch.tensor(2.0),
        "diffusion_model.blocks.1.self_attn.q.diff_b": diff_b,
        "diffusion_model.vace_blocks.0.self_attn.q.lora_down.weight": dv,  # must be left out
        "diffusion_model.vace_blocks.0.self_attn.q.lora_up.weight": uv,
    }, "lightx2v_toy.safetensors")
    cfg = config_from_dict({
        "stage": 2, "models": {"generator_init_lora": "lightx2v_toy.safetensors:0.5", "teacher_precision": "fp32"},
        "data": {"manifest": "m.jsonl"}, "runtime": {"device": "cpu"},
    }, config_dir=str(tmp_path))
    nets = build_networks(cfg, _torch.device("cpu"))
    gen, teacher = nets.generator, nets.teacher
    torch.testing.assert_close(gen.blocks[1].attn1.to_q.weight, teacher.blocks[1].attn1.to_q.weight + 0.5 * (uq @ dq) * 2 / R,
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(gen.blocks[1].attn1.to_q.bias, teacher.blocks[1].attn1.to_q.bias + 0.5 * diff_b)
    for name, p in teacher.named_parameters():
        if name.startswith(("vace_blocks.", "vace_patch_embedding.")) or not name.startswith("blocks.1.attn1.to_q"):
            assert torch.equal(gen.get_parameter(name).float(), p.float()), name
    report = nets.init_report["lora"]
    assert report.merged == ["blocks.1.self_attn.q"] and report.excluded == ["vace_blocks.0.self_attn.q"]
    with pytest.raises(VDOTInputError, match="changes only VACE-only modules"):
        only_vace = _save(tmp_path, {"diffusion_model.vace_blocks.0.self_attn.q.lora_down.weight": dv,
                                     "diffusion_model.vace_blocks.0.self_attn.q.lora_up.weight": uv}, "vace.safetensors")
        init_vace_from_t2v_lora(_model(gen), only_vace)


def test_lora_baseline_workflow_is_valid_for_the_real_14b_files(comfy_root):
    """workflows/vdot_lora_baseline_t2v.json (VDOT paper ablation row 1): real file names with download links, the
    LoRA Loader between model loader and sampler, preset renoise / cfg 1; validated (not run: 14B files)."""
    import json
    import sys
    from pathlib import Path

    from vdot_nodes.nodes import NODE_CLASS_MAPPINGS

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from workflow_executor import load_workflow, ui_to_api, validate

    root = Path(__file__).resolve().parent.parent / "workflows"
    api = load_workflow(root / "api" / "vdot_lora_baseline_t2v.json")
    ui = json.loads((root / "vdot_lora_baseline_t2v.json").read_text())
    files = {"diffusion_models": "wan2.1_vace_14B_fp16.safetensors", "vae": "wan_2.1_vae.safetensors",
             "text_encoders": "umt5_xxl_fp16.safetensors",
             "loras": "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank32_bf16.safetensors"}
    for folder, name in files.items():  # empty stand-ins so the loaders' file lists offer the names
        (comfy_root / "models" / folder / name).write_bytes(b"")
    validate(api, NODE_CLASS_MAPPINGS)
    assert ui_to_api(ui, NODE_CLASS_MAPPINGS) == {k: {a: b for a, b in v.items() if a != "_meta"} for k, v in api.items()}
    by_type = {n["class_type"]: (k, n) for k, n in api.items()}
    lora_id, lora = by_type["VDOTLoraLoader"]
    assert lora["inputs"]["model"] == [by_type["VDOTModelLoader"][0], 0] and lora["inputs"]["strength"] == 1.0
    sampler = by_type["VDOTSampler"][1]["inputs"]
    assert sampler["model"] == [lora_id, 0] and sampler["cfg"] == 1.0
    assert (sampler["preset"], sampler["steps"], sampler["shift"]) == ("renoise", 0, 0.0)  # renoise's own 4 steps, shift 5
    for node in ui["nodes"]:
        if node["type"].endswith("Loader"):
            (entry,) = node["properties"]["models"]
            assert entry["name"] == node["widgets_values"][0] == files[entry["directory"]]
            assert entry["url"].startswith("https://huggingface.co/") and entry["url"].endswith("/" + entry["name"])
    (note,) = [n for n in ui["nodes"] if n["type"] == "MarkdownNote"]
    assert "huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/" + files["loras"] in note["widgets_values"][0]


def test_explicit_merge_into_fp8_is_refused_before_any_change(base, tmp_path):
    path = _full_lora(tmp_path)
    save_transformer(base, tmp_path / "tiny.safetensors")
    fp8 = load_transformer(tmp_path / "tiny.safetensors", precision="fp8_e4m3fn")
    before = {k: v.clone() for k, v in fp8.state_dict().items()}
    with pytest.raises(VDOTInputError, match="is stored in fp8: merging the LoRA would round it away"):
        L.apply_loras(fp8, [L.LoraSpec(str(path), 1.0, "merge")])
    after = fp8.state_dict()
    assert all(torch.equal(before[k].view(torch.uint8) if v.dtype.itemsize == 1 else before[k],
                           v.view(torch.uint8) if v.dtype.itemsize == 1 else v) for k, v in after.items())


def _real_lora_keys(dim: int, ffn: int, blocks: int, rank: int = 32) -> dict:
    """A lightx2v/Kijai-style Wan2.1-T2V LoRA at real size, as meta tensors (names and shapes only)."""
    meta = {}

    def t(*shape):
        return torch.empty(shape, device="meta")

    for i in range(blocks):
        b = f"diffusion_model.blocks.{i}"
        for mod, out_f, in_f in [*((f"{a}.{p}", dim, dim) for a in ("self_attn", "cross_attn") for p in "qkvo"),
                                 ("ffn.0", ffn, dim), ("ffn.2", dim, ffn)]:
            meta.update({f"{b}.{mod}.lora_down.weight": t(rank, in_f), f"{b}.{mod}.lora_up.weight": t(out_f, rank),
                         f"{b}.{mod}.alpha": torch.tensor(float(rank)), f"{b}.{mod}.diff_b": t(out_f)})
        for norm in ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k", "norm3"):
            meta[f"{b}.{norm}.diff"] = t(dim)
        meta[f"{b}.norm3.diff_b"] = t(dim)
        meta[f"{b}.modulation.diff"] = t(1, 6, dim)
    for mod, out_f, in_f in (("text_embedding.0", dim, 4096), ("text_embedding.2", dim, dim),
                             ("time_embedding.0", dim, 256), ("time_embedding.2", dim, dim),
                             ("time_projection.1", 6 * dim, dim), ("head.head", 64, dim)):
        meta.update({f"diffusion_model.{mod}.diff": t(out_f, in_f), f"diffusion_model.{mod}.diff_b": t(out_f)})
    meta["diffusion_model.head.modulation.diff"] = t(1, 2, dim)
    meta["diffusion_model.patch_embedding.diff"] = t(dim, 16, 1, 2, 2)
    return meta


@pytest.mark.parametrize("size", ["1.3B", "14B"])
def test_real_size_t2v_lora_matches_every_key_on_wan2_1_vace(size):
    """Every key of a real-size T2V LoRA finds its module in the real VACE architecture (on meta: no weights); the
    other size's LoRA is a shape error naming the key."""
    from diffusers import WanVACETransformer3DModel

    from vdot_nodes.core.models import TRANSFORMER_CONFIGS, load_config

    shapes = {"1.3B": (1536, 8960, 30), "14B": (5120, 13824, 40)}
    with torch.device("meta"):
        model = WanVACETransformer3DModel.from_config(load_config(TRANSFORMER_CONFIGS[size]))
    keys = _real_lora_keys(*shapes[size])
    lora = L.lora_from_state_dict(keys, f"wan{size}_t2v_lora.safetensors")
    report = L.check_lora(model, lora)
    assert report.unmatched == [] and len(report.merged) == len(lora.stems)
    assert {"blocks.0.self_attn.q", "blocks.0.modulation", "head.head", "patch_embedding"} <= set(report.merged)
    other = _real_lora_keys(*shapes["14B" if size == "1.3B" else "1.3B"])
    with pytest.raises(VDOTInputError, match=r"does not fit this model: diffusion_model\.blocks\.0\.self_attn\.q"):
        L.check_lora(model, L.lora_from_state_dict(other, "other.safetensors"))
