"""VCU → VACE conditioning → sampling → frames, on tiny Wan-VACE components.

The conditioning and the teacher path are checked against diffusers' own ``WanVACEPipeline`` run on
the same tiny components: the reference implementation of VACE conditioning.
"""

import pytest
import torch

from vdot_nodes.core.errors import VDOTCancelled
from vdot_nodes.core.pipeline import VDOTPipeline
from vdot_nodes.core.tiny import build_tiny_text_encoder, build_tiny_tokenizer, build_tiny_transformer, build_tiny_vae
from vdot_nodes.core.vcu import VCU

F, H, W = 9, 32, 48


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline


def masked_vcu(with_reference=False):
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(F, H, W, 3, generator=gen)
    masks = torch.zeros(F, H, W)
    masks[:, :, 16:] = 1.0  # generate the right part, keep the left
    masks[:2] = 0.0  # keep the first two frames whole
    refs = []
    if with_reference:
        ref = torch.ones(H, W, 3)
        ref[8:24, 12:36] = torch.rand(16, 24, 3, generator=gen)
        refs = [ref]
    return VCU("inpaint", frames, masks, refs, prompt="a red cat walks", negative_prompt="blurry")


class CallCounter:
    def __init__(self, module):
        self.count = 0
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, *args):
        self.count += 1


