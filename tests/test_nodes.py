"""Node declarations and node functions on the embedded model, without ComfyUI."""

import shutil
import sys
import types

import pytest
import torch

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.video_io import read_video
from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, comfy

KNOWN_TYPES = {"VDOT_MODEL", "VDOT_VAE", "VDOT_TEXT_ENCODER", "VDOT_EMBEDS", "VDOT_VCU", "IMAGE", "MASK", "INT",
               "FLOAT", "STRING", "BOOLEAN", "CONDITIONING", "SIGMAS", "SAMPLER", "MODEL", "VAE", "LATENT",
               "VDOT_PREVIEW_DECODER"}
F, H, W = 5, 32, 48


def node(name):
    return NODE_CLASS_MAPPINGS[name]()


def call(name, **kwargs):
    cls = NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)(**kwargs)


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_declaration(name, comfy_root):
    cls = NODE_CLASS_MAPPINGS[name]
    assert name.startswith("VDOT") and NODE_DISPLAY_NAME_MAPPINGS[name].startswith("VDOT ")
    assert cls.CATEGORY.startswith("VDOT/") and cls.DESCRIPTION
    assert callable(getattr(cls, cls.FUNCTION))
    assert all(t in KNOWN_TYPES for t in cls.RETURN_TYPES)
    if cls.RETURN_TYPES:
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for input_name, (kind, *rest) in spec.get(section, {}).items():
            opts = rest[0] if rest else {}
            assert opts.get("tooltip"), f"{name}.{input_name} has no tooltip"
            if isinstance(kind, list):
                assert "default" not in opts or opts["default"] in kind
            else:
                assert kind in KNOWN_TYPES, f"{name}.{input_name}: unknown type {kind}"
            if kind in ("INT", "FLOAT") and "default" in opts:
                assert opts.get("min", -float("inf")) <= opts["default"] <= opts.get("max", float("inf"))
    # The function takes exactly the declared inputs.
    import inspect

    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    declared = set(spec.get("required", {})) | set(spec.get("optional", {}))
    assert declared == set(params) - {"self"}


