"""The VDOT Sampler node (VCU + prompt → video, 4 transformer calls by default) and VDOT Sigmas (a preset's
σ as ComfyUI ``SIGMAS``, for ComfyUI's own SamplerCustomAdvanced)."""

from __future__ import annotations

import functools

import torch

from ..core.errors import VDOTInputError, inputs_named
from ..core.pipeline import VDOTPipeline
from ..core.sampling import (
    DEFAULT_PRESET,
    MAX_STEPS,
    SAMPLER_PRESETS,
    check_cfg_interval,
    get_preset,
    preset_sigmas,
    run_schedule,
    sigmas_schedule,
)
from ..core.validate import MAX_NUM_VIDEOS, MAX_SEED, validate_generate
from . import comfy
from .lora import lora_context

# Core's semantic input names as the samplers show them (every error leaving a sampler is renamed with
# this table): the shape comes from the VCU input, the memory settings from the Model Loader, every
# other name is the socket's own.
SOCKET_NAMES = {"num_frames": "vcu (num_frames)", "height": "vcu (height)", "width": "vcu (width)",
                "vram_budget": "vram_budget_gb (VDOT Model Loader)", "precision": "precision (VDOT Model Loader)"}
PRESET_TOOLTIP = "Sampler preset; which checkpoint each suits:\n" + "\n".join(
    f"- {p.name}: {p.description}" for p in SAMPLER_PRESETS.values())


def _preset_inputs() -> dict:
    return {
        "preset": (list(SAMPLER_PRESETS), {"default": DEFAULT_PRESET, "tooltip": PRESET_TOOLTIP}),
        "steps": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS,
                          "tooltip": "0 = the preset's own (4 for vdot/renoise, 50 for the teachers). "
                                     "VDOT is distilled for 4."}),
        "shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                            "tooltip": "Timestep shift σ' = sσ/(1+(s−1)σ); 0 = the preset's own "
                                       "(16 for vdot, 5 for renoise)."}),
    }


def generation_inputs(seed_tooltip: str, cfg_tooltip: str) -> dict:
    """The widgets both samplers share, in ComfyUI's order: vcu, seed, the preset's, cfg, denoise,
    control_scale, num_videos (the tooltips that differ are passed in)."""
    return {
        "vcu": ("VDOT_VCU", {"tooltip": "From a VDOT VCU node: what to generate and what to keep."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                         "tooltip": seed_tooltip}),
        **_preset_inputs(),
        "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1, "tooltip": cfg_tooltip}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                              "tooltip": "Below 1: start from init_frames noised to this level (video to "
                                         "video restyling); needs init_frames."}),
        "control_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                    "tooltip": "Strength of the VCU's conditioning (VACE context scale)."}),
        "num_videos": ("INT", {"default": 1, "min": 1, "max": MAX_NUM_VIDEOS,
                               "tooltip": "Videos to generate (seeds seed, seed+1, …)."}),
    }


# The guidance interval, optional so that workflows saved before it load unchanged (every step guided).
CFG_INTERVAL_INPUTS = {
    "cfg_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                            "tooltip": "With cfg above 1: guide from this part of the denoising on (0 = pure noise, "
                                       "1 = the clean video; ComfyUI's start percent). 0 = from the first step."}),
    "cfg_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                          "tooltip": "With cfg above 1: guide only until this part of the denoising (1 = to the end). "
                                     "e.g. 0.8 leaves the low-noise end unguided, which keeps guidance's layout "
                                     "without its oversaturated detail and saves those steps' second model call."}),
}


def node_preset(preset: str, steps: int, shift: float):
    """The preset with the node's overrides (0 = keep the preset's value)."""
    return get_preset(preset, steps=steps or None, shift=shift or None)


