"""Long video: window planning, per-window VCUs, seams, colour matching, progress, cancel, a real 2-window run."""

import pytest
import torch

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError
from vdot_nodes.core.long_video import generate_long_video, match_colours, plan_windows, window_vcu
from vdot_nodes.core.vcu import build_control_vcu, build_t2v_vcu, build_reference_control_vcu


@pytest.mark.parametrize("total,window,overlap", [(161, 81, 17), (145, 81, 17), (1001, 81, 17), (29, 17, 5),
                                                  (85, 81, 1), (33, 17, 13), (165, 81, 16)])
def test_plan_covers_every_frame_with_4k1_windows_and_minimum_overlap(total, window, overlap):
    plan = plan_windows(total, window, overlap)
    assert plan[0].start == 0 and plan[0].keep == 0 and plan[-1].end == total
    for prev, w in zip(plan, plan[1:]):
        assert w.length == window and (w.length - 1) % 4 == 0
        assert w.keep == prev.end - w.start >= overlap  # overlap at least as asked
        assert (w.keep - 1) % 4 == 0 and w.start % 4 == 0  # kept frames fill whole latent frames
    minimal = -(-(total - window) // ((window - overlap) // 4 * 4)) + 1
    assert len(plan) == minimal


def test_plan_counts_and_errors():
    assert [(w.start, w.keep) for w in plan_windows(161, 81, 17)] == [(0, 0), (40, 41), (80, 41)]
    assert [(w.start, w.keep) for w in plan_windows(145, 81, 17)] == [(0, 0), (64, 17)]
    assert [(w.start, w.end) for w in plan_windows(49, 81, 17)] == [(0, 49)]  # fits one window
    with pytest.raises(VDOTInputError, match="^num_frames: has 100 frames"):
        plan_windows(100)
    with pytest.raises(VDOTInputError, match="^window: has 80 frames"):
        plan_windows(161, 80)
    with pytest.raises(VDOTInputError, match="^overlap: is 78"):
        plan_windows(161, 81, 78)


def test_window_vcu_slices_control_keeps_made_frames_and_references():
    g = torch.Generator().manual_seed(0)
    control = torch.rand(29, 32, 32, 3, generator=g)
    refs = [torch.rand(32, 32, 3, generator=g)]
    long = build_reference_control_vcu(control, refs, task="reference_depth", prompt="p")
    w = plan_windows(29, 17, 5)[1]
    made = torch.rand(29, 32, 32, 3, generator=g)
    v = window_vcu(long, w, made)
    assert v.num_frames == 17 and v.task == "reference_depth" and v.prompt == "p"
    assert torch.equal(v.frames[:5], made[12:17]) and not v.masks[:5].any()
    assert torch.equal(v.frames[5:], control[17:29]) and v.masks[5:].all()
    assert torch.equal(v.references[0], long.references[0])


def test_colour_matching_removes_a_known_affine_shift():
    g = torch.Generator().manual_seed(1)
    truth = 0.2 + 0.5 * torch.rand(12, 16, 16, 3, generator=g)
    gain, offset = torch.tensor([1.15, 0.9, 1.05]), torch.tensor([-0.04, 0.06, 0.02])
    drifted = truth * gain + offset
    fixed = match_colours(drifted[5:], observed=drifted[:5], target=truth[:5])
    # The overlap's moments differ from the new frames' moments (different content); the affine is
    # estimated on the overlap only and still removes the shift from the new frames.
    assert (drifted[5:] - truth[5:]).abs().max() > 0.03
    torch.testing.assert_close(fixed, truth[5:], rtol=0, atol=1e-5)


class _DriftingRenderer:
    """Stands in for the model only: renders the slice of a known video, each window with its own colour drift
    (window 0 exact), the kept frames included — what VACE chunks do (VACE #44)."""

    def __init__(self, truth):
        self.truth, self.calls = truth, []
        self.gains = [torch.ones(3), torch.tensor([1.1, 0.95, 1.0]), torch.tensor([0.9, 1.05, 1.1])]
        self.offsets = [torch.zeros(3), torch.tensor([0.03, -0.02, 0.05]), torch.tensor([-0.05, 0.04, 0.0])]

    def encode_prompt(self, prompts):
        return torch.zeros(1, 4, 8)

    def generate(self, vcu, *, seed, progress, cancel=None, **kw):
        i = len(self.calls)
        self.calls.append((vcu, seed))
        start = [0, 8, 16][i]
        for k in range(4):
            progress(k + 1, 4)
        frames = self.truth[start:start + vcu.num_frames] * self.gains[i] + self.offsets[i]
        return frames.unsqueeze(0)


def test_chained_windows_are_matched_to_the_first_window_and_seams_are_copies():
    g = torch.Generator().manual_seed(2)
    truth = 0.25 + 0.5 * torch.rand(33, 16, 16, 3, generator=g)
    pipe = _DriftingRenderer(truth)
    calls, made_after = [], {}
    out = generate_long_video(pipe, build_t2v_vcu(33, 16, 16), window=17, overlap=5, seed=7,
                              progress=lambda d, t: calls.append((d, t)),
                              on_window=lambda w, n, made: made_after.setdefault(w.index, made.clone()))
    plan = plan_windows(33, 17, 5)
    assert [(w.start, w.keep) for w in plan] == [(0, 0), (8, 9), (16, 9)]
    assert [s for _, s in pipe.calls] == [7, 8, 9]  # window i: seed + i
    for w in plan[1:]:
        # Seams: the overlapped frames are the frames already made, bit for bit, fed back as kept frames.
        assert torch.equal(out[w.start:w.start + w.keep], made_after[w.index - 1][w.start:w.start + w.keep])
        vcu = pipe.calls[w.index][0]
        assert torch.equal(vcu.frames[: w.keep], made_after[w.index - 1][w.start:w.start + w.keep])
    torch.testing.assert_close(out, truth, rtol=0, atol=1e-5)  # every window's drift removed
    drifted = generate_long_video(_DriftingRenderer(truth), build_t2v_vcu(33, 16, 16), window=17, overlap=5,
                                  colour_match=False)
    assert (drifted[17:] - truth[17:]).abs().max() > 0.03
    # Progress counts steps across windows (one bar, each step reported once) and reaches each window's end.
    assert calls == [(k, 12) for k in range(1, 13)]


def _toy_width() -> int:
    """The embedded model's hidden width (read from its file: a LoRA must match it)."""
    from safetensors import safe_open

    from vdot_nodes.core.components import TOY_DIR, TOY_FILES

    with safe_open(TOY_DIR / TOY_FILES["transformer"], "pt") as f:
        return f.get_slice("blocks.0.self_attn.q.weight").get_shape()[0]


@pytest.fixture(scope="module")
def toy():
    from vdot_nodes.core.components import default_pipeline

    return default_pipeline(device="cpu")


def test_two_windows_on_the_embedded_model(toy):
    g = torch.Generator().manual_seed(3)
    # Small (CPU time is shared): 13 frames of 32x32 in windows of 9 with 5 kept -> (0..8), (4..12).
    control = torch.rand(13, 32, 32, 3, generator=g)
    long = build_control_vcu(control, task="depth", prompt="a red circle moves left over a white striped background")
    made_after, ticks = {}, []
    out = generate_long_video(toy, long, window=9, overlap=5, seed=1, preset="renoise",
                              progress=lambda d, t: ticks.append((d, t)),
                              on_window=lambda w, n, made: made_after.setdefault(w.index, made.clone()))
    assert out.shape == (13, 32, 32, 3) and torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[:9], made_after[0][:9])  # window 0 untouched by window 1 (seam: frames 4..8)
    assert out[9:].std() > 0.01  # window 1 made new frames
    assert (4, 8) in ticks and (8, 8) in ticks


