"""Fast previews: the TAEW2.1 tiny decoder (random weights in the real key layout), ComfyUI's latent-RGB
fallback, the sampler's per-step previews and VAE chunk bars in ComfyUI's progress bar, drafts."""

import sys
import types

import diffusers  # noqa: F401  (imported at collection: its log handler binds to pytest's session stream)
import pytest
import torch

from vdot_nodes.core import models
from safetensors.torch import save_file
from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.preview import (
    WAN21_LATENT_RGB_BIAS,
    WAN21_LATENT_RGB_FACTORS,
    decode_draft,
    expected_shapes,
    latent_rgb,
    load_preview_decoder,
    make_step_preview,
)
from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae
from vdot_nodes.core.vae_tiling import expected_chunks, generate_chunk_totals, vae_chunks, vae_tiling

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: two threads only contend on a shared CPU


def atomic_save_safetensors(state, path):
    """Test files: plain safetensors writes (no fsync; the atomic writer is tested in test_atomic)."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def header_only(state, path):
    """A safetensors file whose header is real and whose data is a hole: for errors found from the header
    alone (the loader must refuse it before reading a tensor)."""
    import json
    import struct

    header, offset = {}, 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        header[k] = {"dtype": "F16", "shape": list(v.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)
    return path


def _encoder_shapes() -> dict:
    """The encoder half of a taew2_1 file (ignored by VDOT, but present in the real file)."""
    shapes = {"encoder.0.weight": (64, 3, 3, 3), "encoder.0.bias": (64,)}
    for pool, conv, blocks, stride in ((2, 3, (4, 5, 6), 2), (7, 8, (9, 10, 11), 2), (12, 13, (14, 15, 16), 1)):
        shapes[f"encoder.{pool}.conv.weight"] = (64, 64 * stride, 1, 1)
        shapes[f"encoder.{conv}.weight"] = (64, 64, 3, 3)
        for b in blocks:
            for i, cin in ((0, 128), (2, 64), (4, 64)):
                shapes[f"encoder.{b}.conv.{i}.weight"] = (64, cin, 3, 3)
                shapes[f"encoder.{b}.conv.{i}.bias"] = (64,)
    shapes.update({"encoder.17.weight": (16, 64, 3, 3), "encoder.17.bias": (16,)})
    return shapes


def taew2_1_state(seed=0, dtype=torch.float16) -> dict:
    """Random tensors in taew2_1's full key layout (encoder and decoder), scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in {**_encoder_shapes(), **expected_shapes()}.items():
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        state[key] = (torch.randn(shape, generator=g) / fan_in ** 0.5).to(dtype) if len(shape) > 1 else \
            (torch.randn(shape, generator=g) * 0.05).to(dtype)
    return state


@pytest.fixture(scope="module")
def tae_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tae")
    state = taew2_1_state()
    st = atomic_save_safetensors(state, d / "taew2_1.safetensors")
    pth = d / "taew2_1.pth"
    torch.save({k: v.float() for k, v in state.items()}, pth)
    return {"safetensors": st, "pth": pth, "state": state, "dir": d}


def test_taew2_1_loads_from_safetensors_and_pth_in_the_real_layout(tae_files):
    state = tae_files["state"]
    for kind in ("safetensors", "pth"):
        decoder = load_preview_decoder(tae_files[kind])
        loaded = decoder.state_dict()
        assert set(loaded) == {k for k in state if k.startswith("decoder.")}  # encoder tensors ignored
        for k, v in loaded.items():
            assert v.dtype == torch.float32 and torch.equal(v, state[k].float()), k