class VDOTSampler:
    DESCRIPTION = ("Generate a video with a sampler preset; the default 'vdot' is the official VDOT-14B sampler "
                   "(Wan's FlowUniPC, 4 steps, shift 16, deterministic). Guidance is distilled into VDOT, so cfg 1 "
                   "(off) is the default. One progress tick per step; Cancel stops between steps.")
    CATEGORY = "VDOT/sampling"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The generated video(s) as frames; with num_videos > 1 the videos follow each other.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("VDOT_MODEL", {"tooltip": "From VDOT Model Loader."}),
                "vae": ("VDOT_VAE", {"tooltip": "From VDOT VAE Loader."}),
                "embeds": ("VDOT_EMBEDS", {"tooltip": "From VDOT Text Encode or VDOT Conditioning to Embeds."}),
                **generation_inputs(
                    "Noise seed; video i of a batch uses seed + i.",
                    "Classifier-free guidance. 1 = off (VDOT's guidance is distilled); above 1 doubles the cost "
                    "and uses the negative prompt."),
            },
            "optional": {
                **CFG_INTERVAL_INPUTS,
                "init_frames": ("IMAGE", {"tooltip": "Starting video for denoise < 1 (same size and frame count as the VCU)."}),
                "preview_decoder": ("VDOT_PREVIEW_DECODER", {"tooltip": "From VDOT Preview Decoder Loader (TAEW2.1): "
                                    "step previews decoded by it (without it: ComfyUI's latent-RGB colours), and the "
                                    "final video too when its final_video is on."}),
            },
        }

    @inputs_named(SOCKET_NAMES)
    def sample(self, model, vae, embeds, vcu, seed, preset, steps, shift, cfg, denoise, control_scale, num_videos,
               cfg_start=0.0, cfg_end=1.0, init_frames=None, preview_decoder=None):
        preset = check_sampler_inputs(embeds, vcu, seed, preset, steps, shift, cfg, denoise, control_scale, num_videos,
                                      cfg_start, cfg_end)
        device = comfy.torch_device()
        resident = None
        if getattr(model, "vram_budget_gb", 0) and device.type != "cpu":  # Model Loader's budget: block swap
            from ..core.memory import resident_blocks_for, video_tokens

            tokens = video_tokens(vcu.num_frames, vcu.height, vcu.width) + len(vcu.references) * (vcu.height // 16) * (vcu.width // 16)
            resident = resident_blocks_for(model.module, int(model.vram_budget_gb * 1e9), tokens,
                                           num_videos * (2 if cfg != 1.0 else 1))
        pipe = VDOTPipeline(model.module, vae.module, device=device, resident_blocks=resident,
                            offload="model" if model.offload else "none")
        # Previews: TAEW2.1 when connected (refused here, before sampling, for the toy VAE's latents),
        # else latent-RGB for Wan 2.1 latents; the VAE's chunks get their own bars.
        from ..core.preview import decode_draft, make_step_preview
        from ..core.vae_tiling import generate_chunk_totals

        tae = preview_decoder.decoder if preview_decoder is not None else None
        draft = tae is not None and preview_decoder.final_video
        step_preview = make_step_preview(vae.module, tae)
        cancel = comfy.make_cancel()
        vae_progress = comfy.make_vae_progress(generate_chunk_totals(
            vae.module, pipe.vae_tiling, vcu.num_frames, vcu.height, vcu.width, references=len(vcu.references),
            num_videos=num_videos, init_frames=denoise < 1.0, decode=not draft, temporal=pipe.vae_temporal))
        with lora_context(model):
            frames = generate_frames(pipe, embeds, vcu, seed, preset, cfg, denoise, control_scale, num_videos,
                                     init_frames, "VDOT Sampler", cancel=cancel, step_image=step_preview,
                                     cfg_start=cfg_start, cfg_end=cfg_end,
                                     vae_progress=vae_progress, return_latents=draft)
        if draft:
            frames = decode_draft(vae.module, tae, frames, cancel=cancel,
                                  progress=comfy.make_progress(frames.shape[0] * frames.shape[2], "TAE decode"))
        return (frames.reshape(-1, *frames.shape[2:]),)


def check_sampler_inputs(embeds, vcu, seed, preset, steps, shift, cfg, denoise, control_scale, num_videos,
                         cfg_start=0.0, cfg_end=1.0):
    """What both samplers check before any model runs; returns the preset with the node's overrides."""
    # Widgets are bounded in the UI, but an API-format workflow can send anything: the one
    # validation layer checks types, NaN/inf, ranges, seed + num_videos and the memory estimate.
    # steps / shift 0 mean "the preset's own"; anything else is an override and is checked.
    overrides = {name: value for name, value in (("steps", steps), ("shift", shift)) if value != 0}
    validate_generate(dict(seed=seed, cfg=cfg, denoise=denoise, control_scale=control_scale,
                           num_videos=num_videos, num_frames=vcu.num_frames, height=vcu.height, width=vcu.width,
                           **overrides))
    if cfg != 1.0 and embeds.negative is None:
        raise VDOTInputError("embeds", f"cfg {cfg} needs a negative prompt but the embeds have none",
                             "connect a negative CONDITIONING to VDOT Conditioning to Embeds, or set cfg to 1")
    preset = node_preset(preset, steps, shift)
    check_cfg_interval(preset, cfg, cfg_start, cfg_end, denoise)
    return preset


def generate_frames(pipe, embeds, vcu, seed, preset, cfg, denoise, control_scale, num_videos, init_frames,
                    desc: str, cancel=None, step_image=None, **options) -> torch.Tensor:
    """The samplers' shared run: one progress tick per step (with ``step_image``'s preview of it),
    Cancel between steps; frames ``[num_videos, F, H, W, 3]`` (or latents with ``return_latents=True``).
    ``options`` go to ``VDOTPipeline.generate`` (``cfg_start``/``cfg_end``, ``vae_progress``, ``return_latents``)."""
    return pipe.generate(
        vcu, seed=seed, num_videos=num_videos, preset=preset, cfg=cfg,
        control_scale=control_scale, denoise=denoise, init_frames=init_frames,
        prompt_embeds=embeds.positive, negative_embeds=embeds.negative if cfg != 1.0 else None,
        progress=comfy.make_progress(preset.steps, desc, step_image), cancel=cancel or comfy.make_cancel(), **options,
    )


class VDOTSigmas:
    DESCRIPTION = ("A sampler preset's noise levels as ComfyUI SIGMAS (each step's σ, then the final 0), for "
                   "ComfyUI's SamplerCustomAdvanced with its own loaders (UNETLoader, WanVaceToVideo). With VDOT "
                   "FlowUniPC as the sampler (preset vdot, cfg 1) it walks the official trajectory; ComfyUI's own "
                   "samplers come close but not exactly (README, 'Native ComfyUI nodes').")
    CATEGORY = "VDOT/sampling"
    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("1-D float tensor of σ, steps + 1 values ending in 0.",)
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_preset_inputs(),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "Below 1: a schedule that starts part-way (video to video)."}),
            }
        }

    def sigmas(self, preset, steps, shift, denoise):
        return (preset_sigmas(node_preset(preset, steps, shift), denoise),)