def test_cancel_between_windows():
    truth = torch.rand(33, 16, 16, 3, generator=torch.Generator().manual_seed(4)) * 0.5
    pipe, pressed = _DriftingRenderer(truth), {"now": False}

    def on_window(w, n, made):
        pressed["now"] = w.index == 1  # Cancel pressed while window 1 ran

    with pytest.raises(VDOTCancelled):
        generate_long_video(pipe, build_t2v_vcu(33, 16, 16), window=17, overlap=5, on_window=on_window,
                            cancel=lambda: pressed["now"])
    assert len(pipe.calls) == 2  # window 2 never started


def test_cli_long_video_with_lora(tmp_path, capsys):
    """`vdot generate --frames N > --window --lora FILE:S` on the embedded model: 2 windows, the LoRA reported."""
    from vdot_nodes.cli import main
    from vdot_nodes.core.atomic import atomic_save_safetensors
    from vdot_nodes.core.video_io import read_video

    g = torch.Generator().manual_seed(5)
    lora = {}
    dim = _toy_width()
    for prefix in ("blocks.0", "vace_blocks.0"):
        lora[f"diffusion_model.{prefix}.self_attn.q.lora_down.weight"] = torch.randn(4, dim, generator=g) * 0.1
        lora[f"diffusion_model.{prefix}.self_attn.q.lora_up.weight"] = torch.randn(dim, 4, generator=g) * 0.1
    atomic_save_safetensors(lora, tmp_path / "toy_lora.safetensors")
    out = tmp_path / "long.mp4"
    code = main(["generate", "--prompt", "a red circle moves left over a white striped background", "--frames", "13",
                 "--window", "9", "--overlap", "5", "--height", "16", "--width", "16",
                 "--lora", f"{tmp_path / 'toy_lora.safetensors'}:0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "LoRA toy_lora.safetensors (comfy format, strength 0.5): 2 modules merged; every key matched" in err
    video, _ = read_video(out)
    assert video.shape[:3] == (13, 16, 16)


def test_lora_loader_and_long_video_nodes_leave_the_loaded_model_unchanged(comfy_root):
    """Nodes on the embedded model: LoRA Loader -> Long Video (2 windows), then a strength change and a run without
    the LoRA; the loader's cached model is the same object with the same weights throughout."""
    from vdot_nodes.core.atomic import atomic_save_safetensors
    from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, comfy
    from vdot_nodes.nodes.lora import lora_context

    def call(name, **kw):
        cls = NODE_CLASS_MAPPINGS[name]
        return getattr(cls(), cls.FUNCTION)(**kw)

    g = torch.Generator().manual_seed(6)
    dim = _toy_width()
    down, up = torch.randn(4, dim, generator=g) * 0.3, torch.randn(dim, 4, generator=g) * 0.3
    atomic_save_safetensors({"lora_unet_blocks_0_self_attn_q.lora_down.weight": down,
                             "lora_unet_blocks_0_self_attn_q.lora_up.weight": up},
                            comfy_root / "models/loras/toy_lora.safetensors")
    (model,) = call("VDOTModelLoader", model_name=comfy.EMBEDDED, precision="bf16", offload="model")
    (vae,) = call("VDOTVAELoader", vae_name=comfy.EMBEDDED, precision="fp32")
    (te,) = call("VDOTTextEncoderLoader", text_encoder_name=comfy.EMBEDDED, precision="bf16")
    (embeds,) = call("VDOTTextEncode", text_encoder=te, positive="a red ball", negative="")
    assert "toy_lora.safetensors" in comfy.list_models("loras") and comfy.EMBEDDED not in comfy.list_models("loras")
    weight = model.module.blocks[0].attn1.to_q.weight
    original = weight.detach().clone()
    (with_lora,) = call("VDOTLoraLoader", model=model, lora_name="toy_lora.safetensors", strength=1.0, apply="auto")
    assert with_lora.module is model.module and model.loras == () and len(with_lora.loras) == 1
    for strength in (1.0, 0.5):
        (m,) = call("VDOTLoraLoader", model=model, lora_name="toy_lora.safetensors", strength=strength, apply="auto")
        with lora_context(m):
            torch.testing.assert_close(m.module.blocks[0].attn1.to_q.weight, original + strength * (up @ down))
        assert model.module.blocks[0].attn1.to_q.weight is weight and torch.equal(weight, original)
    vcu = call("VDOTVCUText2Video", width=16, height=16, num_frames=9)[0]
    args = dict(vae=vae, embeds=embeds, vcu=vcu, seed=3, preset="renoise", steps=0, shift=0.0, cfg=1.0,
                control_scale=1.0, window=5, overlap=1, colour_match=True)
    (frames,) = call("VDOTLongVideo", model=with_lora, **args)
    assert frames.shape == (9, 16, 16, 3) and torch.isfinite(frames).all()
    assert torch.equal(model.module.blocks[0].attn1.to_q.weight, original)
    (plain,) = call("VDOTLongVideo", model=model, **args)
    assert (plain - frames).abs().max() > 1e-3  # the LoRA changed the video; without it, the plain model ran
    with pytest.raises(VDOTInputError, match="^lora_name: 'missing.safetensors' is not in ComfyUI's models/loras"):
        call("VDOTLoraLoader", model=model, lora_name="missing.safetensors", strength=1.0, apply="auto")
    # An API-format workflow bypasses the widgets' bounds; the nodes check them again.
    with pytest.raises(VDOTInputError, match="^strength: is nan"):
        call("VDOTLoraLoader", model=model, lora_name="toy_lora.safetensors", strength=float("nan"), apply="auto")
    with pytest.raises(VDOTInputError, match="^window: must be a whole number, got 8.5"):
        call("VDOTLongVideo", model=model, **{**args, "window": 8.5})
    with pytest.raises(VDOTInputError, match="^overlap: is 5; it must be at least 1 and at most the window minus 4"):
        call("VDOTLongVideo", model=model, **{**args, "overlap": 5})


@pytest.mark.parametrize("argv,message", [
    (["--frames", "161", "--num-videos", "2"], "--num-videos: a long video (--frames 161 > --window 81) is made one at a time"),
    (["--frames", "161", "--overlap", "80"], "--overlap: is 80; it must be at least 1 and at most the window minus 4"),
    (["--frames", "161", "--window", "80"], "--window: has 80 frames"),
    (["--lora", "missing_lora.safetensors:0.5"], "--lora: missing_lora.safetensors does not exist"),
    (["--lora", "wan14b_lora.safetensors"], "--lora: wan14b_lora.safetensors does not fit this model: "
     "diffusion_model.blocks.0.self_attn.q.lora_down.weight: the LoRA maps 5120 -> 5120 features"),
])
def test_cli_long_video_and_lora_errors_before_any_model_loads(argv, message, tmp_path, capsys, monkeypatch):
    from vdot_nodes import cli
    from vdot_nodes.core import components

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the input check")

    monkeypatch.setattr(components, "load_pipeline", no_load)
    monkeypatch.chdir(tmp_path)
    from vdot_nodes.core.atomic import atomic_save_safetensors

    atomic_save_safetensors({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 5120),
                             "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(5120, 4)},
                            tmp_path / "wan14b_lora.safetensors")  # a 14B LoRA; the embedded model is far narrower
    assert cli.main(["generate", *argv, "--out", str(tmp_path / "x.mp4")]) == 2
    assert message in capsys.readouterr().err