def test_generate_runs_four_transformer_calls_and_returns_frames(pipe):
    counter = CallCounter(pipe.transformer)
    try:
        video = pipe.generate(masked_vcu(), seed=3)
    finally:
        counter.handle.remove()
    assert counter.count == 4
    assert video.shape == (1, F, H, W, 3) and video.dtype == torch.float32
    # The frames are the sampled latents decoded the reference way (diffusers' WanVACEPipeline): undo
    # the latent normalisation, VAE-decode, map [-1, 1] to 0..1 channels-last.
    latents = pipe.generate(masked_vcu(), seed=3, return_latents=True)
    cfg = pipe.vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        decoded = pipe.vae.decode(latents * std + mean).sample
    reference = ((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)
    assert torch.allclose(video, reference, atol=1e-6, rtol=0)
    assert video.std() > 0.01  # not a flat frame that any decode would match


def test_same_seed_same_video_and_seeds_differ(pipe):
    vcu = masked_vcu()
    a = pipe.generate(vcu, seed=5, return_latents=True)
    b = pipe.generate(vcu, seed=5, return_latents=True)
    c = pipe.generate(vcu, seed=6, return_latents=True)
    two = pipe.generate(vcu, seed=5, num_videos=2, return_latents=True)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.allclose(two[1:], c, atol=1e-5)


def test_references_are_prepended_then_stripped(pipe):
    vcu = masked_vcu(with_reference=True)
    encoded = pipe.encode_vcu(vcu)
    latent_frames = (F - 1) // 4 + 1
    assert encoded.num_reference_frames == 1
    assert encoded.control.shape == (1, 96, 1 + latent_frames, H // 8, W // 8)
    # Reference frame: zero "reactive" half and zero mask.
    assert torch.count_nonzero(encoded.control[0, 16:32, 0]) == 0
    assert torch.count_nonzero(encoded.control[0, 32:, 0]) == 0
    latents = pipe.generate(vcu, seed=0, return_latents=True)
    assert latents.shape == (1, 16, latent_frames, H // 8, W // 8)


def test_mask_channels_are_the_pixel_unshuffled_mask(pipe):
    vcu = masked_vcu()
    control = pipe.encode_vcu(vcu).control[0]
    mask64 = control[32:]  # [64, f, h, w]
    # VACE resamples the mask in time with nearest-exact: 9 pixel frames -> 3 latent frames picks
    # pixel frames 1, 4, 7. Frame 1 is kept whole, so latent frame 0 is all zeros.
    assert torch.count_nonzero(mask64[:, 0]) == 0
    # Pixel column block 16..47 is generated: latent columns 2..5 are all ones, 0..1 zeros.
    assert torch.all(mask64[:, 1:, :, 2:] == 1) and torch.all(mask64[:, 1:, :, :2] == 0)


def test_conditioning_and_teacher_match_diffusers_wan_vace_pipeline(pipe):
    """Our encode_vcu + UniPC/CFG teacher against diffusers' WanVACEPipeline on the same components."""
    from diffusers import UniPCMultistepScheduler, WanVACEPipeline

    import numpy as np

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    # Wan's own grid (linspace(0.999, 0)): diffusers >= 0.42 defaults to another one (VDOT_REFERENCE §2.4).
    set_timesteps = scheduler.set_timesteps
    scheduler.set_timesteps = lambda steps, device=None, **kw: set_timesteps(
        sigmas=np.linspace(0.999, 0, steps + 1)[:-1], device=device)
    ref_pipe = WanVACEPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, scheduler, transformer=pipe.transformer)
    vcu = masked_vcu(with_reference=True)

    # Conditioning latents (video part + reference) and masks, the reference way.
    video = vcu.frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
    mask = vcu.masks[None, None].expand(1, 3, -1, -1, -1)
    ref = vcu.references[0].permute(2, 0, 1) * 2 - 1
    ref_latents = ref_pipe.prepare_video_latents(video, mask, [[ref]], device="cpu")
    ref_masks = ref_pipe.prepare_masks(mask, [[ref]])
    ours = pipe.encode_vcu(vcu).control
    assert torch.allclose(ours[:, :32], ref_latents.float(), atol=1e-5)
    assert torch.equal(ours[:, 32:], ref_masks.float())

    # Whole teacher run through diffusers' __call__ (PIL inputs, so quantise ours to uint8 first):
    # 6 UniPC steps, CFG 3, the same initial noise.
    from PIL import Image

    def to_pil(image):
        return Image.fromarray((image.clamp(0, 1) * 255).round().byte().numpy())

    q = lambda x: (x.clamp(0, 1) * 255).round() / 255  # noqa: E731
    vcu = VCU(vcu.task, q(vcu.frames), vcu.masks, [q(vcu.references[0])], vcu.prompt, vcu.negative_prompt)
    steps, cfg = 6, 3.0
    from vdot_nodes.core.sampling import get_preset

    ours_latents = pipe.generate(vcu, seed=4, preset=get_preset("teacher_unipc", steps=steps, shift=5.0), cfg=cfg,
                                 return_latents=True)

    from vdot_nodes.core.sampling import SeededNoise

    noise = SeededNoise([4]).draw(pipe.encode_vcu(vcu).latent_shape)
    theirs = ref_pipe(
        prompt_embeds=pipe.encode_prompt([vcu.prompt]),
        negative_prompt_embeds=pipe.encode_prompt([vcu.negative_prompt]),
        video=[to_pil(f) for f in vcu.frames],
        mask=[to_pil(m[..., None].expand(-1, -1, 3)) for m in vcu.masks],
        reference_images=[to_pil(vcu.references[0])],
        height=H, width=W, num_frames=F, num_inference_steps=steps, guidance_scale=cfg,
        latents=noise, output_type="latent", return_dict=False,
    )[0][:, :, 1:]  # diffusers strips the reference frame only when it decodes
    assert theirs.shape == ours_latents.shape
    assert torch.allclose(ours_latents, theirs.float(), atol=1e-4)


def test_teacher_with_cfg_costs_two_calls_per_step(pipe):
    counter = CallCounter(pipe.transformer)
    try:
        from vdot_nodes.core.sampling import get_preset

        pipe.generate(masked_vcu(), preset=get_preset("teacher_euler", steps=5), cfg=4.0, return_latents=True)
    finally:
        counter.handle.remove()
    assert counter.count == 10


def test_guidance_interval_guides_only_its_steps(pipe):
    """cfg_end 0.5 on 5 Euler steps (percents 0, .2, .4, .6, .8) guides the first three: 5 + 3 calls; the
    video differs from both full guidance and none; an interval without a step is refused before any call."""
    from vdot_nodes.core.errors import VDOTInputError
    from vdot_nodes.core.sampling import get_preset

    euler = get_preset("teacher_euler", steps=5)
    counter = CallCounter(pipe.transformer)
    try:
        half = pipe.generate(masked_vcu(), preset=euler, cfg=4.0, cfg_end=0.5, return_latents=True)
        assert counter.count == 8
        with pytest.raises(VDOTInputError, match="holds none of the 5 steps"):
            pipe.generate(masked_vcu(), preset=euler, cfg=4.0, cfg_start=0.85, return_latents=True)
        assert counter.count == 8
    finally:
        counter.handle.remove()
    full = pipe.generate(masked_vcu(), preset=euler, cfg=4.0, return_latents=True)
    off = pipe.generate(masked_vcu(), preset=euler, cfg=1.0, return_latents=True)
    everywhere = pipe.generate(masked_vcu(), preset=euler, cfg=4.0, cfg_start=0.0, cfg_end=1.0, return_latents=True)
    assert torch.equal(everywhere, full)
    assert (half - full).abs().max() > 1e-4 and (half - off).abs().max() > 1e-4


def test_interrupt_between_steps(pipe):
    calls = []
    with pytest.raises(VDOTCancelled):
        pipe.generate(masked_vcu(), progress=lambda i, n: calls.append(i), cancel=lambda: len(calls) == 1)
    assert calls == [1]


def test_vae_compression_comes_from_the_vae_config():
    """A VAE with 4× spatial compression (the toy VAE's) gives 4×4-unshuffled masks (16 channels), and
    a transformer built for Wan's 8× VAE is refused with an error naming the VAE."""
    from vdot_nodes.core.errors import VDOTInputError

    vae4 = build_tiny_vae(seed=2, dim_mult=[1, 2, 4], temperal_downsample=[True, True], scale_factor_spatial=4)
    with pytest.raises(VDOTInputError, match=r"vace_in_channels=96.*4× spatial.*gives 48"):
        VDOTPipeline(build_tiny_transformer(seed=1), vae4, device="cpu")
    pipe4 = VDOTPipeline(build_tiny_transformer(seed=1, patch_size=(1, 4, 4), vace_in_channels=48), vae4,
                         build_tiny_text_encoder(seed=3), build_tiny_tokenizer(), device="cpu")
    vcu = masked_vcu()
    encoded = pipe4.encode_vcu(vcu)
    assert encoded.latent_shape == (16, 3, H // 4, W // 4) == pipe4.latent_shape(F, H, W)
    mask = encoded.control[0, 32:]  # [16, f, h, w]: channel i·4 + j holds pixel (i, j) of each 4×4 block
    assert mask.shape == (16, 3, H // 4, W // 4)
    assert torch.equal(mask[:, -1], vcu.masks[-1].view(H // 4, 4, W // 4, 4).permute(1, 3, 0, 2).flatten(0, 1))
    video = pipe4.generate(vcu, seed=0)
    assert video.shape == (1, F, H, W, 3) and torch.isfinite(video).all()


def test_generate_is_the_steps_in_order(pipe):
    """The composed generate equals the steps called one by one: text step, VACE-context step (on the VAE
    step), velocity step, sampler, VAE decode — bit for bit, with cfg and video-to-video."""
    from vdot_nodes.core.sampling import SeededNoise, cfg_velocity, get_preset, sample
    from vdot_nodes.core.text_encoding import PromptEncoder
    from vdot_nodes.core.vace_context import encode_vcu
    from vdot_nodes.core.vae_codec import VAECodec
    from vdot_nodes.core.velocity import transformer_velocity

    vcu, preset = masked_vcu(with_reference=True), get_preset("teacher_euler", steps=2)
    text = PromptEncoder(pipe.text_encoder, pipe.tokenizer, device="cpu")
    codec = VAECodec(pipe.vae, device="cpu")
    positive, negative = text.encode([vcu.prompt]), text.encode([vcu.negative_prompt])
    encoded = encode_vcu(codec, vcu)
    init = codec.encode(vcu.frames)
    init = torch.cat([torch.zeros_like(init[:, :, :1]), init], dim=2)  # the reference frame's slot
    velocity = cfg_velocity(transformer_velocity(pipe.transformer, positive, encoded.control, "cpu", 0.8),
                            transformer_velocity(pipe.transformer, negative, encoded.control, "cpu", 0.8), 3.0)
    with torch.no_grad():
        latents = sample(velocity, SeededNoise([7, 8]), encoded.latent_shape, preset, init_latents=init, denoise=0.7)
    by_steps = codec.decode(latents[:, :, 1:].float().cpu())
    composed = pipe.generate(vcu, seed=7, num_videos=2, preset=preset, cfg=3.0, control_scale=0.8, denoise=0.7,
                             init_frames=vcu.frames)
    assert by_steps.shape == (2, F, H, W, 3) and encoded.num_reference_frames == 1
    assert torch.equal(composed, by_steps)
