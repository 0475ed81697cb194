"""``vdot convert`` and ``core.release``: tiny files in the exact formats of the official VDOT release.

The release files are written here with ``torch.save`` as the authors' code writes / reads them:
``{'generator': {'model.<original Wan/VACE key>': bf16 tensor}}``, the T5 encoder under Wan's module
names (``wan/modules/t5.py``), the original Wan VAE state dict (fp32) and a ``google/umt5-xxl``
folder with ``spiece.model``. Original names come from ``tests.test_models`` (written from the original
module structure, independently of the converters under test); the Wan T5 names are written below
from ``T5Encoder`` / ``T5SelfAttention``.
"""

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.test_models import to_original, train_spiece, wan_original_names, wan_vae_original_name
from vdot_nodes.cli import main
from vdot_nodes.core import models, release
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.tiny import build_tiny_transformer, build_tiny_vae

# 128-wide heads: a custom size whose architecture is readable from shapes (as the 14B's is).
TINY = dict(num_attention_heads=1, attention_head_dim=128)
T5_LAYERS = 2


def wan_t5_names(num_layers: int) -> dict[str, str]:
    """{Wan T5 encoder name: HF UMT5EncoderModel name}, from Wan's T5Encoder / T5SelfAttention modules."""
    m = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
    for i in range(num_layers):
        hf = f"encoder.block.{i}.layer"
        m[f"blocks.{i}.norm1.weight"] = f"{hf}.0.layer_norm.weight"
        for p in "qkvo":
            m[f"blocks.{i}.attn.{p}.weight"] = f"{hf}.0.SelfAttention.{p}.weight"
        m[f"blocks.{i}.pos_embedding.embedding.weight"] = f"{hf}.0.SelfAttention.relative_attention_bias.weight"
        m[f"blocks.{i}.norm2.weight"] = f"{hf}.1.layer_norm.weight"
        m[f"blocks.{i}.ffn.gate.0.weight"] = f"{hf}.1.DenseReluDense.wi_0.weight"  # gelu(gate(x)) * fc1(x)
        m[f"blocks.{i}.ffn.fc1.weight"] = f"{hf}.1.DenseReluDense.wi_1.weight"
        m[f"blocks.{i}.ffn.fc2.weight"] = f"{hf}.1.DenseReluDense.wo.weight"
    return m


@pytest.fixture(scope="module")
def parts():
    from transformers import UMT5Config, UMT5EncoderModel

    from vdot_nodes.core.tiny import TINY_TEXT_ENCODER_CONFIG

    spiece = train_spiece()
    torch.manual_seed(3)
    t5 = UMT5EncoderModel(UMT5Config(**{**TINY_TEXT_ENCODER_CONFIG, "num_layers": T5_LAYERS, "vocab_size": 48})).eval()
    transformer = build_tiny_transformer(seed=2, **TINY).to(torch.bfloat16)
    return dict(transformer=transformer, vae=build_tiny_vae(seed=2), t5=t5.to(torch.bfloat16), spiece=spiece)


def release_transformer_state(parts):
    """``{'model.<original key>': bf16 tensor}`` (the ``generator`` dict of vdot_14b.pt)."""
    return to_original(parts["transformer"].state_dict(), wan_original_names(2, 1), prefix="model.")


def write_release(root: Path, parts, transformer=None, t5=None, vae=None) -> Path:
    """A release folder laid out as on huggingface.co/yutongwang1012/VDOT."""
    (root / "vdot-weights").mkdir(parents=True)
    torch.save({"generator": transformer if transformer is not None else release_transformer_state(parts)},
               root / "vdot-weights" / "vdot_14b.pt")
    hf = parts["t5"].state_dict()
    torch.save(t5 if t5 is not None else {w: hf[h].clone() for w, h in wan_t5_names(T5_LAYERS).items()},
               root / "models_t5_umt5-xxl-enc-bf16.pth")
    vae_state = {wan_vae_original_name(k): v.clone() for k, v in parts["vae"].state_dict().items()}
    torch.save(vae if vae is not None else vae_state, root / "Wan2.1_VAE.pth")
    (root / "google" / "umt5-xxl").mkdir(parents=True)
    (root / "google" / "umt5-xxl" / "spiece.model").write_bytes(parts["spiece"])
    return root