def test_root_package_exports_only_the_mappings():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "__init__.py"
    spec = importlib.util.spec_from_file_location("comfyui_vdot_root", path, submodule_search_locations=[str(path.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_vdot_root"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["comfyui_vdot_root"]
    assert module.__all__ == ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
    assert set(module.NODE_CLASS_MAPPINGS) == set(NODE_CLASS_MAPPINGS)


@pytest.fixture()
def parts(comfy_root):
    (model,) = call("VDOTModelLoader", model_name=comfy.EMBEDDED, precision="bf16", offload="model")
    (vae,) = call("VDOTVAELoader", vae_name=comfy.EMBEDDED, precision="fp32")
    (te,) = call("VDOTTextEncoderLoader", text_encoder_name=comfy.EMBEDDED, precision="bf16")
    (embeds,) = call("VDOTTextEncode", text_encoder=te, positive="a red ball", negative="blurry")
    return model, vae, te, embeds


def sample(parts, vcu, **kw):
    model, vae, _, embeds = parts
    args = dict(model=model, vae=vae, embeds=embeds, vcu=vcu, seed=1, preset="vdot", steps=0, shift=0.0, cfg=1.0,
                denoise=1.0, control_scale=1.0, num_videos=1)
    args.update(kw)
    return call("VDOTSampler", **args)[0]


def test_t2v_graph_samples_and_saves_without_overwriting(parts, comfy_root):
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    frames = sample(parts, vcu)
    assert frames.shape == (F, H, W, 3)
    again = sample(parts, vcu)
    assert torch.equal(frames, again)  # same seed, same video
    out1 = call("VDOTSaveVideo", frames=frames, fps=16.0, filename_prefix="VDOT/test", format="mp4", crf=17)
    out2 = call("VDOTSaveVideo", frames=frames, fps=16.0, filename_prefix="VDOT/test", format="mp4", crf=17)
    names = [o["ui"]["images"][0]["filename"] for o in (out1, out2)]
    assert out1["ui"]["animated"] == [True] and out1["ui"]["images"][0]["type"] == "output" and out1["result"] == ()
    assert names == ["test_00001_.mp4", "test_00002_.mp4"]
    assert out1["ui"]["images"][0]["subfolder"] == "VDOT"
    video, fps = read_video(comfy_root / "output" / "VDOT" / names[0])
    assert video.shape == (F, H, W, 3) and fps == 16
    pngs = call("VDOTSaveVideo", frames=frames, fps=16.0, filename_prefix="frames", format="png-frames", crf=17)
    assert len(list((comfy_root / "output" / pngs["ui"]["images"][0]["filename"]).glob("*.png"))) == F


def test_sampler_ticks_progress_per_step_and_stops_on_interrupt(parts, comfy_root, monkeypatch):
    ticks = []

    class Bar:
        def __init__(self, total, desc):
            self.total, self.desc = total, desc

        def update(self, n):
            if self.desc == "VDOT Sampler":  # the step bar (the VAE chunk bars: test_preview.py)
                ticks.append(n)

        def update_absolute(self, value, total=None, preview=None):
            pass

    monkeypatch.setattr(comfy, "progress_bar", lambda total, desc="": Bar(total, desc))
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    sample(parts, vcu, steps=3)
    assert ticks == [1, 1, 1]

    # ComfyUI's interrupt: comfy.model_management.throw_exception_if_processing_interrupted raises.
    class Interrupted(Exception):
        pass

    calls = {"n": 0}

    def throw():
        calls["n"] += 1
        if len(ticks) == 2:  # checks also run between VAE chunks; interrupt once two steps have ticked
            raise Interrupted()

    mm = types.SimpleNamespace(throw_exception_if_processing_interrupted=throw, get_torch_device=lambda: torch.device("cpu"))
    fake = types.ModuleType("comfy")
    fake.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", fake)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    ticks.clear()
    with pytest.raises(Interrupted):
        sample(parts, vcu)
    assert ticks == [1, 1]  # two steps ran, the third was never started


def test_conditioning_to_embeds_samples_and_checks_width(parts, comfy_root):
    model, vae, te, embeds = parts
    tokens = embeds.positive[:, :7]  # ComfyUI hands over only the real tokens
    (converted,) = call("VDOTConditioningToEmbeds", positive=[[tokens, {"pooled_output": None}]])
    assert converted.positive.shape == embeds.positive.shape
    assert torch.equal(converted.positive, torch.cat([tokens, torch.zeros(1, 505, tokens.shape[-1])], 1))
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    assert sample(parts, vcu, embeds=converted).shape == (F, H, W, 3)
    (wrong,) = call("VDOTConditioningToEmbeds", positive=[[torch.zeros(1, 7, 4096), {}]])
    with pytest.raises(VDOTInputError, match="prompt_embeds: text embeddings of shape"):
        sample(parts, vcu, embeds=wrong)
    with pytest.raises(VDOTInputError, match="cfg 3.0 needs a negative prompt"):
        sample(parts, vcu, embeds=converted, cfg=3.0)


def test_sampler_guidance_interval_is_the_pipelines(parts, comfy_root):
    """cfg_start/cfg_end reach the sampler: the node's video is the pipeline's with the same interval, and
    an interval without a step is refused naming the socket."""
    from vdot_nodes.core.pipeline import VDOTPipeline

    model, vae, _, embeds = parts
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    frames = sample(parts, vcu, preset="teacher_euler", steps=4, cfg=3.0, cfg_start=0.0, cfg_end=0.3)
    pipe = VDOTPipeline(model.module, vae.module, device="cpu")
    from vdot_nodes.core.sampling import get_preset

    euler = get_preset("teacher_euler", steps=4)
    kw = dict(seed=1, preset=euler, cfg=3.0, prompt_embeds=embeds.positive, negative_embeds=embeds.negative)
    assert torch.allclose(frames, pipe.generate(vcu, cfg_end=0.3, **kw)[0], atol=1e-5)
    assert not torch.allclose(frames, pipe.generate(vcu, **kw)[0], atol=1e-3)
    with pytest.raises(VDOTInputError, match="cfg_start: the guidance interval 0.3..0.4 holds none of the 4 steps"):
        sample(parts, vcu, preset="teacher_euler", steps=4, cfg=3.0, cfg_start=0.3, cfg_end=0.4)


def test_every_vcu_node_feeds_the_sampler(parts, comfy_root):
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(F, H, W, 3, generator=gen)
    ref = torch.rand(1, 20, 30, 3, generator=gen)
    mask = torch.zeros(F, H, W)
    mask[:, 8:24, 8:40] = 1
    cases = {
        "VDOTVCUReference": dict(references=ref, width=W, height=H, num_frames=F),
        "VDOTVCUControl": dict(control=video, kind="depth"),
        "VDOTVCUOutpaint": dict(source=video, top=0, bottom=0, left=16, right=16, overlap=0),
        "VDOTVCUExtension": dict(source=video, keep_frames=2, mode="last", seed=0),
        "VDOTVCUInpaint": dict(source=video, threshold=0.5, mask=mask),
        "VDOTVCUFirstFrameControl": dict(control=video, first_frame=video[:1], kind="pose"),
        "VDOTVCUReferenceControl": dict(control=video, references=ref, kind="grey"),
        "VDOTVCUCustom": dict(frames=video, masks=mask, references=ref),
    }
    for name, kwargs in cases.items():
        (vcu,) = call(name, **kwargs)
        out = sample(parts, vcu, steps=1)
        expected_w = W + 32 if name == "VDOTVCUOutpaint" else W
        assert out.shape == (F, H, expected_w, 3), name
    (vcu,) = call("VDOTVCUCustom", frames=video, masks=mask, task="my edit")
    assert vcu.task == "my edit" and torch.equal(vcu.masks, mask) and vcu.references == []
    (vcu,) = call("VDOTVCUInpaint", source=video, threshold=0.5, box="8,8,24,24")
    assert vcu.masks[:, 8:24, 8:24].eq(1).all() and vcu.masks.sum() == F * 16 * 16


def test_vcu_node_errors_name_the_input(comfy_root):
    video = torch.rand(F, H, W, 3)
    with pytest.raises(VDOTInputError, match="box"):
        call("VDOTVCUInpaint", source=video, threshold=0.5, box="1,2,3")
    with pytest.raises(VDOTInputError, match="got both"):
        call("VDOTVCUInpaint", source=video, threshold=0.5, mask=torch.ones(F, H, W), box="0,0,8,8")
    with pytest.raises(VDOTInputError, match="4k\\+1"):
        call("VDOTVCUControl", control=torch.rand(6, H, W, 3), kind="depth")
    with pytest.raises(VDOTInputError, match="first_frame"):
        call("VDOTVCUFirstFrameControl", control=video, first_frame=video[:2], kind="depth")


def test_load_nodes_read_only_listed_inputs(comfy_root):
    examples = comfy.list_inputs(comfy.VIDEO_EXTENSIONS)
    assert "vdot_examples/ball.mp4" in examples
    frames, fps, count = call("VDOTLoadVideo", video="vdot_examples/ball.mp4", frame_load_cap=9,
                              skip_first_frames=2, select_every_nth=2)
    assert frames.shape == (9, 240, 416, 3) and count == 9 and fps == 8.0
    shutil.copy(comfy.EXAMPLES_DIR / "star_reference.png", comfy_root / "input" / "star.png")
    image, mask = call("VDOTLoadImage", image="star.png")
    assert image.shape == (1, 256, 256, 3) and mask.shape == (1, 256, 256) and mask.sum() == 0
    for bad in ("../secret.mp4", "/etc/passwd", "C:/x.mp4", "missing.mp4"):
        with pytest.raises(VDOTInputError, match="video"):
            call("VDOTLoadVideo", video=bad, frame_load_cap=0, skip_first_frames=0, select_every_nth=1)
    with pytest.raises(VDOTInputError, match="filename_prefix"):
        call("VDOTSaveVideo", frames=torch.rand(F, H, W, 3), fps=16.0, filename_prefix="../escape", format="mp4", crf=17)


def test_loaders_refuse_unlisted_and_pickled_files(comfy_root):
    (comfy_root / "models" / "diffusion_models" / "evil.ckpt").write_bytes(b"not listed")
    assert "evil.ckpt" not in comfy.list_models("diffusion_models")
    for name in ("evil.ckpt", "../x.safetensors", "nothing.safetensors"):
        with pytest.raises(VDOTInputError, match="model_name"):
            call("VDOTModelLoader", model_name=name, precision="bf16", offload="model")


def test_loader_reads_a_file_from_the_models_folder(comfy_root):
    from vdot_nodes.core.models import save_transformer
    from vdot_nodes.core.tiny import build_tiny_transformer

    save_transformer(build_tiny_transformer(seed=4), comfy_root / "models" / "diffusion_models" / "mine.safetensors")
    assert "mine.safetensors" in comfy.list_models("diffusion_models")
    (model,) = call("VDOTModelLoader", model_name="mine.safetensors", precision="fp32", offload="none")
    ref = build_tiny_transformer(seed=4)
    assert torch.equal(model.module.patch_embedding.weight, ref.patch_embedding.weight)
    assert model.offload is False


def test_fit_video_and_image_to_mask(comfy_root):
    video = torch.rand(12, 40, 60, 3)
    (fitted,) = call("VDOTFitVideo", images=video, width=32, height=32, num_frames=9, mode="crop")
    assert fitted.shape == (9, 32, 32, 3)
    (padded,) = call("VDOTFitVideo", images=video, width=64, height=64, num_frames=9, mode="pad")
    assert padded.shape == (9, 64, 64, 3) and padded[:, 0].eq(0).all()  # bars above a wide video
    with pytest.raises(VDOTInputError, match="has 12 frames but 13"):
        call("VDOTFitVideo", images=video, width=32, height=32, num_frames=13, mode="crop")
    images = torch.zeros(2, 4, 4, 3)
    images[:, :2] = 1.0
    (mask,) = call("VDOTImageToMask", images=images, channel="luminance", threshold=0.5)
    assert mask.shape == (2, 4, 4) and mask[:, :2].eq(1).all() and mask[:, 2:].eq(0).all()


def _defaults(name, **overrides):
    """Every widget of a node at its declared default (combos: the first entry), then ``overrides``."""
    spec = NODE_CLASS_MAPPINGS[name].INPUT_TYPES()["required"]
    kwargs = {}
    for key, (kind, *rest) in spec.items():
        opts = rest[0] if rest else {}
        if isinstance(kind, list):
            kwargs[key] = opts.get("default", kind[0])
        elif "default" in opts:
            kwargs[key] = opts["default"]
    kwargs.update(overrides)
    return kwargs


def test_preprocess_nodes_keep_shape(comfy_root):
    video = torch.rand(5, 32, 32, 3)
    for name, method in {"VDOTGrey": None, "VDOTScribble": "canny", "VDOTOpticalFlow": "dis"}.items():
        kwargs = _defaults(name, images=video, **({"method": method} if method else {}))
        (out,) = call(name, **kwargs)
        assert out.shape == video.shape, name


def test_adapter_refuses_unsafe_names_and_needs_a_root(comfy_root, monkeypatch):
    (comfy_root / "input" / "clip.mp4").write_bytes(b"x")
    assert comfy.input_path("clip.mp4") == comfy_root / "input" / "clip.mp4"
    assert comfy.input_path("vdot_examples/star_reference.png") == comfy.EXAMPLES_DIR / "star_reference.png"
    for bad in ("../x", "/etc/passwd", "sub/../../x.mp4", "~/x.mp4", "nothing.mp4"):
        with pytest.raises(VDOTInputError, match="file"):
            comfy.input_path(bad)
    for bad in ("/tmp/x", "../x", "a/../../x"):
        with pytest.raises(VDOTInputError, match="filename_prefix"):
            comfy.unique_output_path(bad, "mp4")
    # Safetensors only for models; ONNX only for annotators; unknown folders refused.
    for name in ("a.safetensors", "b.onnx", "c.pt"):
        (comfy_root / "models" / "diffusion_models" / name).write_bytes(b"x")
    assert comfy.list_models("diffusion_models") == [comfy.EMBEDDED, "a.safetensors"]
    (comfy_root / "models" / "vdot_annotators" / "depth.onnx").write_bytes(b"x")
    assert comfy.list_models("vdot_annotators") == ["depth.onnx"]
    assert comfy.model_path("vdot_annotators", "depth.onnx") == comfy_root / "models" / "vdot_annotators" / "depth.onnx"
    with pytest.raises(VDOTInputError, match="kind"):
        comfy.list_models("checkpoints")
    # Without ComfyUI and without a comfy_root, a folder is never invented.
    comfy.set_fallback_root(None)
    monkeypatch.delenv("VDOT_COMFY_ROOT", raising=False)
    with pytest.raises(VDOTInputError, match="VDOT_COMFY_ROOT"):
        comfy.output_dir()
    assert comfy.list_inputs(comfy.IMAGE_EXTENSIONS) == [
        comfy.EXAMPLES_PREFIX + p.name for p in sorted(comfy.EXAMPLES_DIR.glob("*.png"))]
    monkeypatch.setenv("VDOT_COMFY_ROOT", str(comfy_root))
    assert comfy.output_dir() == comfy_root / "output"


def test_load_nodes_is_changed_follows_the_file(comfy_root):
    import hashlib

    path = comfy_root / "input" / "a.png"
    shutil.copy(comfy.EXAMPLES_DIR / "star_reference.png", path)
    first = NODE_CLASS_MAPPINGS["VDOTLoadImage"].IS_CHANGED(image="a.png")
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    shutil.copy(comfy.EXAMPLES_DIR / "box_mask.png", path)
    assert NODE_CLASS_MAPPINGS["VDOTLoadImage"].IS_CHANGED(image="a.png") != first
    video_hash = NODE_CLASS_MAPPINGS["VDOTLoadVideo"].IS_CHANGED(
        video="vdot_examples/ball.mp4", frame_load_cap=0, skip_first_frames=0, select_every_nth=1)
    assert video_hash == hashlib.sha256((comfy.EXAMPLES_DIR / "ball.mp4").read_bytes()).hexdigest()


def test_text_encode_caches_per_encoder_and_text(parts, comfy_root):
    model, vae, te, embeds = parts
    (again,) = call("VDOTTextEncode", text_encoder=te, positive="a red ball", negative="blurry")
    assert again.positive is embeds.positive and again.negative is embeds.negative  # not re-encoded
    (other,) = call("VDOTTextEncode", text_encoder=te, positive="a blue cube", negative="blurry")
    assert other.positive.shape == embeds.positive.shape and not torch.equal(other.positive, embeds.positive)
    # A different encoder with the same text is encoded by that encoder, not served from the cache.
    from vdot_nodes.core.tiny import build_tiny_text_encoder
    from vdot_nodes.nodes.loaders import LoadedModel

    # (same vocabulary size as ``te``: the embedded toy encoder's tokenizer has more words than the tiny one)
    fresh = LoadedModel(build_tiny_text_encoder(seed=123, vocab_size=te.module.config.vocab_size).eval(), "fresh",
                        tokenizer=te.tokenizer)
    (mine,) = call("VDOTTextEncode", text_encoder=fresh, positive="a red ball", negative="blurry")
    assert not torch.equal(mine.positive, embeds.positive)


def test_diffusers_loader_reads_a_pipeline_folder(comfy_root):
    from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae

    folder = comfy_root / "models" / "diffusion_models" / "tiny-vace-diffusers"
    build_tiny_transformer(seed=7).save_pretrained(folder / "transformer")
    build_tiny_vae(seed=7).save_pretrained(folder / "vae")
    build_tiny_text_encoder(seed=7).save_pretrained(folder / "text_encoder")
    build_tiny_tokenizer().save_pretrained(folder / "tokenizer")
    assert NODE_CLASS_MAPPINGS["VDOTDiffusersLoader"].INPUT_TYPES()["required"]["folder_name"][0] == ["tiny-vace-diffusers"]
    model, vae, te = call("VDOTDiffusersLoader", folder_name="tiny-vace-diffusers", precision="fp32", offload="model")
    assert torch.equal(model.module.patch_embedding.weight, build_tiny_transformer(seed=7).patch_embedding.weight)
    (embeds,) = call("VDOTTextEncode", text_encoder=te, positive="a red ball", negative="")
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    assert sample((model, vae, te, embeds), vcu, steps=1).shape == (F, H, W, 3)
    with pytest.raises(VDOTInputError, match="folder_name"):
        call("VDOTDiffusersLoader", folder_name="../tiny-vace-diffusers", precision="fp32", offload="model")


def test_sampler_batches_videos_and_restyles_init_frames(parts, comfy_root):
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    two = sample(parts, vcu, steps=1, num_videos=2, seed=5)
    assert two.shape == (2 * F, H, W, 3) and not torch.equal(two[:F], two[F:])
    # Video i uses seed + i (equal up to batched-matmul rounding).
    assert torch.allclose(two[F:], sample(parts, vcu, steps=1, seed=6), atol=1e-4)
    init = torch.rand(F, H, W, 3, generator=torch.Generator().manual_seed(3))
    restyled = sample(parts, vcu, steps=1, seed=5, denoise=0.5, init_frames=init)
    assert restyled.shape == (F, H, W, 3) and not torch.allclose(restyled, two[:F], atol=1e-2)
    with pytest.raises(VDOTInputError, match="denoise"):
        sample(parts, vcu, steps=1, denoise=0.5)
    with pytest.raises(VDOTInputError, match="seed"):
        sample(parts, vcu, steps=1, seed=0xFFFFFFFFFFFFFFFF, num_videos=2)


def test_sigmas_node_gives_each_presets_sigmas_and_the_sampler_offers_every_preset():
    from vdot_nodes.core.sampling import SAMPLER_PRESETS, preset_schedule

    (sigmas,) = call("VDOTSigmas", preset="vdot", steps=0, shift=0.0, denoise=1.0)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    assert sigmas.tolist() == pytest.approx([0.99993742, 0.97951180, 0.94106567, 0.84192783, 0.0], abs=1e-6)
    (renoise,) = call("VDOTSigmas", preset="renoise", steps=2, shift=1.0, denoise=1.0)
    assert renoise.tolist() == [1.0, 0.5, 0.0]
    for name, preset in SAMPLER_PRESETS.items():
        (s,) = call("VDOTSigmas", preset=name, steps=0, shift=0.0, denoise=1.0)
        assert s.tolist() == pytest.approx(list(preset_schedule(preset).sigmas), abs=1e-7)
    with pytest.raises(VDOTInputError, match="fixed schedule"):
        call("VDOTSigmas", preset="rollout_official", steps=3, shift=0.0, denoise=1.0)
    spec = NODE_CLASS_MAPPINGS["VDOTSampler"].INPUT_TYPES()["required"]
    choices, opts = spec["preset"]
    assert choices == list(SAMPLER_PRESETS) and opts["default"] == "vdot"
    for name, preset in SAMPLER_PRESETS.items():  # one tooltip line per preset: which checkpoint it suits
        assert f"- {name}: {preset.description}" in opts["tooltip"]
    assert spec["steps"][1]["max"] >= 100 and spec["steps"][1]["default"] == 0


class ComfyFlowDenoiser:
    """ComfyUI's denoiser for a flow (CONST) model as KSAMPLER hands it to a sampler function: it feeds the
    network t = σ·1000, returns x − σ·v, and carries the raw noise and the latent image."""

    def __init__(self, velocity, noise, latent):
        self.velocity, self.noise, self.latent_image, self.sigmas_seen = velocity, noise, latent, []

    def __call__(self, x, sigma, **extra_args):
        self.sigmas_seen.append(float(sigma[0]))
        return x - sigma.view(-1, 1, 1, 1, 1) * self.velocity(x, sigma * 1000)


def test_flow_unipc_sampler_walks_the_official_trajectory_through_comfys_interface(monkeypatch):
    from vdot_nodes.core.sampling import SeededNoise, preset_sigmas, sample
    from vdot_nodes.nodes.sampler import flow_unipc_comfy

    def velocity(x, t):
        return 0.5 * x + (t / 1000).view(-1, 1, 1, 1, 1) + 0.1 * torch.sin(3 * x)

    shape = (16, 2, 4, 4)
    noise = SeededNoise([5]).draw(shape)
    sigmas = preset_sigmas("vdot")
    official = sample(velocity, SeededNoise([5]), shape, "vdot")
    model = ComfyFlowDenoiser(velocity, noise, torch.zeros_like(noise))
    steps = []
    scaled = sigmas[0] * noise  # KSAMPLER's noise_scaling for an empty latent
    out = flow_unipc_comfy(model, scaled, sigmas, extra_args={"seed": 1}, callback=lambda d: steps.append(d["i"]))
    assert torch.allclose(out, official, atol=1e-6, rtol=0)
    assert model.sigmas_seen == pytest.approx([0.999, 0.979, 0.941, 0.841])  # the truncated official t / 1000
    assert steps == [0, 1, 2, 3]
    as_comfy = flow_unipc_comfy(ComfyFlowDenoiser(velocity, noise, torch.zeros_like(noise)), scaled, sigmas,
                                truncate_timesteps=False)
    assert (as_comfy - official).abs().max() > 1e-4  # σ·1000 instead of the official t is a real difference
    with pytest.raises(VDOTInputError, match="sigmas"):
        flow_unipc_comfy(model, scaled, torch.tensor([1.0, 0.5, 0.0]))
    # the node hands ComfyUI a KSAMPLER around that function; without ComfyUI it says so
    with pytest.raises(VDOTInputError, match="needs ComfyUI"):
        call("VDOTFlowUniPC", timesteps="truncated")
    fake = types.ModuleType("comfy.samplers")
    fake.KSAMPLER = lambda fn: ("KSAMPLER", fn)
    parent = types.ModuleType("comfy")
    parent.samplers = fake
    monkeypatch.setitem(sys.modules, "comfy", parent)
    monkeypatch.setitem(sys.modules, "comfy.samplers", fake)
    (wrapped,) = call("VDOTFlowUniPC", timesteps="sigma")
    assert wrapped[0] == "KSAMPLER" and wrapped[1].keywords == {"truncate_timesteps": False}


@pytest.mark.parametrize("widget, value, needle", [
    ("num_videos", 10**9, "num_videos: is 1000000000, outside"), ("shift", float("nan"), "shift: is nan"),
    ("cfg", float("inf"), "cfg: is inf"), ("control_scale", float("nan"), "control_scale: is nan"),
    ("seed", -1, "seed"), ("seed", 2**64, "seed"), ("steps", 2.5, "steps: must be a whole number"),
    ("denoise", 0.0, "denoise"), ("shift", "5", "shift: must be a number"),
    ("steps", 101, "steps: is 101, outside"), ("preset", "fast", "unknown sampler preset 'fast'"),
    ("cfg_end", -0.5, r"cfg_end: -0.5 is not a number in \[0, 1\]"),
    ("cfg_start", 1.0, "cfg_end: 1 is not after cfg_start 1"),
])
def test_sampler_refuses_api_workflow_values_before_sampling(comfy_root, monkeypatch, widget, value, needle):
    """An API-format workflow bypasses the widgets' bounds; the node checks before it builds a pipeline."""
    from vdot_nodes.nodes import sampler

    def no_pipeline(*_a, **_k):
        raise AssertionError("sampling started before the bad widget was refused")

    monkeypatch.setattr(sampler, "VDOTPipeline", no_pipeline)
    (vcu,) = call("VDOTVCUText2Video", width=W, height=H, num_frames=F)
    args = dict(model=None, vae=None, embeds=None, vcu=vcu, seed=1, preset="vdot", steps=4, shift=5.0, cfg=1.0,
                denoise=1.0, control_scale=1.0, num_videos=1)
    args[widget] = value
    with pytest.raises(VDOTInputError, match=needle):
        call("VDOTSampler", **args)


def test_sampler_refuses_a_batch_too_large_to_hold(comfy_root, monkeypatch):
    from vdot_nodes.core.vcu import VCU
    from vdot_nodes.nodes import sampler

    monkeypatch.setattr(sampler, "VDOTPipeline", lambda *a, **k: pytest.fail("sampling started"))
    # A VCU as a custom node could hand over: 1025 frames at 1024x1024 (stride-0 views, no memory).
    big = VCU("t2v", torch.zeros(1, 1, 1, 3).expand(1025, 1024, 1024, 3), torch.ones(1, 1, 1).expand(1025, 1024, 1024))
    with pytest.raises(VDOTInputError, match="vcu \\(num_frames\\): 16 video\\(s\\) x 1025 frames .* GiB") as err:
        call("VDOTSampler", model=None, vae=None, embeds=None, vcu=big, seed=0, preset="vdot", steps=4, shift=5.0,
             cfg=1.0, denoise=1.0, control_scale=1.0, num_videos=16)
    assert "num_videos" in err.value.fix


def test_vcu_nodes_cap_the_size_before_allocating(comfy_root):
    with pytest.raises(VDOTInputError, match="num_frames: is 100001, outside"):
        call("VDOTVCUText2Video", width=W, height=H, num_frames=100001)
    with pytest.raises(VDOTInputError, match="width: is 100000, outside"):
        call("VDOTVCUText2Video", width=100000, height=H, num_frames=F)


@pytest.mark.parametrize("case, needle", [
    ("nan_frames", "frames: 1 of 5 frames contain NaN"), ("empty", "frames: is empty"),
    ("nan_fps", "fps: is nan"), ("nul_prefix", "filename_prefix"), ("bad_format", "format"),
])
def test_save_video_refuses_bad_input_and_writes_nothing(comfy_root, case, needle):
    frames = torch.rand(F, H, W, 3)
    args = dict(frames=frames, fps=16.0, filename_prefix="VDOT/test", format="mp4", crf=17)
    if case == "nan_frames":
        frames[3, 0, 0, 0] = float("nan")
    args.update({"empty": {"frames": frames[:0]}, "nan_fps": {"fps": float("nan")},
                 "nul_prefix": {"filename_prefix": "VDOT/a\x00b"}, "bad_format": {"format": "webm"}}.get(case, {}))
    for fmt in ("mp4", "png-frames") if case != "bad_format" else ("webm",):
        with pytest.raises(VDOTInputError, match=needle):
            call("VDOTSaveVideo", **{**args, "format": fmt})
    assert list((comfy_root / "output").iterdir()) == []  # not even the VDOT/ folder


def test_fit_video_only_passes_on_vace_ready_sizes(comfy_root):
    video = torch.rand(12, 40, 60, 3)
    for num_frames in (1, 5, 9):
        for size in (16, 32, 48):
            (out,) = call("VDOTFitVideo", images=video, width=size, height=size, num_frames=num_frames, mode="crop")
            assert out.shape == (num_frames, size, size, 3)
            assert (out.shape[0] - 1) % 4 == 0 and out.shape[1] % 16 == 0 and out.shape[2] % 16 == 0
    with pytest.raises(VDOTInputError, match="4k\\+1"):
        call("VDOTFitVideo", images=video, width=32, height=32, num_frames=10, mode="crop")
    with pytest.raises(VDOTInputError, match="multiple of 16"):
        call("VDOTFitVideo", images=video, width=30, height=32, num_frames=9, mode="crop")
    with pytest.raises(VDOTInputError, match="width: is 100000"):
        call("VDOTFitVideo", images=video, width=100000, height=32, num_frames=9, mode="stretch")


def test_inpaint_mask_of_another_size_is_refused(comfy_root):
    with pytest.raises(VDOTInputError, match="mask: is 40x40 \\(WxH\\) but the video is"):
        call("VDOTVCUInpaint", source=torch.rand(F, H, W, 3), threshold=0.5, mask=torch.ones(F, 40, 40), box="")


def test_symlinks_out_of_comfyui_folders_are_refused(comfy_root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(comfy.EXAMPLES_DIR / "ball.mp4", outside / "secret.mp4")
    (comfy_root / "input" / "link.mp4").symlink_to(outside / "secret.mp4")
    (comfy_root / "input" / "linked_dir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(VDOTInputError, match="leads \\(through a symlink\\) to .*outside ComfyUI's input folder"):
        call("VDOTLoadVideo", video="link.mp4", frame_load_cap=1, skip_first_frames=0, select_every_nth=1)
    with pytest.raises(VDOTInputError, match="ComfyUI's input folder"):  # not listed, or listed and refused
        call("VDOTLoadVideo", video="linked_dir/secret.mp4", frame_load_cap=1, skip_first_frames=0, select_every_nth=1)
    with pytest.raises(VDOTInputError, match="outside ComfyUI's input folder"):
        comfy._confined(comfy_root / "input" / "linked_dir" / "secret.mp4", comfy.input_dir(), "video", "input")
    # A symlink that stays inside input/ is fine.
    shutil.copy(comfy.EXAMPLES_DIR / "ball.mp4", comfy_root / "input" / "real.mp4")
    (comfy_root / "input" / "alias.mp4").symlink_to(comfy_root / "input" / "real.mp4")
    assert call("VDOTLoadVideo", video="alias.mp4", frame_load_cap=1, skip_first_frames=0,
                select_every_nth=1)[2] == 1
    # A symlinked folder under output/ receives nothing, not even a sub-folder.
    (comfy_root / "output" / "VDOT").symlink_to(outside, target_is_directory=True)
    for prefix in ("VDOT/video", "VDOT/deeper/video"):
        with pytest.raises(VDOTInputError, match="outside ComfyUI's output folder"):
            call("VDOTSaveVideo", frames=torch.rand(F, H, W, 3), fps=16.0, filename_prefix=prefix, format="mp4",
                 crf=17)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.mp4"]


def test_load_video_refuses_api_values_outside_its_widgets(comfy_root):
    for widget, value in (("select_every_nth", 0), ("skip_first_frames", -1), ("frame_load_cap", 10**9)):
        args = dict(video="vdot_examples/ball.mp4", frame_load_cap=1, skip_first_frames=0, select_every_nth=1)
        with pytest.raises(VDOTInputError, match=f"{widget}: is"):
            call("VDOTLoadVideo", **{**args, widget: value})
