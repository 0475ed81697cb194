"""The VDOT Sampler node: VCU + prompt → video, in 4 transformer calls."""

from __future__ import annotations

from ..core.errors import VDOTInputError
from ..core.pipeline import VDOTPipeline
from ..core.sampling import VDOT_SHIFT, vdot_timesteps_for
from ..core.validate import MAX_NUM_VIDEOS, MAX_SEED, validate_generate
from . import comfy
from .lora import lora_context


# The semantic input names of core.validate as this node shows them: the shape comes from the VCU
# input, every other name is the socket's own.
SOCKET_NAMES = {"num_frames": "vcu (num_frames)", "height": "vcu (height)", "width": "vcu (width)"}


class VDOTSampler:
    DESCRIPTION = ("Generate a video with the VDOT few-step sampler (4 steps: timesteps 1000, 750, 500, 250 warped "
                   "by the shift). Guidance is distilled into VDOT, so cfg 1 (off) is the default. One progress tick "
                   "per step; Cancel stops between steps.")
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
                "vcu": ("VDOT_VCU", {"tooltip": "From a VDOT VCU node: what to generate and what to keep."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Noise seed; video i of a batch uses seed + i."}),
                "steps": ("INT", {"default": 4, "min": 1, "max": 8,
                                  "tooltip": "Few-step count. VDOT is distilled for 4."}),
                "shift": ("FLOAT", {"default": VDOT_SHIFT, "min": 0.1, "max": 20.0, "step": 0.1,
                                    "tooltip": "Timestep shift σ' = sσ/(1+(s−1)σ); 5 as in training."}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                  "tooltip": "Classifier-free guidance. 1 = off (VDOT's guidance is distilled); "
                                             "above 1 doubles the cost and uses the negative prompt."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01,
                                      "tooltip": "Below 1: start from init_frames noised to this level (video to "
                                                 "video restyling); needs init_frames."}),
                "control_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                            "tooltip": "Strength of the VCU's conditioning (VACE context scale)."}),
                "num_videos": ("INT", {"default": 1, "min": 1, "max": MAX_NUM_VIDEOS,
                                       "tooltip": "Videos to generate (seeds seed, seed+1, …)."}),
            },
            "optional": {
                "init_frames": ("IMAGE", {"tooltip": "Starting video for denoise < 1 (same size and frame count as the VCU)."}),
            },
        }

    def sample(self, model, vae, embeds, vcu, seed, steps, shift, cfg, denoise, control_scale, num_videos,
               init_frames=None):
        # Widgets are bounded in the UI, but an API-format workflow can send anything: the one
        # validation layer checks types, NaN/inf, ranges, seed + num_videos and the memory estimate.
        validate_generate(dict(seed=seed, steps=steps, shift=shift, cfg=cfg, denoise=denoise,
                               control_scale=control_scale, num_videos=num_videos, num_frames=vcu.num_frames,
                               height=vcu.height, width=vcu.width), SOCKET_NAMES)
        if cfg != 1.0 and embeds.negative is None:
            raise VDOTInputError("embeds", f"cfg {cfg} needs a negative prompt but the embeds have none",
                                 "connect a negative CONDITIONING to VDOT Conditioning to Embeds, or set cfg to 1")
        pipe = VDOTPipeline(model.module, vae.module, device=comfy.torch_device(),
                            offload="model" if model.offload else "none", is_toy=model.is_toy)
        total = steps
        with lora_context(model):
            frames = pipe.generate(
                vcu, seed=seed, num_videos=num_videos, timesteps=vdot_timesteps_for(steps), shift=shift, cfg=cfg,
                control_scale=control_scale, denoise=denoise, init_frames=init_frames,
                prompt_embeds=embeds.positive, negative_embeds=embeds.negative if cfg != 1.0 else None,
                progress=comfy.make_progress(total, "VDOT Sampler"), cancel=comfy.make_cancel(),
            )
        return (frames.reshape(-1, *frames.shape[2:]),)


NODE_CLASS_MAPPINGS = {"VDOTSampler": VDOTSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTSampler": "VDOT Sampler"}