def run_cli(capsys, *args):
    rc = main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def one_error_line(capsys, *args) -> str:
    rc, _, err = run_cli(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vdot convert: error: ") and "Fix: " in lines[0]
    return lines[0]


def assert_same(model, reference):
    """Same values (the loaders keep some modules in fp32: an exact upcast of the stored bf16)."""
    a, b = model.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].to(b[k].dtype), b[k]) and torch.equal(a[k].float(), b[k].float()), k


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def test_release_folder_converts_bit_exactly_and_loads(parts, tmp_path, capsys):
    src = write_release(tmp_path / "VDOT", parts)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    rc, stdout, err = run_cli(capsys, src, out)
    assert rc == 0, err
    assert before == {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}  # mapped shared, never written
    names = sorted(p.name for p in out.iterdir())
    assert names == ["umt5_custom_bf16.safetensors", "vdot_custom_bf16.safetensors", "wan_2.1_vae.safetensors"]
    assert stdout.count("wrote ") == 3

    tr = out / "vdot_custom_bf16.safetensors"
    with safe_open(tr, framework="pt") as f:
        # Original Wan/VACE names, no prefix, bf16 as released, no vdot_format (it is not our diffusers format).
        assert set(f.keys()) == set(wan_original_names(2, 1)) and "vdot_format" not in f.metadata()
        ref = release_transformer_state(parts)
        for k in f.keys():  # bit-exact: same dtype, same bits
            assert f.get_slice(k).get_dtype() == "BF16" and torch.equal(f.get_tensor(k), ref["model." + k]), k
    assert_same(models.load_transformer(tr, precision="bf16"), parts["transformer"])

    te, tok = models.load_text_encoder(out / "umt5_custom_bf16.safetensors", precision="bf16")
    assert_same(te, parts["t5"])
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=parts["spiece"])
    assert tok("a red ball").input_ids == sp.encode("a red ball") + [1]  # same ids, </s> appended
    with safe_open(out / "umt5_custom_bf16.safetensors", framework="pt") as f:
        assert bytes(f.get_tensor("spiece_model").numpy()) == parts["spiece"]

    vae_file = out / "wan_2.1_vae.safetensors"
    with safe_open(vae_file, framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # the VAE keeps its source dtype
    assert_same(models.load_vae(vae_file, precision="fp32"), parts["vae"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file left


def test_fp16_and_fp8_are_the_exact_casts_with_fp8_clamped(parts, tmp_path, capsys):
    state = release_transformer_state(parts)
    big = "model.blocks.0.ffn.0.weight"
    state[big] = state[big].clone()
    state[big][0, :3] = torch.tensor([1000.0, -600.0, 447.0])  # two beyond fp8 e4m3fn's ±448
    src = tmp_path / "vdot_14b.pt"
    torch.save({"generator": state}, src)
    for dtype in ("fp16", "fp8_e4m3fn"):
        rc, stdout, err = run_cli(capsys, src, tmp_path / dtype, "--dtype", dtype)
        assert rc == 0, err
        path = tmp_path / dtype / f"vdot_custom_{dtype}.safetensors"
        with safe_open(path, framework="pt") as f:
            got = {k: f.get_tensor(k) for k in f.keys()}
        for key, ref in state.items():
            out = got[key.removeprefix("model.")]
            if dtype == "fp16":
                assert out.dtype == torch.float16 and torch.equal(out, ref.to(torch.float16)), key
                normal = ref.float().abs() >= 2 ** -14  # below fp16's normal range precision is absolute
                rel = (out.float() - ref.float()).abs()[normal] / ref.float().abs()[normal]
                assert rel.numel() == 0 or rel.max() <= 2 ** -11, key
            elif ref.dim() == 2 and key.endswith(".weight"):
                assert out.dtype == torch.float8_e4m3fn, key
                assert torch.equal(out, ref.clamp(-448, 448).to(torch.float8_e4m3fn)), key
                err_rel = (out.float() - ref.float().clamp(-448, 448)).abs() / ref.float().abs().clamp(min=2 ** -6)
                assert err_rel.max() <= 2 ** -4, key  # 3 mantissa bits: half an ulp is 1/16
            else:  # biases, norms, modulation, patch convolutions stay bf16
                assert out.dtype == torch.bfloat16 and torch.equal(out, ref), key
        if dtype == "fp8_e4m3fn":
            assert got["blocks.0.ffn.0.weight"][0, :2].float().tolist() == [448.0, -448.0]
            assert "2 values clamped to ±448" in stdout
            loaded = models.load_transformer(path, precision="fp8_e4m3fn")
            assert loaded.blocks[0].ffn.net[0].proj.weight.dtype == torch.float8_e4m3fn


def test_converted_transformer_satisfies_comfyui_wan_vace_detection(parts, tmp_path, capsys):
    """The conditions ComfyUI's ``comfy/model_detection.py`` (``detect_unet_config``, Wan 2.1 branch; read at
    Comfy-Org/ComfyUI a125cd84) uses to pick ``WAN21_Vace``, checked on the converted key set and shapes
    and on the full 14B key set the converter expects."""
    src = tmp_path / "vdot_14b.pt"
    torch.save({"generator": release_transformer_state(parts)}, src)
    assert run_cli(capsys, src, tmp_path / "out")[0] == 0
    with safe_open(tmp_path / "out" / "vdot_custom_bf16.safetensors", framework="pt") as f:
        tiny_shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}

    from vdot_nodes.core.models.convert.wan_transformer import comfy_key_names

    cfg14 = models.load_config(models.TRANSFORMER_CONFIGS["14B"])
    diffusers_shapes = models.meta_shapes("transformer", cfg14)
    shapes14 = {orig: list(diffusers_shapes[d]) for d, orig in comfy_key_names(diffusers_shapes).items()}
    assert len(shapes14) == 1331  # VDOT_REFERENCE §1.1: 1331 tensors in vdot_14b.pt

    def count_blocks(keys, prefix):  # ComfyUI's count_blocks: consecutive indices from 0
        n = 0
        while any(k.startswith(f"{prefix}{n}.") for k in keys):
            n += 1
        return n

    def comfy_config(sd):
        keys = list(sd)
        # unet_prefix_from_state_dict: no ComfyUI prefix -> "model." is tried and must match nothing.
        assert not any(k.startswith(("model.diffusion_model.", "model.model.", "net.", "model.")) for k in keys)
        # No earlier branch of detect_unet_config may fire first.
        earlier = ("joint_blocks.0.context_block.attn.qkv.weight", "clf.1.weight", "transformer.rotary_pos_emb.inv_freq",
                   "double_layers.0.attn.w1q.weight", "mlp_t5.0.weight", "txt_in.individual_token_refiner.blocks.0.norm1.weight",
                   "double_blocks.0.img_attn.norm.key_norm.scale", "t5_yproj.weight", "adaln_single.emb.timestep_embedder.linear_1.bias",
                   "genre_embedder.weight", "t_block.1.weight", "blocks.block0.blocks.0.block.attn.to_q.0.weight", "cap_embedder.1.weight")
        assert not set(earlier) & set(keys)
        assert "head.modulation" in keys and "vace_patch_embedding.weight" in keys
        dim = sd["head.modulation"][-1]
        return dict(dim=dim, out_dim=sd["head.head.weight"][0] // 4, num_heads=dim // 128, ffn_dim=sd["blocks.0.ffn.0.weight"][0],
                    num_layers=count_blocks(keys, "blocks."), in_dim=sd["patch_embedding.weight"][1],
                    vace_in_dim=sd["vace_patch_embedding.weight"][1], vace_layers=count_blocks(keys, "vace_blocks."))

    tiny = comfy_config(tiny_shapes)
    assert tiny == dict(dim=128, out_dim=16, num_heads=1, ffn_dim=48, num_layers=2, in_dim=16, vace_in_dim=96, vace_layers=1)
    big = comfy_config(shapes14)
    assert big == dict(dim=5120, out_dim=16, num_heads=40, ffn_dim=13824, num_layers=40, in_dim=16, vace_in_dim=96, vace_layers=8)
    # ComfyUI fixes what it does not read: freq_dim 256, patch (1,2,2), text_dim 4096 (WanModel default),
    # and places VACE blocks at range(0, num_layers, num_layers // vace_layers).
    assert shapes14["time_embedding.0.weight"][1] == 256 and shapes14["text_embedding.0.weight"][1] == 4096
    assert shapes14["patch_embedding.weight"][2:] == [1, 2, 2]
    assert list(range(0, 40, 40 // 8)) == cfg14["vace_layers"]


# --------------------------------------------------------------------------------------------
# Refusals: one line naming the file and the fix, exit status 2
# --------------------------------------------------------------------------------------------


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload, culprit", [(_Touch, "getattr"), (_System, "system")])
def test_pickle_with_a_python_object_is_refused_without_running_it(parts, tmp_path, capsys, payload, culprit):
    marker = tmp_path / "payload_ran"
    _Payload = payload
    src = tmp_path / "VDOT"
    write_release(src, parts)
    state = release_transformer_state(parts)
    torch.save({"generator": state, "trainer": _Payload(marker)}, src / "vdot-weights" / "vdot_14b.pt")
    line = one_error_line(capsys, src, tmp_path / "out")
    assert "vdot_14b.pt is not a plain tensor checkpoint: it contains a Python object or function (" in line
    assert culprit in line and "refusing to unpickle" in line
    assert not marker.exists() and not (tmp_path / "out").exists()  # nothing ran, nothing written
    # Inside the state dict too, and a non-tensor value that the unpickler may build (an int).
    torch.save({"generator": {**state, "model.extra": _Payload(marker)}}, tmp_path / "a.pt")
    assert "not a plain tensor checkpoint" in one_error_line(capsys, tmp_path / "a.pt", tmp_path / "out")
    torch.save({"generator": {**state, "model.step": 7}}, tmp_path / "b.pt")
    assert "b.pt: 1 entries are not tensors (e.g. model.step)" in one_error_line(capsys, tmp_path / "b.pt", tmp_path / "out")
    assert not marker.exists()


def test_truncated_and_non_checkpoint_files(parts, tmp_path, capsys):
    src = tmp_path / "vdot_14b.pt"
    torch.save({"generator": release_transformer_state(parts)}, src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    assert "vdot_14b.pt is truncated or damaged" in one_error_line(capsys, src, tmp_path / "out")
    # The pre-zip torch.save format cannot be memory-mapped; a small one is read whole, still weights-only.
    legacy = tmp_path / "legacy" / "Wan2.1_VAE.pth"
    legacy.parent.mkdir()
    torch.save({wan_vae_original_name(k): v for k, v in parts["vae"].state_dict().items()}, legacy,
               _use_new_zipfile_serialization=False)
    assert run_cli(capsys, legacy, tmp_path / "legacy_out")[0] == 0
    assert_same(models.load_vae(tmp_path / "legacy_out" / "wan_2.1_vae.safetensors", precision="fp32"), parts["vae"])
    junk = tmp_path / "Wan2.1_VAE.pth"
    junk.write_bytes(b"<html>404</html>")
    assert "Wan2.1_VAE.pth is not a torch.save checkpoint" in one_error_line(capsys, junk, tmp_path / "out")


def test_missing_and_unexpected_keys_are_named(parts, tmp_path, capsys):
    state = release_transformer_state(parts)
    del state["model.blocks.1.ffn.2.weight"], state["model.vace_blocks.0.after_proj.bias"]
    state["model.blocks.0.lora_A.weight"] = torch.zeros(2, 2)
    torch.save({"generator": state}, tmp_path / "vdot_14b.pt")
    line = one_error_line(capsys, tmp_path / "vdot_14b.pt", tmp_path / "out")
    assert re.search(r"vdot_14b\.pt does not match the VDOT transformer \(\d+ tensors\): 2 tensors missing "
                     r"\(e\.g\. blocks\.1\.ffn\.2\.weight, vace_blocks\.0\.after_proj\.bias\); "
                     r"1 unexpected tensors \(e\.g\. blocks\.0\.lora_A\.weight\)", line), line
    # Text encoder (reported in Wan's names) and VAE.
    hf = parts["t5"].state_dict()
    t5 = {w: hf[h] for w, h in wan_t5_names(T5_LAYERS).items() if w != "blocks.1.ffn.fc1.weight"}
    src = write_release(tmp_path / "VDOT", parts, t5=t5)
    assert "1 tensors missing (e.g. blocks.1.ffn.fc1.weight)" in one_error_line(capsys, src / "models_t5_umt5-xxl-enc-bf16.pth", tmp_path / "o")
    vae = {wan_vae_original_name(k): v for k, v in parts["vae"].state_dict().items()}
    vae["decoder.extra.weight"] = torch.zeros(1)
    torch.save(vae, tmp_path / "Wan2.1_VAE.pth")
    assert "1 unexpected tensors (e.g. decoder.extra.weight)" in one_error_line(capsys, tmp_path / "Wan2.1_VAE.pth", tmp_path / "o")


def test_t2v_transformer_and_vae_in_the_transformer_slot_are_named(parts, tmp_path, capsys):
    t2v = {k: v for k, v in release_transformer_state(parts).items() if "vace" not in k}
    torch.save({"generator": t2v}, tmp_path / "wan_t2v.pt")
    line = one_error_line(capsys, tmp_path / "wan_t2v.pt", tmp_path / "out")
    assert "wan_t2v.pt is a plain Wan2.1 text-to-video transformer without VACE blocks" in line and "vdot_14b.pt" in line
    vae = {wan_vae_original_name(k): v for k, v in parts["vae"].state_dict().items()}
    src = write_release(tmp_path / "VDOT", parts, transformer=vae)
    line = one_error_line(capsys, src, tmp_path / "out")
    assert "vdot_14b.pt should be the VDOT transformer but holds Wan2.1 VAE" in line
    assert "Fix: put the right file there: vdot-weights/vdot_14b.pt" in line
    assert not (tmp_path / "out").exists()


def test_existing_outputs_are_never_overwritten_and_checked_before_writing(parts, tmp_path, capsys):
    src = write_release(tmp_path / "VDOT", parts)
    out = tmp_path / "out"
    out.mkdir()
    (out / "wan_2.1_vae.safetensors").write_bytes(b"mine")  # the last component written
    line = one_error_line(capsys, src, out)
    assert "wan_2.1_vae.safetensors already exists" in line and "--overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["wan_2.1_vae.safetensors"]  # nothing else was written first
    assert (out / "wan_2.1_vae.safetensors").read_bytes() == b"mine"
    rc, _, err = run_cli(capsys, src, out, "--overwrite")
    assert rc == 0, err
    assert_same(models.load_vae(out / "wan_2.1_vae.safetensors", precision="fp32"), parts["vae"])


def test_tokenizer_is_required_for_the_text_encoder(parts, tmp_path, capsys):
    src = write_release(tmp_path / "VDOT", parts)
    t5 = src / "models_t5_umt5-xxl-enc-bf16.pth"
    lone = tmp_path / "lone" / t5.name
    lone.parent.mkdir()
    lone.write_bytes(t5.read_bytes())
    line = one_error_line(capsys, lone, tmp_path / "out")
    assert "the text encoder needs its tokenizer" in line and "--tokenizer" in line
    rc, _, err = run_cli(capsys, lone, tmp_path / "out", "--tokenizer", src / "google" / "umt5-xxl")
    assert rc == 0, err
    assert (tmp_path / "out" / "umt5_custom_bf16.safetensors").is_file()


def test_interrupted_write_leaves_no_file(parts, tmp_path):
    comp = release.open_release_file(write_release(tmp_path / "VDOT", parts) / "Wan2.1_VAE.pth", expect="vae")
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    target = tmp_path / "out" / "wan_2.1_vae.safetensors"
    target.parent.mkdir()
    with pytest.raises(KeyboardInterrupt):
        release.write_streaming(comp.tensors, release.output_dtypes(comp, "bf16"), target, {}, progress=progress)
    assert list(target.parent.iterdir()) == []


def test_loaders_refuse_the_release_pickles_and_point_at_convert(parts, tmp_path, capsys):
    src = write_release(tmp_path / "VDOT", parts)
    with pytest.raises(VDOTInputError, match=r"convert it: vdot convert .*vdot_14b\.pt <folder>"):
        models.load_transformer(src / "vdot-weights" / "vdot_14b.pt")
    rc = main(["generate", "--model", str(src / "vdot-weights" / "vdot_14b.pt"), "--vae", str(src / "Wan2.1_VAE.pth"),
               "--text-encoder", str(src / "models_t5_umt5-xxl-enc-bf16.pth"), "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Fix: convert it: vdot convert " in err[0], err
    assert not (tmp_path / "x.mp4").exists()


def test_help_names_the_release_files(capsys):
    assert main(["convert", "--help"]) == 0
    text = capsys.readouterr().out
    for name in ("vdot-weights/vdot_14b.pt", "models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth", "google/umt5-xxl",
                 "yutongwang1012/VDOT", "weights_only", "fp8_e4m3fn", "448"):
        assert name in text, name
    assert main(["convert"]) == 2
    assert capsys.readouterr().err.count("\n") == 1



@pytest.mark.parametrize("value, dtype, expect", [
    (float("nan"), "bf16", None),
    (1e5, "fp16", "--dtype: tensor blocks.0.ffn.0.weight has values beyond the range of float16. Fix: convert with --dtype bf16"),
])
def test_nan_weights_and_fp16_overflow_stop_the_conversion(parts, tmp_path, capsys, value, dtype, expect):
    state = release_transformer_state(parts)
    key = "model.blocks.0.ffn.0.weight"
    state[key] = state[key].clone()
    state[key][1, 1] = value
    torch.save({"generator": state}, tmp_path / "vdot_14b.pt")
    rc, _, err = run_cli(capsys, tmp_path / "vdot_14b.pt", tmp_path / "out", "--dtype", dtype)
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err
    if value != value:  # NaN
        assert last.startswith("vdot convert: error: ") and "tensor blocks.0.ffn.0.weight holds NaN or infinite values" in last
    else:
        assert last == "vdot convert: error: " + expect
    assert list((tmp_path / "out").iterdir()) == []  # the partial file was removed


def test_expected_14b_key_set_is_the_official_vace_model():
    """VDOT_REFERENCE §1.1: the official VaceWanModel (inference/models/wan/vace-14b-config.json) has 1331
    tensors and 17,337,592,896 parameters, 3.049 B of them in vace_*; the converter checks against this set."""
    from vdot_nodes.core.models.convert.wan_transformer import comfy_key_names

    cfg = models.load_config(models.TRANSFORMER_CONFIGS["14B"])
    official = dict(dim=5120, ffn_dim=13824, freq_dim=256, num_heads=40, num_layers=40, in_dim=16, out_dim=16, eps=1e-6,
                    vace_layers=[0, 5, 10, 15, 20, 25, 30, 35], vace_in_dim=96)
    ours = dict(dim=cfg["num_attention_heads"] * cfg["attention_head_dim"], ffn_dim=cfg["ffn_dim"], freq_dim=cfg["freq_dim"],
                num_heads=cfg["num_attention_heads"], num_layers=cfg["num_layers"], in_dim=cfg["in_channels"],
                out_dim=cfg["out_channels"], eps=cfg["eps"], vace_layers=cfg["vace_layers"], vace_in_dim=cfg["vace_in_channels"])
    assert ours == official
    shapes = models.meta_shapes("transformer", cfg)
    original = {orig: shapes[d] for d, orig in comfy_key_names(shapes).items()}
    numel = {k: torch.Size(s).numel() for k, s in original.items()}
    assert len(original) == 1331 and sum(numel.values()) == 17_337_592_896
    assert round(sum(n for k, n in numel.items() if k.startswith("vace_")) / 1e9, 3) == 3.049
    assert "vace_blocks.0.before_proj.weight" in original and "vace_blocks.1.before_proj.weight" not in original
