"""ComfyUI's own MODEL / VAE / CONDITIONING in our sampler path, and our VCU in ComfyUI's sampler path.

No ComfyUI here, so the stand-ins below follow the interfaces of ComfyUI a125cd84 that the adapters use
(``comfy/model_patcher.py`` ModelPatcher, ``comfy/model_base.py`` BaseModel.apply_model / WAN21_Vace.extra_conds,
``comfy/ldm/wan/model.py`` VaceWanModel, ``comfy/sd.py`` VAE, ``comfy/latent_formats.py`` Wan21) and compute with
OUR tiny transformer and VAE. The checks: the same weights give the same video through either path.
"""

from types import SimpleNamespace

import pytest
import torch

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.sampling import preset_sigmas
from vdot_nodes.core.tiny import build_tiny_transformer, build_tiny_vae
from vdot_nodes.core.vcu import VCU, build_r2v_vcu, build_t2v_vcu
from vdot_nodes.nodes import NODE_CLASS_MAPPINGS, comfy
from vdot_nodes.nodes.loaders import LoadedModel
from vdot_nodes.nodes.sampler import flow_unipc_comfy
from vdot_nodes.nodes.text import Embeds

F, H, W = 5, 32, 48
pytestmark = pytest.mark.usefixtures("one_thread")


def call(name, **kwargs):
    cls = NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)(**kwargs)


# ------------------------------------------------------------------ stand-ins with ComfyUI's interfaces
class ComfyVaceWan(torch.nn.Module):
    """``VaceWanModel``'s attributes and forward signature; the numbers come from our diffusers transformer."""

    def __init__(self, transformer, with_vace=True):
        super().__init__()
        cfg = transformer.config
        self.inner = transformer
        self.num_layers, self.in_dim, self.out_dim, self.text_dim = cfg.num_layers, cfg.in_channels, cfg.out_channels, cfg.text_dim
        self.vace_layers, self.vace_in_dim = (len(cfg.vace_layers), cfg.vace_in_channels) if with_vace else (None, None)
        self.vace_patch_embedding = transformer.vace_patch_embedding if with_vace else None
        self.calls = 0

    def forward(self, x, timestep, context, vace_context, vace_strength, transformer_options={}, **kwargs):
        self.calls += 1
        assert vace_context.ndim == 6 and vace_context.shape[1] == len(vace_strength) == 1  # [B, contexts, 96, f, h, w]
        assert context.shape[1] == 512 and timestep.shape == (x.shape[0],)
        scale = torch.full((self.vace_layers,), float(vace_strength[0]))
        return self.inner(hidden_states=x, timestep=timestep, encoder_hidden_states=context,
                          control_hidden_states=vace_context[:, 0], control_hidden_states_scale=scale, return_dict=False)[0]


class Wan21Format:
    """``comfy.latent_formats.Wan21`` (its mean/std are the Wan VAE's, which the tiny VAE's config also holds)."""

    latent_channels, scale_factor = 16, 1.0

    def __init__(self, vae):
        self.latents_mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
        self.latents_std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)

    def process_in(self, latent):
        return (latent - self.latents_mean) * self.scale_factor / self.latents_std

    def process_out(self, latent):
        return latent * self.latents_std / self.scale_factor + self.latents_mean


class FlowSampling:
    """``ModelSamplingDiscreteFlow`` with multiplier 1000 and the CONST (flow) prediction."""

    def timestep(self, sigma):
        return sigma * 1000

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * sigma.view(sigma.shape[:1] + (1,) * (model_output.ndim - 1))