def test_tae_gives_the_wan_vae_frame_count_finite_in_0_1_and_chunking_changes_nothing(tae_files):
    decoder = load_preview_decoder(tae_files["safetensors"])
    # T latent frames -> 4T frames, the first 3 dropped: 4(T-1)+1, as the Wan VAE (81 frames <- 21 latents).
    assert [decoder.output_frames(t) for t in (1, 2, 21)] == [1, 5, 81]
    latents = torch.randn(1, 16, 3, 2, 3, generator=torch.Generator().manual_seed(1)) * 2
    whole = decoder.decode(latents, chunk=3)
    assert whole.shape == (1, 9, 16, 24, 3)
    assert torch.isfinite(whole).all() and whole.min() >= 0 and whole.max() <= 1 and whole.std() > 0.01
    assert torch.allclose(decoder.decode(latents, chunk=1), whole, atol=1e-5)
    # Causal: frames made from latents 0 and 1 (1 + 4) do not change when latent 2 does (beyond float
    # rounding: on an AMD EPYC the convolutions of a batch with other values differ by 1.7e-6; later frames by 0.5).
    changed = latents.clone()
    changed[:, :, 2] += 3
    other = decoder.decode(changed)
    assert torch.allclose(other[:, :5], whole[:, :5], atol=1e-5) and not torch.allclose(other[:, 5:], whole[:, 5:], atol=1e-2)


def test_a_stride_two_first_time_grow_keeps_the_last_frames_channels(tae_files, tmp_path):
    state = dict(tae_files["state"])
    wide = torch.randn(512, 256, 1, 1).half()
    state["decoder.7.conv.weight"] = wide
    path = atomic_save_safetensors(state, tmp_path / "taew2_1_t2.safetensors")
    assert torch.equal(load_preview_decoder(path).state_dict()["decoder.7.conv.weight"], wide[256:].float())


def _err(path, match):
    with pytest.raises(VDOTInputError, match=match) as info:
        load_preview_decoder(path)
    assert info.value.input_name == "preview_decoder" and "\n" not in str(info.value)
    return str(info.value)