def flow_unipc_comfy(model, x, sigmas, extra_args=None, callback=None, disable=None, truncate_timesteps=True):
    """Wan's FlowUniPC as a ComfyUI (k-diffusion style) sampler function, for SamplerCustomAdvanced.

    ``model(x, σ)`` is ComfyUI's denoiser for a flow (CONST) model: it feeds the network t = σ·1000 and
    returns x − σ·v. To feed the truncated t the official sampler feeds, the model is called at
    σ_call = t/1000 and v = (x − denoised)/σ_call; the update uses the schedule's own σ. For text/VACE
    generation (an all-zero latent) the walk starts from ComfyUI's raw noise, as Wan starts from pure
    noise, instead of ComfyUI's σ₀-scaled one.
    """
    extra_args = extra_args or {}
    sched = sigmas_schedule(sigmas.tolist(), truncate_timesteps)
    latent, raw = getattr(model, "latent_image", None), getattr(model, "noise", None)
    if raw is not None and latent is not None and raw.shape == x.shape and not torch.count_nonzero(latent):
        x = raw.to(x)

    def velocity(x_t, timestep):
        sigma_call = (timestep / 1000).to(x_t.dtype)
        denoised = model(x_t, sigma_call, **extra_args)
        return (x_t - denoised) / sigma_call.view(-1, *[1] * (x_t.ndim - 1))

    return run_schedule(velocity, x.float(), sched, "unipc",
                        progress=comfy.SamplerCallbackProgress(callback, sigmas)).to(x.dtype)


class VDOTFlowUniPC:
    DESCRIPTION = ("Wan's FlowUniPC (the official VDOT sampler) as a ComfyUI SAMPLER for SamplerCustomAdvanced: "
                   "with VDOT Sigmas (preset vdot) and a CFGGuider at cfg 1 it walks the official trajectory on "
                   "ComfyUI's own model loading (README, 'Native ComfyUI nodes').")
    CATEGORY = "VDOT/sampling"
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("A SAMPLER for SamplerCustomAdvanced.",)
    FUNCTION = "sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "timesteps": (["truncated", "sigma"], {
                    "default": "truncated",
                    "tooltip": "truncated: feed the model floor(σ·1000) as Wan's FlowUniPC does (999, 979, 941, 841 "
                               "for vdot); sigma: feed σ·1000 as ComfyUI's own samplers do."}),
            }
        }

    def sampler(self, timesteps):
        return (comfy.ksampler(functools.partial(flow_unipc_comfy, truncate_timesteps=timesteps == "truncated")),)


NODE_CLASS_MAPPINGS = {"VDOTSampler": VDOTSampler, "VDOTSigmas": VDOTSigmas, "VDOTFlowUniPC": VDOTFlowUniPC}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTSampler": "VDOT Sampler", "VDOTSigmas": "VDOT Sigmas",
                              "VDOTFlowUniPC": "VDOT FlowUniPC (SAMPLER)"}