class ComfyBaseModel:
    """``WAN21_Vace``: ``apply_model`` as ``BaseModel._apply_model`` (CONST input, t = σ·1000, x − σ·out) and
    ``extra_conds`` as ``WAN21_Vace.extra_conds`` for the vace entries."""

    model_type = SimpleNamespace(name="FLOW")

    def __init__(self, net, latent_format):
        self.diffusion_model, self.latent_format, self.model_sampling = net, latent_format, FlowSampling()

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        out = self.diffusion_model(x, self.model_sampling.timestep(t).float(), context=c_crossattn, control=control,
                                   transformer_options=transformer_options, **kwargs).float()
        return self.model_sampling.calculate_denoised(t, out, x)

    def extra_conds(self, vace_frames, vace_mask, vace_strength):
        out = []
        for frames, mask in zip(vace_frames, vace_mask):
            vf = frames.clone()
            for i in range(0, vf.shape[1], 16):
                vf[:, i:i + 16] = self.latent_format.process_in(vf[:, i:i + 16])
            out.append(torch.cat([vf, mask], dim=1))
        return {"vace_context": torch.stack(out, dim=1), "vace_strength": vace_strength}


class ComfyModelPatcher:
    """The ``ModelPatcher`` methods the adapter uses."""

    def __init__(self, model):
        self.model, self.model_options = model, {"transformer_options": {}}

    def get_model_object(self, name):
        return getattr(self.model, name)

    def memory_required(self, input_shape):
        return 0


class ComfyVAE:
    """``comfy.sd.VAE`` for a video VAE: IMAGE [F, H, W, 3] in 0..1 ↔ raw latents, computed by our diffusers VAE."""

    latent_channels = 16

    def __init__(self, vae):
        self.inner = vae

    def spacial_compression_encode(self):
        return 8

    def temporal_compression_decode(self):
        return 4

    def encode(self, pixel_samples):
        video = pixel_samples.movedim(-1, 0).unsqueeze(0) * 2 - 1
        return self.inner.encode(video).latent_dist.mode().float()

    def decode(self, samples):
        return torch.clamp((self.inner.decode(samples).sample.float() + 1) / 2, 0, 1).movedim(1, -1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    with torch.no_grad():
        transformer, vae = build_tiny_transformer(seed=3).eval(), build_tiny_vae(seed=4).eval()
    fmt = Wan21Format(vae)
    patcher = ComfyModelPatcher(ComfyBaseModel(ComfyVaceWan(transformer), fmt))
    return SimpleNamespace(transformer=transformer, vae=vae, patcher=patcher, comfy_vae=ComfyVAE(vae), fmt=fmt)


def conditioning(tensor):
    return [[tensor, {"pooled_output": None}]]


def embeds_of(seed):
    text = torch.zeros(1, 512, 32)
    text[:, :7] = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(seed))
    return text


def vcus():
    refs = [torch.rand(H, W, 3, generator=torch.Generator().manual_seed(5))]
    r2v = build_r2v_vcu(refs, F, H, W)
    frames = torch.rand(F, H, W, 3, generator=torch.Generator().manual_seed(6))
    soft = torch.rand(F, H, W, generator=torch.Generator().manual_seed(7))
    inpaint = VCU("inpaint", frames * (soft <= 0.5).unsqueeze(-1) + 0.5 * (soft > 0.5).unsqueeze(-1),
                  (soft > 0.5).float(), soft_masks=soft)
    return {"t2v": build_t2v_vcu(F, H, W), "r2v": r2v, "inpaint": inpaint}


def native_args(tiny, vcu, **kw):
    args = dict(model=tiny.patcher, vae=tiny.comfy_vae, positive=conditioning(embeds_of(1)), vcu=vcu, seed=7,
                preset="vdot", steps=0, shift=0.0, cfg=1.0, denoise=1.0, control_scale=1.0, num_videos=1)
    args.update(kw)
    return args


def ours(tiny, vcu, **kw):
    args = native_args(tiny, vcu, **kw)
    negative = args.pop("negative", None)
    args.pop("positive"), args.pop("model"), args.pop("vae")
    embeds = Embeds(embeds_of(1), None if negative is None else negative[0][0])
    return call("VDOTSampler", model=LoadedModel(tiny.transformer, "tiny", offload=False), vae=LoadedModel(tiny.vae, "tiny"),
                embeds=embeds, **args)[0]


