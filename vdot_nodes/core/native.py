"""ComfyUI's own Wan objects seen through the interfaces :class:`~vdot_nodes.core.pipeline.VDOTPipeline` uses.

With these two adapters the pipeline (VCU encoding, sampler presets, cfg, denoise, progress, cancel, the
NaN checks) runs unchanged on a model that ComfyUI loaded: ``UNETLoader`` / a GGUF loader / fp8 files,
LoRA-patched by ComfyUI's LoRA nodes, with ComfyUI's VAE. This module never imports ComfyUI; it is given
the objects (and a ``load`` callable) and uses only these of their methods (ComfyUI a125cd84):

- MODEL (``comfy.model_patcher.ModelPatcher``): ``get_model_object("diffusion_model" | "latent_format" |
  "model_sampling")``, ``model.model_type``, ``model.apply_model(x, σ, c_crossattn=, vace_context=,
  vace_strength=, transformer_options=)`` (``comfy.model_base.BaseModel``: returns the denoised x − σ·v and
  feeds the network t = ``model_sampling.timestep(σ)``), ``model_options["transformer_options"]``. The
  network must be ``comfy.ldm.wan.model.VaceWanModel`` (``vace_context`` ``[B, contexts, 96, f, h, w]``,
  ``vace_strength`` a list with one scale per context, normalised latents).
- VAE (``comfy.sd.VAE``): ``encode(IMAGE [F, H, W, 3] in 0..1)`` → raw latents ``[1, C, f, h, w]``,
  ``decode(raw latents)`` → ``[B, F, H, W, 3]`` in 0..1, ``latent_channels``, ``spacial_compression_encode()``,
  ``temporal_compression_decode()``.
- latent format (``comfy.latent_formats.Wan21``): ``latents_mean``, ``latents_std``, ``scale_factor``;
  ``process_in(z) = (z − mean)·scale_factor/std`` is the pipeline's normalisation.

The reverse direction, a VCU as ComfyUI's ``WanVaceToVideo`` outputs (for ComfyUI's own samplers), is
:func:`wan_vace_conditioning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .errors import VDOTInputError

WAN_TIMESTEP_MULTIPLIER = 1000  # Wan's flow models see t = σ·1000 (ModelSamplingDiscreteFlow's multiplier)
__all__ = ["NativeWanVAE", "NativeWanVACE", "WanVaceConditioning", "wan_vace_conditioning", "append_conditioning"]


class _DtypeProbe:
    """Stands where the pipeline reads a module's dtype (``patch_embedding.weight.dtype``, ``parameters()``):
    ComfyUI casts inputs to each model's own compute dtype (fp8 and GGUF storage included), so the pipeline
    hands over float32."""

    weight = torch.empty(0, dtype=torch.float32)


class NativeWanVAE:
    """A ComfyUI ``VAE`` with the diffusers ``AutoencoderKLWan`` interface the pipeline calls.

    ``latent_format`` gives the normalisation (ComfyUI's ``Wan21``; the MODEL's own when there is one). Encoding
    is ComfyUI's (the posterior mean, as the pipeline's ``latent_dist.mode()``); ComfyUI tiles on its own when
    memory runs out, so the pipeline's tiling and per-chunk cancel do not apply to it.
    """

    def __init__(self, vae, latent_format, input_name: str = "vae"):
        for method in ("encode", "decode"):
            if not callable(getattr(vae, method, None)):
                raise VDOTInputError(input_name, f"is a {type(vae).__name__}, not a ComfyUI VAE",
                                     "connect Load VAE (wan_2.1_vae.safetensors)")
        self.comfy_vae = vae
        channels = int(getattr(vae, "latent_channels", 16))
        mean = torch.as_tensor(latent_format.latents_mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(latent_format.latents_std, dtype=torch.float32).flatten()
        scale = float(getattr(latent_format, "scale_factor", 1.0))
        if mean.numel() != channels or std.numel() != channels:
            raise VDOTInputError(input_name, f"this VAE makes {channels}-channel latents but the model's latent format "
                                 f"has {mean.numel()} channels", "load the VAE that belongs to the model "
                                 "(wan_2.1_vae.safetensors for Wan2.1-VACE / VDOT)")
        spatial = _call_or(vae, "spacial_compression_encode", 8)
        temporal = _call_or(vae, "temporal_compression_decode", 4)
        # process_in(z) = (z − mean)·scale/std, i.e. the pipeline's (z − mean)/std' with std' = std/scale.
        self.config = SimpleNamespace(z_dim=channels, latents_mean=mean.tolist(), latents_std=(std / scale).tolist(),
                                      scale_factor_spatial=int(spatial), scale_factor_temporal=int(temporal))

    def parameters(self):
        yield _DtypeProbe.weight

    def to(self, *_args, **_kwargs):
        return self  # ComfyUI moves its VAE itself (load_models_gpu inside encode/decode)

    def encode(self, video: torch.Tensor):
        """``[1, 3, F, H, W]`` in [-1, 1] → an object whose ``latent_dist.mode()`` is the raw latent."""
        pixels = ((video[0].float().permute(1, 2, 3, 0) + 1) / 2).cpu()  # ComfyUI IMAGE [F, H, W, 3] in 0..1
        latent = self.comfy_vae.encode(pixels).float()
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latent))

    def decode(self, z: torch.Tensor):
        """Raw latent ``[1, C, f, h, w]`` → an object whose ``sample`` is ``[1, 3, F, H, W]`` in [-1, 1]."""
        images = self.comfy_vae.decode(z.float()).float()  # [1, F, H, W, 3] in 0..1
        if images.ndim == 4:  # a batch of one video may come back without its batch axis
            images = images.unsqueeze(0)
        return SimpleNamespace(sample=images.permute(0, 4, 1, 2, 3) * 2 - 1)


def _call_or(obj, name: str, default):
    fn = getattr(obj, name, None)
    value = fn() if callable(fn) else None
    return default if value is None else value


class NativeWanVACE:
    """A ComfyUI ``MODEL`` holding Wan2.1-VACE (or VDOT) with the diffusers ``WanVACETransformer3DModel`` call the
    pipeline's velocity function makes.

    ``load()`` is ComfyUI's ``load_models_gpu([patcher])``: it applies the MODEL's weight patches (LoRA) and
    moves or partially loads it; the pipeline calls it through ``to(device)`` before sampling. The network is
    called through ``BaseModel.apply_model`` (input casting, fp8/GGUF compute, its wrappers) at σ = t/1000, and
    the velocity is recovered from its denoised output as v = (x − x̂₀)/σ.
    """

    def __init__(self, patcher, load=None, input_name: str = "model"):
        self.patcher, self._load, self.input_name = patcher, load, input_name
        get = getattr(patcher, "get_model_object", None)
        if not callable(get) or getattr(patcher, "model", None) is None:
            raise VDOTInputError(input_name, f"is a {type(patcher).__name__}, not a ComfyUI MODEL",
                                 "connect Load Diffusion Model (UNETLoader) or a LoRA / GGUF loader after it")
        net = get("diffusion_model")
        kind = type(patcher.model).__name__
        if getattr(net, "vace_patch_embedding", None) is None or not getattr(net, "vace_layers", None):
            raise VDOTInputError(input_name, f"ComfyUI loaded this model as {kind} without VACE blocks, so it cannot "
                                 "take a VCU", "load a Wan2.1-VACE or VDOT checkpoint (it has vace_blocks.*)")
        model_type = getattr(getattr(patcher.model, "model_type", None), "name", None)
        sampling = get("model_sampling")
        if model_type != "FLOW" or float(sampling.timestep(torch.tensor(1.0))) != WAN_TIMESTEP_MULTIPLIER:
            raise VDOTInputError(input_name, f"{kind} is not a flow model that sees t = σ·1000 (model type {model_type})",
                                 "remove the node that changed its sampling type, or load the model again")
        self.latent_format = get("latent_format")
        num_layers, num_vace = int(net.num_layers), int(net.vace_layers)
        # ComfyUI places the VACE blocks at range(0, num_layers, num_layers // vace_layers) (VaceWanModel).
        self.config = SimpleNamespace(
            text_dim=int(net.text_dim), in_channels=int(net.in_dim), out_channels=int(net.out_dim),
            vace_in_channels=int(net.vace_in_dim), num_layers=num_layers,
            vace_layers=list(range(0, num_layers, num_layers // num_vace)))
        self.patch_embedding = _DtypeProbe

    def to(self, *_args, **_kwargs):
        # The pipeline moves the transformer to its device before sampling; ComfyUI does that (and patches
        # the weights) in load_models_gpu, on a --cpu ComfyUI too. The sampler node never asks for offload.
        if self._load is not None:
            self._load()
        return self

    def __call__(self, hidden_states, timestep, encoder_hidden_states, control_hidden_states,
                 control_hidden_states_scale, return_dict=False):
        scales = torch.as_tensor(control_hidden_states_scale, dtype=torch.float32).flatten()
        if not torch.all(scales == scales[0]):
            raise VDOTInputError("control_scale", "ComfyUI's VACE model takes one scale for all VACE blocks",
                                 "give one control_scale")
        x = hidden_states.float()
        sigma = timestep.float() / WAN_TIMESTEP_MULTIPLIER
        options = dict(self.patcher.model_options.get("transformer_options", {}))
        options["sigmas"] = sigma
        denoised = self.patcher.model.apply_model(
            x, sigma, c_crossattn=encoder_hidden_states.float(),
            vace_context=control_hidden_states.float().unsqueeze(1),  # [B, one context, 96, f, h, w]
            vace_strength=[float(scales[0])], transformer_options=options).float()
        velocity = (x - denoised) / sigma.view(-1, *[1] * (x.ndim - 1))
        return (velocity,)


@dataclass
class WanVaceConditioning:
    """A VCU as ComfyUI's ``WanVaceToVideo`` gives it to its sampler (``comfy.model_base.WAN21_Vace.extra_conds``):
    ``vace_frames`` raw (un-normalised) inactive|reactive latents ``[1, 32, R + f, h, w]``, ``vace_mask``
    ``[1, 64, R + f, h, w]``, an all-zero ``latent`` ``[batch, 16, R + f, h, w]`` and ``trim_latent`` = R
    reference frames to cut after sampling."""

    vace_frames: torch.Tensor
    vace_mask: torch.Tensor
    latent: torch.Tensor
    trim_latent: int


def wan_vace_conditioning(encoded, vae_config, batch_size: int = 1) -> WanVaceConditioning:
    """``EncodedVCU`` (normalised latents) → :class:`WanVaceConditioning` (raw latents, as ComfyUI's model
    normalises them itself with ``process_latent_in``, per 16 channels)."""
    z = int(vae_config.z_dim)
    control = encoded.control.float()
    mean = torch.tensor(vae_config.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1).repeat(1, 2, 1, 1, 1)
    std = torch.tensor(vae_config.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1).repeat(1, 2, 1, 1, 1)
    frames = control[:, : 2 * z] * std + mean
    latent = torch.zeros((batch_size, *encoded.latent_shape), dtype=torch.float32)
    return WanVaceConditioning(frames, control[:, 2 * z:], latent, int(encoded.num_reference_frames))


def append_conditioning(conditioning, values: dict):
    """ComfyUI ``CONDITIONING`` with each entry's lists in ``values`` appended to (what
    ``node_helpers.conditioning_set_values(..., append=True)`` does); the input is left unchanged."""
    out = []
    for tensor, options in conditioning:
        options = dict(options)
        for key, value in values.items():
            options[key] = [*options.get(key, []), *value]
        out.append([tensor, options])
    return out
