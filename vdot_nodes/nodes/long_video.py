"""VDOT Long Video: a VCU longer than one window, sampled as chained VACE extension windows."""

from __future__ import annotations

from ..core.errors import VDOTInputError, inputs_named
from ..core.long_video import DEFAULT_OVERLAP, DEFAULT_WINDOW, generate_long_video, plan_windows
from ..core.pipeline import VDOTPipeline
from ..core.sampling import check_cfg_interval
from ..core.validate import MAX_FRAMES, MAX_SEED, Bound, check_number, validate_generate
from . import comfy
from .lora import lora_context
from .sampler import CFG_INTERVAL_INPUTS, SOCKET_NAMES, _preset_inputs, node_preset


class VDOTLongVideo:
    DESCRIPTION = ("Generate a video longer than one window (e.g. 161+ frames) from any VCU: windows of `window` "
                   "frames, each keeping at least `overlap` frames of the video made so far (a VACE extension) and "
                   "taking its slice of the VCU (control video, masks) and all reference images. Kept frames are "
                   "copied, never regenerated; each window's colours are matched to the video so far on the "
                   "overlap. Progress counts steps over all windows; Cancel stops between windows and steps.")
    CATEGORY = "VDOT/sampling"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The whole video as frames.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VDOT_MODEL", {"tooltip": "From VDOT Model Loader (or VDOT LoRA Loader)."}),
            "vae": ("VDOT_VAE", {"tooltip": "From VDOT VAE Loader."}),
            "embeds": ("VDOT_EMBEDS", {"tooltip": "From VDOT Text Encode: the prompt of every window."}),
            "vcu": ("VDOT_VCU", {"tooltip": "The whole video's VCU (any 4k+1 length, e.g. VDOT VCU Text to Video "
                                            "with num_frames 161, or a long control video)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "Noise seed; window i uses seed + i."}),
            **_preset_inputs(),
            "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1,
                              "tooltip": "Classifier-free guidance; 1 = off (VDOT's default)."}),
            "control_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05,
                                        "tooltip": "Strength of the VCU's conditioning (VACE context scale)."}),
            "window": ("INT", {"default": DEFAULT_WINDOW, "min": 5, "max": 161, "step": 4,
                               "tooltip": "Frames per window, 4k+1 (81: what Wan2.1 and VDOT were trained on)."}),
            "overlap": ("INT", {"default": DEFAULT_OVERLAP, "min": 1, "max": 157,
                                "tooltip": "At least this many frames of the video so far are kept at the start of "
                                           "each next window (windows are spread evenly, so often a few more)."}),
            "colour_match": ("BOOLEAN", {"default": True,
                                         "tooltip": "Match each window's colours to the video so far on the overlap "
                                                    "(removes the colour drift of chained extensions)."}),
        }, "optional": dict(CFG_INTERVAL_INPUTS)}

    @inputs_named(SOCKET_NAMES)
    def sample(self, model, vae, embeds, vcu, seed, preset, steps, shift, cfg, control_scale, window, overlap,
               colour_match, cfg_start=0.0, cfg_end=1.0):
        # An API-format workflow bypasses the widgets' bounds: the one validation layer checks them
        # (steps / shift 0 mean "the preset's own", as in VDOT Sampler).
        overrides = {name: value for name, value in (("steps", steps), ("shift", shift)) if value != 0}
        validate_generate(dict(seed=seed, cfg=cfg, control_scale=control_scale, num_frames=vcu.num_frames,
                               height=vcu.height, width=vcu.width, **overrides))
        preset = node_preset(preset, steps, shift)
        check_cfg_interval(preset, cfg, cfg_start, cfg_end)
        window = check_number("window", window, Bound(int, 1, MAX_FRAMES, f"use {DEFAULT_WINDOW}"))
        overlap = check_number("overlap", overlap, Bound(int, 1, MAX_FRAMES, f"use {DEFAULT_OVERLAP}"))
        if cfg != 1.0 and embeds.negative is None:
            raise VDOTInputError("embeds", f"cfg {cfg} needs a negative prompt but the embeds have none",
                                 "connect a negative CONDITIONING to VDOT Conditioning to Embeds, or set cfg to 1")
        plan = plan_windows(vcu.num_frames, window, overlap)
        if seed + len(plan) - 1 > MAX_SEED:
            raise VDOTInputError("seed", f"{seed} + {len(plan) - 1} (one seed per window) exceeds 2^64 - 1",
                                 f"use a seed of at most {MAX_SEED - len(plan) + 1}")
        device = comfy.torch_device()
        resident = None
        if getattr(model, "vram_budget_gb", 0) and device.type != "cpu":  # Model Loader's budget: block swap
            from ..core.memory import resident_blocks_for, video_tokens

            tokens = video_tokens(plan[0].length, vcu.height, vcu.width) + len(vcu.references) * (vcu.height // 16) * (vcu.width // 16)
            resident = resident_blocks_for(model.module, int(model.vram_budget_gb * 1e9), tokens, 2 if cfg != 1.0 else 1)
        pipe = VDOTPipeline(model.module, vae.module, device=device, resident_blocks=resident,
                            offload="model" if model.offload else "none")
        from ..core.vae_tiling import generate_chunk_totals

        chunks = [generate_chunk_totals(vae.module, pipe.vae_tiling, w.length, vcu.height, vcu.width,
                                        references=len(vcu.references), temporal=pipe.vae_temporal) for w in plan]
        vae_progress = comfy.make_vae_progress({phase: sum(c[phase] for c in chunks) for phase in ("encode", "decode")})
        with lora_context(model):
            frames = generate_long_video(
                pipe, vcu, window=window, overlap=overlap, colour_match=colour_match, seed=seed,
                preset=preset, cfg=cfg, cfg_start=cfg_start, cfg_end=cfg_end, control_scale=control_scale,
                prompt_embeds=embeds.positive, negative_embeds=embeds.negative if cfg != 1.0 else None,
                progress=comfy.make_progress(preset.steps * len(plan), "VDOT Long Video"), cancel=comfy.make_cancel(),
                vae_progress=vae_progress,
            )
        return (frames,)


NODE_CLASS_MAPPINGS = {"VDOTLongVideo": VDOTLongVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"VDOTLongVideo": "VDOT Long Video"}
