"""Nodes that join VDOT to ComfyUI's own loaders and samplers.

- VDOT Sampler (native MODEL): our VCU tasks and sampler presets on a MODEL / VAE / CONDITIONING that ComfyUI
  loaded (Load Diffusion Model, GGUF / fp8 files, LoRA nodes, Load VAE, Load CLIP type wan).
- VDOT VCU to Wan VACE: a VCU as ComfyUI's WanVaceToVideo outputs, for KSampler / SamplerCustomAdvanced
  (with VDOT Sigmas and VDOT FlowUniPC).

The adapters are ``vdot_nodes.core.native``; this module only takes the sockets apart.
"""

from __future__ import annotations

from ..core.errors import inputs_named
from ..core.native import NativeWanVACE, NativeWanVAE, append_conditioning, wan_vace_conditioning
from ..core.pipeline import VDOTPipeline
from ..core.validate import MAX_NUM_VIDEOS
from ..core.vcu import validate_vcu
from . import comfy
from .sampler import CFG_INTERVAL_INPUTS, SOCKET_NAMES, check_sampler_inputs, generate_frames, generation_inputs
from .text import Embeds, _from_conditioning


def _latent_batch_shape(vcu, channels: int, spatial: int, temporal: int, batch: int) -> list[int]:
    frames = len(vcu.references) + (vcu.num_frames - 1) // temporal + 1
    return [batch, channels, frames, vcu.height // spatial, vcu.width // spatial]


class VDOTNativeSampler:
    DESCRIPTION = ("VDOT Sampler on ComfyUI's own model loading: a MODEL from Load Diffusion Model (Wan2.1-VACE or "
                   "VDOT, any ComfyUI format: fp16/bf16/fp8, GGUF loaders, after LoRA nodes), the VAE from Load VAE and "
                   "prompts from CLIP Text Encode (Load CLIP, type wan). Same VCU tasks, presets and seeds as VDOT "
                   "Sampler: with the same weights it gives the same video.")
    CATEGORY = "VDOT/sampling"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The generated video(s) as frames; with num_videos > 1 the videos follow each other.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "From Load Diffusion Model (wan2.1_vace_*.safetensors or a VDOT "
                                               "export/convert), optionally through LoRA nodes."}),
                "vae": ("VAE", {"tooltip": "From Load VAE (wan_2.1_vae.safetensors)."}),
                "positive": ("CONDITIONING", {"tooltip": "From CLIP Text Encode with a umt5_xxl CLIP (type wan)."}),
                **generation_inputs(
                    "Noise seed; video i of a batch uses seed + i (same noise as VDOT Sampler).",
                    "Classifier-free guidance. 1 = off (VDOT's guidance is distilled); above 1 needs the negative "
                    "input."),
            },
            "optional": {
                **CFG_INTERVAL_INPUTS,
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt; used only with cfg above 1."}),
                "init_frames": ("IMAGE", {"tooltip": "Starting video for denoise < 1 (same size and frame count as "
                                                     "the VCU)."}),
            },
        }

    @inputs_named(SOCKET_NAMES)
    def sample(self, model, vae, positive, vcu, seed, preset, steps, shift, cfg, denoise, control_scale, num_videos,
               cfg_start=0.0, cfg_end=1.0, negative=None, init_frames=None):
        embeds = Embeds(_from_conditioning(positive, "positive"),
                        None if negative is None else _from_conditioning(negative, "negative"))
        preset = check_sampler_inputs(embeds, vcu, seed, preset, steps, shift, cfg, denoise, control_scale, num_videos,
                                      cfg_start, cfg_end)
        transformer = NativeWanVACE(model)
        native_vae = NativeWanVAE(vae, transformer.latent_format)
        cfg_vae = native_vae.config
        shape = _latent_batch_shape(vcu, cfg_vae.z_dim, cfg_vae.scale_factor_spatial, cfg_vae.scale_factor_temporal,
                                    num_videos)
        transformer._load = comfy.model_loader(model, shape)
        # ComfyUI keeps and moves its models itself: no offload by the pipeline.
        pipe = VDOTPipeline(transformer, native_vae, device=comfy.torch_device(), offload="none")
        frames = generate_frames(pipe, embeds, vcu, seed, preset, cfg, denoise, control_scale, num_videos, init_frames,
                                 "VDOT Sampler (native)", cfg_start=cfg_start, cfg_end=cfg_end)
        return (frames.reshape(-1, *frames.shape[2:]),)


class VDOTVCUToWanVace:
    DESCRIPTION = ("A VDOT VCU (any task: extension, inpainting, references, control) as ComfyUI's WanVaceToVideo "
                   "outputs, for KSampler or SamplerCustomAdvanced on ComfyUI's own Wan2.1-VACE / VDOT MODEL. The "
                   "VCU is encoded as the official VACE code does (binary mask for the inactive/reactive split, soft "
                   "mask for the mask channels, every reference). Cut the reference frames after sampling with "
                   "TrimVideoLatent(trim_latent).")
    CATEGORY = "VDOT/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "INT")
    RETURN_NAMES = ("positive", "negative", "latent", "trim_latent")
    OUTPUT_TOOLTIPS = ("positive with the VCU's VACE context", "negative with the VCU's VACE context",
                       "all-zero latent of the VCU's size (reference frames first)",
                       "reference latent frames to cut after sampling (TrimVideoLatent)")
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (umt5_xxl, type wan)."}),
            "negative": ("CONDITIONING", {"tooltip": "From CLIP Text Encode (umt5_xxl, type wan)."}),
            "vae": ("VAE", {"tooltip": "From Load VAE (wan_2.1_vae.safetensors)."}),
            "vcu": ("VDOT_VCU", {"tooltip": "From a VDOT VCU node."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_NUM_VIDEOS, "tooltip": "Videos per run."}),
            "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                   "tooltip": "Strength of the VCU's conditioning (VACE strength)."}),
        }}

    def convert(self, positive, negative, vae, vcu, batch_size, strength):
        for name, cond in (("positive", positive), ("negative", negative)):
            _from_conditioning(cond, name)  # a clear error for a socket that is not Wan CONDITIONING
        validate_vcu(vcu)
        native_vae = NativeWanVAE(vae, comfy.wan_latent_format())
        pipe = VDOTPipeline(None, native_vae, device=comfy.torch_device(), offload="none")
        cond = wan_vace_conditioning(pipe.encode_vcu(vcu), native_vae.config, batch_size)
        values = {"vace_frames": [cond.vace_frames], "vace_mask": [cond.vace_mask], "vace_strength": [strength]}
        return (append_conditioning(positive, values), append_conditioning(negative, values),
                {"samples": cond.latent}, cond.trim_latent)


NODE_CLASS_MAPPINGS = {"VDOTNativeSampler": VDOTNativeSampler, "VDOTVCUToWanVace": VDOTVCUToWanVace}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTNativeSampler": "VDOT Sampler (native MODEL)",
                              "VDOTVCUToWanVace": "VDOT VCU to Wan VACE"}