# ------------------------------------------------------------------ (a) native MODEL / VAE / CONDITIONING
@pytest.mark.parametrize("task,preset,extra", [
    ("r2v", "vdot", {}),
    ("inpaint", "renoise", {"cfg": 2.0, "negative": conditioning(embeds_of(2)), "control_scale": 0.7}),
    ("t2v", "teacher_euler", {"steps": 3, "num_videos": 2}),
    ("t2v", "vdot", {"denoise": 0.6, "init_frames": torch.rand(F, H, W, 3, generator=torch.Generator().manual_seed(8))}),
])
def test_native_sampler_gives_the_vdot_samplers_video_on_the_same_weights(tiny, task, preset, extra):
    vcu = vcus()[task]
    native = call("VDOTNativeSampler", **native_args(tiny, vcu, preset=preset, **extra))[0]
    mine = ours(tiny, vcu, preset=preset, **extra)
    assert native.shape == mine.shape == (extra.get("num_videos", 1) * F, H, W, 3)
    # σ = t/1000 → t = σ·1000 and v = (x − x̂₀)/σ round in float32; nothing else differs.
    torch.testing.assert_close(native, mine, atol=2e-4, rtol=0)
    if task == "r2v":  # the comparison above can fail: another seed is far outside its tolerance
        other_seed = call("VDOTNativeSampler", **native_args(tiny, vcu, preset=preset, **{**extra, "seed": 8}))[0]
        assert (other_seed - native).abs().max() > 1e-3


