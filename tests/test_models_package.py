"""The models package: typed identify(), the conversion table, load progress and cancel."""

import json

import pytest
from safetensors.torch import save_file

from tests.test_models import assert_same_state, to_original, wan_original_names
from vdot_nodes.core import models
from vdot_nodes.core.errors import VDOTCancelled
from vdot_nodes.core.models.convert import CONVERSIONS, from_model_names, to_model_names
from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, tiny_vocab


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_transformer(seed=2)


@pytest.fixture
def comfy_file(tiny, tmp_path):
    path = tmp_path / "wan_vace_tiny.safetensors"
    save_file(to_original(tiny.state_dict(), wan_original_names(2, 1), prefix="model.diffusion_model."), path)
    return path


@pytest.fixture
def vdot_file(tiny, tmp_path):
    return models.save_transformer(tiny, tmp_path / "vdot_tiny.safetensors")


def test_identify_returns_a_typed_description_that_describe_checkpoint_reports(tiny, comfy_file):
    ckpt = models.Checkpoint.open(comfy_file, "transformer", "model")
    info = models.identify(ckpt.header, ckpt.metadata, ckpt.folder_config, ckpt.name)
    assert isinstance(info, models.CheckpointInfo)
    assert (info.kind, info.layout, info.variant, info.prefix) == ("transformer", "original", "vace", "model.diffusion_model.")
    assert set(info.key_map) == set(tiny.state_dict())  # the model's names ...
    assert all(v.startswith("model.diffusion_model.") and v in ckpt.header for v in info.key_map.values())  # ... onto stored ones
    described = models.describe_checkpoint(comfy_file)
    assert described == {"path": str(comfy_file), **info.as_dict()}
    assert "key_map" not in described and "has_tokenizer" not in described  # only a text encoder says that


def test_every_writable_layout_converts_back_to_the_model_names(tiny):
    text_keys = [k for k in build_tiny_text_encoder().state_dict() if k != "encoder.embed_tokens.weight"]
    keys = {"transformer": list(tiny.state_dict()), "text_encoder": text_keys}
    checked = 0
    for (component, layout), conversion in CONVERSIONS.items():
        if conversion.from_model is None or component not in keys:
            continue
        stored = from_model_names(component, layout, keys[component])  # model name -> stored name
        assert len(set(stored.values())) == len(stored)
        assert to_model_names(component, layout, stored.values()) == {m: s for m, s in stored.items()}
        checked += 1
    assert checked == 4  # diffusers + original transformer, hf + wan_t5 text encoder
    with pytest.raises(ValueError, match="nothing writes the vae in the original layout"):
        from_model_names("vae", "original", ["decoder.conv_in.weight"])


def test_text_encoder_with_wan_t5_names_loads_like_the_hf_file(tmp_path):
    """The release's Wan T5 names are one more entry in the conversion table: a safetensors file that keeps them loads."""
    encoder = build_tiny_text_encoder(seed=3)
    state = {k: v for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    names = from_model_names("text_encoder", "wan_t5", state)
    path = tmp_path / "wan_t5.safetensors"
    save_file({names[k]: v.clone() for k, v in state.items()}, path,
              metadata={"vdot_tokenizer_vocab": json.dumps([list(p) for p in tiny_vocab()])})
    info = models.describe_checkpoint(path)
    assert (info["kind"], info["layout"], info["variant"], info["has_tokenizer"]) == ("text_encoder", "wan_t5", "umt5", True)
    loaded, tokenizer = models.load_text_encoder(path, precision="fp32")
    assert_same_state(loaded, encoder)
    assert tokenizer("a red ball").input_ids == build_tiny_tokenizer()("a red ball").input_ids


def test_load_reports_bytes_read_and_cancels_between_tensors(tiny, vdot_file):
    entries, _ = models.read_safetensors_header(vdot_file)
    file_bytes = sum(end - start for _, _, start, end in entries.values())
    calls = []
    loaded = models.load_transformer(vdot_file, "fp32", progress=lambda done, total: calls.append((done, total)))
    assert_same_state(loaded, tiny)
    assert calls[0] == (0, file_bytes) and calls[-1] == (file_bytes, file_bytes)
    assert len(calls) == len(entries) + 1 and all(a[0] < b[0] for a, b in zip(calls, calls[1:]))

    asked = []

    def cancel():
        asked.append(1)
        return len(asked) == 3  # the user presses Cancel while the third tensor is next

    calls.clear()
    with pytest.raises(VDOTCancelled, match="interrupted"):
        models.load_transformer(vdot_file, "fp32", progress=lambda done, total: calls.append(done), cancel=cancel)
    assert len(asked) == 3 and len(calls) == 3  # the start, then two tensors read: nothing after Cancel


def test_cli_load_bar_only_for_big_loads(vdot_file, capsys):
    models.load_transformer(vdot_file, "fp32", progress=models.tqdm_load_progress("transformer"))
    assert "transformer" not in capsys.readouterr().err  # a test-size file shows no bar
    models.load_transformer(vdot_file, "fp32", progress=models.tqdm_load_progress("transformer", min_bytes=0))
    assert "transformer" in capsys.readouterr().err


def test_loader_node_passes_progress_and_cancel(vdot_file, tmp_path, monkeypatch):
    from vdot_nodes.nodes import comfy, loaders

    folder = tmp_path / "models" / "diffusion_models"
    folder.mkdir(parents=True)
    vdot_file.rename(folder / vdot_file.name)
    ticks, asked = [], []
    monkeypatch.setattr(comfy, "make_progress", lambda total, desc: lambda done, _total: ticks.append((done, total, desc)))
    monkeypatch.setattr(comfy, "make_cancel", lambda: lambda: asked.append(1) or False)
    comfy.set_fallback_root(tmp_path)
    loaders._CACHE.clear()
    try:
        (loaded,) = loaders.VDOTModelLoader().load(vdot_file.name, "fp32", "model")
    finally:
        comfy.set_fallback_root(None)
        loaders._CACHE.clear()
    assert loaded.module.config.num_layers == 2
    entries, _ = models.read_safetensors_header(folder / vdot_file.name)
    assert len(asked) == len(entries)  # asked before every tensor
    assert ticks and all(desc == f"loading {vdot_file.name}" for *_, desc in ticks)