def test_wrong_files_are_one_line_naming_the_input(tae_files, tmp_path):
    state = tae_files["state"]
    _err(tmp_path / "missing.safetensors", "does not exist")
    vae = models.save_vae(build_tiny_vae(0), tmp_path / "wan_vae.safetensors")
    _err(vae, "not a TAEW2.1 / taehv tiny decoder .it looks like the full Wan2.1 VAE")
    wan22 = {k: v for k, v in state.items()}
    wan22["decoder.1.weight"] = torch.zeros(256, 48, 3, 3).half()
    wan22["decoder.22.weight"] = torch.zeros(12, 64, 3, 3).half()
    _err(header_only(wan22, tmp_path / "taew2_2.safetensors"), "tiny decoder for Wan 2.2")
    short = {k: v for k, v in state.items() if k != "decoder.16.conv.2.bias"}
    _err(header_only(short, tmp_path / "short.safetensors"), "missing decoder.16.conv.2.bias")
    bad = dict(state)
    bad["decoder.8.weight"] = torch.zeros(128, 256, 1, 1).half()
    _err(header_only(bad, tmp_path / "bad.safetensors"), r"decoder.8.weight has shape \[128, 256, 1, 1\]")
    nan = dict(state)
    nan["decoder.14.weight"] = nan["decoder.14.weight"].clone()
    nan["decoder.14.weight"][0, 0, 0, 0] = float("nan")
    _err(atomic_save_safetensors(nan, tmp_path / "nan.safetensors"), "decoder.14.weight holds NaN")
    (tmp_path / "text.safetensors").write_text("not weights")
    _err(tmp_path / "text.safetensors", "not a readable safetensors file")
    full = tae_files["safetensors"].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(full[: len(full) // 2])
    _err(tmp_path / "cut.safetensors", "truncated")
    # A pickle that would build a Python object is refused by the weights-only unpickler, naming where to get the file.
    torch.save({"decoder.1.weight": torch.zeros(1), "x": types.SimpleNamespace(a=1)}, tmp_path / "evil.pth")
    message = _err(tmp_path / "evil.pth", "refusing to unpickle it")
    assert "madebyollin/taehv" in message
    (tmp_path / "taew2_1.onnx").write_bytes(b"x")
    _err(tmp_path / "taew2_1.onnx", "neither .safetensors nor .pth")


def test_latent_rgb_is_comfyuis_wan21_projection():
    # ComfyUI comfy/latent_formats.py Wan21 (a125cd84): channel 6 and the bias, pinned.
    assert WAN21_LATENT_RGB_FACTORS[6] == (-0.3477, -0.4059, -0.2925)
    assert WAN21_LATENT_RGB_BIAS == (-0.1835, -0.0868, -0.3360)
    x = torch.zeros(16, 2, 3)
    x[2] = 1.0  # channel 2 alone: rgb = factors[2] + bias, mapped from -1..1 to 0..1
    rgb = latent_rgb(x)
    assert rgb.shape == (2, 3, 3)
    want = (torch.tensor([0.3568, 0.2548, 0.1747]) + torch.tensor(WAN21_LATENT_RGB_BIAS) + 1) / 2
    assert torch.allclose(rgb[1, 2], want, atol=1e-6)


def test_step_preview_picks_tae_latent_rgb_or_nothing_and_refuses_tae_for_the_toy_vae(tae_files):
    from training.toy.components import build_toy_vae

    wan, toy = build_tiny_vae(0), build_toy_vae(0)
    decoder = load_preview_decoder(tae_files["safetensors"])
    x0 = torch.randn(2, 16, 3, 4, 5)
    assert make_step_preview(wan)(x0).shape == (4, 5, 3)  # latent RGB at latent size (as ComfyUI)
    frame = make_step_preview(wan, decoder)(x0)
    assert frame.shape == (32, 40, 3) and 0 <= frame.min() and frame.max() <= 1
    # The TAE reads raw latents: the preview is the first frame of decoding video 0's x0 * std + mean.
    raw = x0[:1] * torch.tensor(wan.config.latents_std).view(1, 16, 1, 1, 1) + torch.tensor(wan.config.latents_mean).view(1, 16, 1, 1, 1)
    assert torch.allclose(frame, decoder.decode(raw)[0, 0], atol=1e-5)
    assert make_step_preview(toy) is None  # no projection exists for the toy latents: progress only
    with pytest.raises(VDOTInputError, match="makes 4 channels at 2× spatial, 1× temporal .the toy model"):
        make_step_preview(toy, decoder)


def test_expected_chunks_match_the_vae_hooks_tiled_and_not():
    vae = build_tiny_vae(0)
    with torch.no_grad():
        for frames, h, w, small_tiles in ((5, 16, 24, False), (5, 48, 40, True)):
            vae.use_tiling = False
            if small_tiles:  # the user's own tiling (mode "off" leaves it alone): 32-px tiles every 24
                vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24,
                                  tile_sample_stride_width=24)
            seen = {}
            with vae_tiling(vae, "off", h, w), vae_chunks(vae, None, lambda phase, n: seen.__setitem__(phase, n)):
                vae.encode(torch.randn(1, 3, frames, h, w))
                vae.decode(torch.randn(1, 16, (frames - 1) // 4 + 1, h // 8, w // 8))
            assert seen == {"encode": expected_chunks(vae, "encode", frames, h, w, "off"),
                            "decode": expected_chunks(vae, "decode", 2, h, w, "off")}
            assert seen == ({"encode": 8, "decode": 8} if small_tiles else {"encode": 2, "decode": 2})
    # Mode "on" applies 256-px tiles every 192 px: 480x832 is 3x5 tiles.
    vae.use_tiling = False
    assert expected_chunks(vae, "encode", 81, 480, 832, "on") == 21 * 15
    assert expected_chunks(vae, "decode", 21, 480, 832, "on") == 21 * 15
    assert expected_chunks(vae, "decode", 21, 480, 832, "auto") == 21  # Wan's own size runs untiled


@pytest.fixture(scope="module")
def parts():
    from vdot_nodes.nodes.loaders import LoadedModel
    from vdot_nodes.nodes.text import Embeds

    tokenizer, te = build_tiny_tokenizer(), build_tiny_text_encoder(0)
    model, vae = LoadedModel(build_tiny_transformer(0), "tiny"), LoadedModel(build_tiny_vae(0), "tiny-vae")
    from vdot_nodes.core.pipeline import VDOTPipeline

    embeds = VDOTPipeline(model.module, vae.module, te, tokenizer, device="cpu").encode_prompt(["a red ball"])
    return model, vae, Embeds(embeds, None)


def _fake_comfy(monkeypatch, interrupt_after=None):
    """ComfyUI's progress bar, preview options and interrupt as recording stand-ins (ComfyUI is not installed)."""
    events, checks = [], {"n": 0}

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            events.append((id(self), value, total or self.total, preview))

        def update(self, n):
            self.update_absolute(getattr(self, "v", 0) + n)
            self.v = getattr(self, "v", 0) + n

    class Interrupted(Exception):
        pass

    def throw():
        checks["n"] += 1
        if interrupt_after is not None and checks["n"] > interrupt_after:
            raise Interrupted()

    comfy = types.ModuleType("comfy")
    comfy.utils = types.SimpleNamespace(ProgressBar=ProgressBar)
    comfy.model_management = types.SimpleNamespace(throw_exception_if_processing_interrupted=throw,
                                                   get_torch_device=lambda: torch.device("cpu"))
    method = types.SimpleNamespace(NoPreviews="none", Auto="auto")
    comfy.cli_args = types.SimpleNamespace(args=types.SimpleNamespace(preview_method="auto", preview_size=512),
                                           LatentPreviewMethod=method)
    for name, mod in (("comfy", comfy), ("comfy.utils", comfy.utils), ("comfy.model_management", comfy.model_management),
                      ("comfy.cli_args", comfy.cli_args)):
        monkeypatch.setitem(sys.modules, name, mod)
    return events, checks, Interrupted


def test_sampler_shows_step_previews_and_vae_chunk_bars_in_comfyui(parts, monkeypatch, tae_files):
    from PIL import Image

    from vdot_nodes.nodes.preview import LoadedPreviewDecoder
    from vdot_nodes.nodes.sampler import VDOTSampler
    from vdot_nodes.nodes.vcu import VDOTVCUReference

    model, vae, embeds = parts
    events, _, _ = _fake_comfy(monkeypatch)
    (vcu,) = VDOTVCUReference().build(references=torch.rand(1, 16, 32, 3), width=32, height=16, num_frames=5)
    args = dict(model=model, vae=vae, embeds=embeds, vcu=vcu, seed=0, preset="renoise", steps=2, shift=0.0, cfg=1.0,
                denoise=1.0, control_scale=1.0, num_videos=1)
    (frames,) = VDOTSampler().sample(**args)
    assert frames.shape == (5, 16, 32, 3)
    previews = [e for e in events if e[3] is not None]
    assert [e[1] for e in previews] == [1, 2]  # one latent-RGB preview per step, at its step
    kind, image, size = previews[0][3]
    assert kind == "JPEG" and isinstance(image, Image.Image) and image.size == (4, 2) and size == 512
    totals = generate_chunk_totals(vae.module, "auto", 5, 16, 32, references=1)
    bars = {}
    for bar, value, total, _ in events:
        bars.setdefault(bar, []).append((value, total))
    finals = sorted(v[-1] for v in bars.values())
    assert (totals["encode"], totals["encode"]) in finals and (totals["decode"], totals["decode"]) in finals
    assert totals == {"encode": 2 * 2 + 1, "decode": 2}
    # With TAEW2.1 and final_video: previews are TAE frames at full size, and the video is the TAE's draft.
    events.clear()
    tae = LoadedPreviewDecoder(load_preview_decoder(tae_files["safetensors"]), "taew2_1", final_video=True)
    (draft,) = VDOTSampler().sample(**args, preview_decoder=tae)
    assert draft.shape == (5, 16, 32, 3) and not torch.allclose(draft, frames, atol=0.05)
    previews = [e for e in events if e[3] is not None]
    assert len(previews) == 2 and previews[0][3][1].size == (32, 16)


def test_interrupt_stops_the_sampler_between_vae_chunks(parts, monkeypatch):
    from vdot_nodes.nodes.sampler import VDOTSampler
    from vdot_nodes.nodes.vcu import VDOTVCUText2Video

    model, vae, embeds = parts
    (vcu,) = VDOTVCUText2Video().build(width=32, height=16, num_frames=9)
    # Checks before the run: 1 (phase), then per encode chunk; interrupt in the middle of the encode.
    events, checks, Interrupted = _fake_comfy(monkeypatch, interrupt_after=3)
    with pytest.raises(Interrupted):
        VDOTSampler().sample(model=model, vae=vae, embeds=embeds, vcu=vcu, seed=0, preset="renoise", steps=1,
                             shift=0.0, cfg=1.0, denoise=1.0, control_scale=1.0, num_videos=1)
    encode_values = [e[1] for e in events if e[3] is None]
    assert checks["n"] == 4 and max(encode_values, default=0) < generate_chunk_totals(vae.module, "auto", 9, 16, 32)["encode"]


def test_cli_draft_decodes_with_the_tae_and_refuses_it_for_the_toy_model(tae_files, tmp_path, capsys):
    from vdot_nodes.cli import main
    from vdot_nodes.core.video_io import read_video

    d = tmp_path
    tr = models.save_transformer(build_tiny_transformer(0), d / "transformer.safetensors")
    vae = models.save_vae(build_tiny_vae(0), d / "vae.safetensors")
    te = models.save_text_encoder(build_tiny_text_encoder(0), build_tiny_tokenizer(), d / "te.safetensors")
    common = ["generate", "--task", "t2v", "--prompt", "a red ball", "--frames", "5", "--height", "32", "--width", "32",
              "--preset", "renoise", "--steps", "1", "--device", "cpu", "--no-prompt-cache"]
    code = main(common + ["--model", str(tr), "--vae", str(vae), "--text-encoder", str(te),
                          "--preview-decoder", str(tae_files["pth"]), "--out", str(d / "draft.mp4")])
    assert code == 0
    frames, _ = read_video(d / "draft.mp4")
    assert frames.shape[:3] == (5, 32, 32)
    capsys.readouterr()
    code = main(common + ["--preview-decoder", str(tae_files["safetensors"]), "--out", str(d / "toy.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--preview-decoder: TAEW2.1 decodes Wan 2.1 latents" in err
    code = main(common + ["--model", str(tr), "--vae", str(vae), "--text-encoder", str(te),
                          "--preview-decoder", str(vae), "--out", str(d / "wrong.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "--preview-decoder: vae.safetensors is not a TAEW2.1" in err and not (d / "wrong.mp4").exists()


def test_draft_decode_is_cancellable_per_chunk(tae_files):
    from vdot_nodes.core.errors import VDOTCancelled

    vae = build_tiny_vae(0)
    decoder = load_preview_decoder(tae_files["safetensors"])
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(VDOTCancelled):
        decode_draft(vae, decoder, torch.randn(1, 16, 4, 2, 2), cancel=cancel)
    assert len(calls) == 3  # two chunks ran, the third was refused
    ticks = []
    decode_draft(vae, decoder, torch.randn(2, 16, 2, 2, 2), progress=lambda d, t: ticks.append((d, t)))
    assert ticks == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_long_video_bars_count_every_windows_vae_chunks(parts, monkeypatch):
    from vdot_nodes.core.long_video import plan_windows
    from vdot_nodes.nodes.long_video import VDOTLongVideo
    from vdot_nodes.nodes.vcu import VDOTVCUText2Video

    model, vae, embeds = parts
    events, _, _ = _fake_comfy(monkeypatch)
    (vcu,) = VDOTVCUText2Video().build(width=32, height=16, num_frames=9)
    (frames,) = VDOTLongVideo().sample(model=model, vae=vae, embeds=embeds, vcu=vcu, seed=0, preset="renoise", steps=1,
                                       shift=0.0, cfg=1.0, control_scale=1.0, window=5, overlap=1, colour_match=True)
    assert frames.shape == (9, 16, 32, 3)
    plan = plan_windows(9, 5, 1)
    assert len(plan) == 2
    want = {phase: sum(generate_chunk_totals(vae.module, "auto", w.length, 16, 32)[phase] for w in plan)
            for phase in ("encode", "decode")}
    bars = {}
    for bar, value, total, _ in events:
        bars.setdefault(bar, []).append((value, total))
    finals = [v[-1] for v in bars.values()]
    assert (want["encode"], want["encode"]) in finals and (want["decode"], want["decode"]) in finals