def test_native_sampler_loads_the_model_with_its_patches_before_sampling(tiny, monkeypatch):
    """ComfyUI's LoRA nodes only add patches; ``load_models_gpu`` applies them. The sampler must load before the
    first model call, asking room for the whole batch; the patched weights are then what samples."""
    vcu, net = vcus()["r2v"], tiny.patcher.model.diffusion_model
    weight = tiny.transformer.blocks[0].attn1.to_q.weight
    delta = 0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(9))
    seen, start = [], net.calls

    def model_loader(patcher, shape):
        def load():
            seen.append((list(shape), net.calls))
            with torch.no_grad():
                weight.add_(delta)  # what patch_model does for a LoRA patch (W + s·up@down)
        return load

    monkeypatch.setattr(comfy, "model_loader", model_loader)
    try:
        native = call("VDOTNativeSampler", **native_args(tiny, vcu, num_videos=2))[0]
    finally:
        with torch.no_grad():
            loaded = len(seen)
            weight.sub_(loaded * delta)
    assert seen == [([2, 16, 1 + 2, H // 8, W // 8], start)]  # once, before any call; 1 reference + 2 latent frames
    with torch.no_grad():
        weight.add_(delta)
    try:
        merged = ours(tiny, vcu, num_videos=2)
    finally:
        with torch.no_grad():
            weight.sub_(delta)
    torch.testing.assert_close(native, merged, atol=2e-4, rtol=0)
    assert (native - ours(tiny, vcu, num_videos=2)).abs().max() > 1e-3  # the patch mattered


def test_native_inputs_that_do_not_fit_are_refused_before_any_model_call(tiny):
    vcu, net = vcus()["t2v"], tiny.patcher.model.diffusion_model
    before = net.calls
    t2v_only = ComfyModelPatcher(ComfyBaseModel(ComfyVaceWan(tiny.transformer, with_vace=False), tiny.fmt))
    cases = [
        (dict(model=t2v_only), "model", "without VACE blocks"),
        (dict(model=LoadedModel(tiny.transformer, "tiny")), "model", "not a ComfyUI MODEL"),
        (dict(vae=LoadedModel(tiny.vae, "tiny")), "vae", "not a ComfyUI VAE"),
        (dict(positive="a cat"), "positive", "CONDITIONING"),
        (dict(cfg=3.0), "embeds", "needs a negative prompt"),
        (dict(preset="fast"), "preset", "unknown sampler preset"),
        (dict(num_videos=0), "num_videos", "outside"),
        (dict(positive=conditioning(torch.zeros(1, 512, 4096))), "prompt_embeds", "do not fit this model"),
    ]
    wide_vae = ComfyVAE(tiny.vae)
    wide_vae.latent_channels = 48  # a Wan 2.2 VAE with the Wan 2.1 model
    cases.append((dict(vae=wide_vae), "vae", "48-channel latents"))
    for change, input_name, words in cases:
        with pytest.raises(VDOTInputError) as err:
            call("VDOTNativeSampler", **native_args(tiny, vcu, **change))
        assert err.value.input_name == input_name and words in str(err.value), (change, str(err.value))
    assert net.calls == before


# ------------------------------------------------------------------ (b) VCU → ComfyUI's sampler path
def test_vcu_to_wan_vace_is_what_wan21_vace_turns_into_the_pipelines_context(tiny, monkeypatch):
    monkeypatch.setattr(comfy, "wan_latent_format", lambda: tiny.fmt)
    vcu = vcus()["r2v"]
    positive = [[embeds_of(1), {"vace_frames": ["earlier"], "vace_mask": ["earlier"], "vace_strength": [0.3]}]]
    pos, neg, latent, trim = call("VDOTVCUToWanVace", positive=positive, negative=conditioning(embeds_of(2)),
                                  vae=tiny.comfy_vae, vcu=vcu, batch_size=2, strength=0.8)
    assert positive[0][1]["vace_frames"] == ["earlier"]  # the input conditioning is not changed
    assert pos[0][1]["vace_frames"][0] == "earlier" and pos[0][1]["vace_strength"] == [0.3, 0.8]
    assert neg[0][1]["vace_strength"] == [0.8] and torch.equal(neg[0][0], embeds_of(2))
    assert trim == 1 and latent["samples"].shape == (2, 16, 1 + 2, H // 8, W // 8) and not latent["samples"].any()
    # WAN21_Vace.extra_conds normalises the frames and appends the mask: that is our pipeline's VACE context.
    conds = tiny.patcher.model.extra_conds(neg[0][1]["vace_frames"], neg[0][1]["vace_mask"], neg[0][1]["vace_strength"])
    expected = VDOTPipeline(None, tiny.vae, device="cpu", offload="none").encode_vcu(vcu).control
    torch.testing.assert_close(conds["vace_context"][:, 0], expected, atol=1e-5, rtol=1e-5)
    assert conds["vace_context"].shape == (1, 1, 96, 3, H // 8, W // 8)


def test_vcu_to_wan_vace_with_vdot_sigmas_and_flow_unipc_walks_the_vdot_samplers_path(tiny, monkeypatch):
    """(b) end to end without ComfyUI's guider: its denoiser at cfg 1 is apply_model with the extra conds, and
    SamplerCustomAdvanced hands the sampler σ₀·noise with the raw noise on ``model.noise``."""
    monkeypatch.setattr(comfy, "wan_latent_format", lambda: tiny.fmt)
    vcu = vcus()["inpaint"]
    pos, _, latent, trim = call("VDOTVCUToWanVace", positive=conditioning(embeds_of(1)), negative=conditioning(embeds_of(2)),
                                vae=tiny.comfy_vae, vcu=vcu, batch_size=1, strength=1.0)
    model = tiny.patcher.model
    extra = model.extra_conds(pos[0][1]["vace_frames"], pos[0][1]["vace_mask"], pos[0][1]["vace_strength"])
    (sigmas,) = call("VDOTSigmas", preset="vdot", steps=0, shift=0.0, denoise=1.0)
    torch.testing.assert_close(sigmas, preset_sigmas("vdot"))
    from vdot_nodes.core.sampling import SeededNoise

    noise = SeededNoise([7]).draw(latent["samples"].shape[1:])

    class Denoiser:  # comfy.samplers.KSamplerX0Inpaint at cfg 1, as KSAMPLER.sample sets it up
        def __init__(self):
            self.noise, self.latent_image = noise, latent["samples"]

        def __call__(self, x, sigma, **kwargs):
            return model.apply_model(x, sigma, c_crossattn=pos[0][0], **extra)

    with torch.no_grad():
        native = flow_unipc_comfy(Denoiser(), noise * sigmas[0], sigmas)[:, :, trim:]
        pipe = VDOTPipeline(tiny.transformer, tiny.vae, device="cpu", offload="none")
        mine = pipe.generate(vcu, seed=7, preset="vdot", prompt_embeds=embeds_of(1), return_latents=True)
    torch.testing.assert_close(native, mine, atol=2e-4, rtol=0)
