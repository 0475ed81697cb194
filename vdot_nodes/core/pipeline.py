"""VCU → VACE conditioning → sampling → decoded frames, as a composition of steps.

Each step lives in its own module and needs only its own component, so training, the text node and
the reward model use the step they need:

* text encoding — :class:`~.text_encoding.PromptEncoder` (UMT5 + prompt cache);
* the VAE codec — :class:`~.vae_codec.VAECodec` (frames ↔ normalised latents, tiling, chunk progress);
* VACE context — :func:`~.vace_context.encode_vcu` (inactive / reactive latents + 8×8-unshuffled mask,
  references prepended as extra latent frames);
* the velocity function — :func:`~.velocity.transformer_velocity` (what the samplers call);
* sampling — :func:`~.sampling.sample`.

:meth:`VDOTPipeline.generate` runs them in order. Frames come back in ComfyUI layout
``[F, H, W, 3]`` float32 in 0..1.

Memory: with ``offload="model"`` each component sits on the CPU and moves to the compute device only
while it runs (text encoder → transformer → VAE), so peak accelerator memory is the largest single
component plus its activations; ``offload="none"`` keeps everything on the device. Components given
as loaders (``text_encoder_loader``, ``transformer_loader``: what ``components.load_pipeline`` does)
are loaded when their phase starts and released after it, so host memory holds one large component
at a time; with ``resident_blocks`` the transformer runs under block swap (``block_swap.py``); a
``prompt_cache`` skips the text encoder for prompts seen before (``memory.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch

from .errors import VDOTInputError, input_ref
from .placement import compute_device, free_memory, on_device
from .progress import CancelFn, Progress, ProgressFn, as_progress
from .sampling import (
    DEFAULT_PRESET,
    SamplerPreset,
    SeededNoise,
    VelocityFn,
    cfg_timestep_range,
    cfg_velocity,
    check_cfg_interval,
    get_preset,
    preset_schedule,
    sample,
)
from .text_encoding import MAX_TEXT_TOKENS, PromptEncoder, check_prompt_embeds, clean_prompt  # noqa: F401
from .vace_context import EncodedVCU, check_vae_fits_transformer, encode_vcu, unshuffle_mask
from .vae_codec import VAE_SPATIAL, VAE_TEMPORAL, VAECodec  # noqa: F401
from .vcu import VCU
from .velocity import transformer_velocity

OFFLOAD_MODES = ("none", "model")


class VDOTPipeline:
    """Wan2.1-VACE components plus the VDOT samplers: the steps above, composed.

    ``transformer``: diffusers ``WanVACETransformer3DModel``; ``vae``: ``AutoencoderKLWan``;
    ``text_encoder`` / ``tokenizer``: UMT5 encoder and its tokenizer (optional when prompt embeddings
    are given directly, e.g. from a cache or ComfyUI's CONDITIONING).
    """

    memory_plan = None  # memory.MemoryPlan, set by components.load_pipeline when it planned the run
    speed_notes: list[str] = []  # what speed.apply_speed_options ran

    def __init__(
        self,
        transformer,
        vae,
        text_encoder=None,
        tokenizer=None,
        *,
        device: str | torch.device | None = None,
        offload: str = "model",
        text_encoder_loader=None,
        transformer_loader=None,
        transformer_config=None,
        prompt_cache=None,
        resident_blocks: int | None = None,
        vae_tiling: str = "auto",
        release_after_use: bool = False,
    ):
        if offload not in OFFLOAD_MODES:
            raise VDOTInputError("offload", f"unknown offload mode {offload!r}", f"use one of {OFFLOAD_MODES}")
        self._transformer_loader, self._transformer_config = transformer_loader, transformer_config
        self.resident_blocks = resident_blocks
        self.release_after_use = release_after_use
        self.transformer = transformer
        self.device = compute_device(device)
        self.offload = offload == "model"
        self.lora_reports: list = []  # what load_pipeline(loras=...) applied (vdot_nodes.core.lora)
        self.text = PromptEncoder(text_encoder, tokenizer, device=self.device, offload=self.offload,
                                  loader=text_encoder_loader, prompt_cache=prompt_cache)
        self.codec = VAECodec(vae, device=self.device, offload=self.offload, tiling=vae_tiling)
        if (transformer is not None or transformer_config is not None) and vae is not None:
            check_vae_fits_transformer(self.transformer_config, self.codec)

    # ---------------------------------------------------------------- components (held by the steps)
    vae = property(lambda self: self.codec.vae, lambda self, m: setattr(self.codec, "vae", m))
    vae_tiling = property(lambda self: self.codec.tiling, lambda self, m: setattr(self.codec, "tiling", m))
    text_encoder = property(lambda self: self.text.text_encoder, lambda self, m: setattr(self.text, "text_encoder", m))
    tokenizer = property(lambda self: self.text.tokenizer, lambda self, m: setattr(self.text, "tokenizer", m))
    text_encoder_loader = property(lambda self: self.text.loader, lambda self, m: setattr(self.text, "loader", m))
    prompt_cache = property(lambda self: self.text.prompt_cache, lambda self, m: setattr(self.text, "prompt_cache", m))

    @property
    def transformer(self):
        if self._transformer is None and self._transformer_loader is not None:
            self._transformer = self._transformer_loader()
        return self._transformer

    @transformer.setter
    def transformer(self, module) -> None:
        self._transformer = module

    @property
    def transformer_config(self):
        """The transformer's config, known before a lazily loaded transformer is loaded."""
        if self._transformer is not None or self._transformer_config is None:
            return self.transformer.config
        return self._transformer_config

    def _release_lazy(self, name: str) -> None:
        """Drop a component that a loader can bring back (frees its host memory now)."""
        if not self.release_after_use:
            return
        if name == "text_encoder":
            released = self.text.release()
        elif name == "transformer" and self._transformer_loader is not None and self._transformer is not None:
            self._transformer, released = None, True
        else:
            released = False
        if released:
            free_memory()

    @contextlib.contextmanager
    def _transformer_on_device(self) -> Iterator[None]:
        """The transformer on the device for sampling: whole, or under block swap with ``resident_blocks``."""
        transformer = self.transformer
        if self.resident_blocks is None:
            with on_device(transformer, self.device, self.offload):
                yield
            return
        from .block_swap import BlockSwap

        with BlockSwap(transformer, self.device, self.resident_blocks):
            yield
        if self.offload and self.device.type != "cpu":
            transformer.to("cpu")

    # ---------------------------------------------------------------- the steps, by their pipeline names
    @property
    def text_dim(self) -> int:
        return int(self.transformer_config.text_dim)

    def encode_prompt(self, prompts: Sequence[str], max_length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
        """UMT5 embeddings ``[B, max_length, D]`` (:meth:`PromptEncoder.encode`)."""
        return self.text.encode(prompts, max_length)

    @property
    def vae_spatial(self) -> int:
        return self.codec.spatial

    @property
    def vae_temporal(self) -> int:
        return self.codec.temporal

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return self.codec.latent_shape(num_frames, height, width)

    def _encode_pixels(self, video: torch.Tensor) -> torch.Tensor:
        return self.codec.encode_pixels(video)

    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[F, H, W, 3]`` 0..1 → normalised latents ``[1, 16, f, h, w]`` (:meth:`VAECodec.encode`)."""
        return self.codec.encode(frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, 16, f, h, w]`` → frames ``[B, F, H, W, 3]`` (:meth:`VAECodec.decode`)."""
        return self.codec.decode(latents)

    def encode_vcu(self, vcu: VCU) -> EncodedVCU:
        """The VACE context of ``vcu`` (:func:`~.vace_context.encode_vcu`)."""
        return encode_vcu(self.codec, vcu)

    unshuffle_mask = staticmethod(unshuffle_mask)

    def velocity_fn(
        self, prompt_embeds: torch.Tensor, control: torch.Tensor, control_scale: float = 1.0
    ) -> VelocityFn:
        """``v(x_t, t)`` for a batch: the transformer with fixed text and VACE context."""
        return transformer_velocity(self.transformer, prompt_embeds, control, self.device, control_scale)

    # ---------------------------------------------------------------- generate: the steps in order
    def prepare_prompt_embeds(self, vcu: VCU, cfg: float, prompt_embeds: torch.Tensor | None = None,
                              negative_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's embeddings (and the negative prompt's when ``cfg`` ≠ 1), encoded unless given; checked."""
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt([vcu.prompt])
        if cfg != 1.0 and negative_embeds is None:
            negative_embeds = self.encode_prompt([vcu.negative_prompt])
        for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_embeds", negative_embeds)):
            check_prompt_embeds(name, embeds, self.text_dim)
        return prompt_embeds, negative_embeds

    def prepare_init_latents(self, init_frames: torch.Tensor | None, denoise: float,
                             encoded: EncodedVCU) -> torch.Tensor | None:
        """Video-to-video (``denoise`` < 1): the input frames' latents, zeros in the reference frames."""
        if denoise >= 1.0:
            return None
        if init_frames is None:
            raise VDOTInputError("denoise", f"denoise {denoise} < 1 needs input frames",
                                 f"give {input_ref('init_frames')} or set {input_ref('denoise')} to 1.0")
        init_latents = self.encode_latents(init_frames)
        if encoded.num_reference_frames:
            ref = torch.zeros_like(init_latents[:, :, : encoded.num_reference_frames])
            init_latents = torch.cat([ref, init_latents], dim=2)
        return init_latents

    def sample_latents(self, encoded: EncodedVCU, prompt_embeds: torch.Tensor,
                       negative_embeds: torch.Tensor | None, noise: SeededNoise, preset: SamplerPreset, *,
                       cfg: float = 1.0, control_scale: float = 1.0, init_latents: torch.Tensor | None = None,
                       denoise: float = 1.0, progress: Progress | None = None, cfg_start: float = 0.0,
                       cfg_end: float = 1.0) -> torch.Tensor:
        """The sampler on the transformer: latents ``[B, 16, f, h, w]`` without the reference frames, float32
        on the CPU; NaN/inf is an error. ``progress`` previews each step's
        :class:`~vdot_nodes.core.progress.SamplerStep` without the reference frames. ``cfg_start`` /
        ``cfg_end``: the guidance interval (:func:`~vdot_nodes.core.sampling.cfg_timestep_range`)."""
        refs = encoded.num_reference_frames
        if refs:
            progress = as_progress(progress).previews_through(
                lambda s: dataclasses.replace(s, x=s.x[:, :, refs:], x0=s.x0[:, :, refs:]))
        with self._transformer_on_device():
            cond = self.velocity_fn(prompt_embeds, encoded.control, control_scale)
            uncond = self.velocity_fn(negative_embeds, encoded.control, control_scale) if cfg != 1.0 else None
            guided = cfg_timestep_range(cfg_start, cfg_end, preset.shift, preset_schedule(preset, denoise))
            velocity = cfg_velocity(cond, uncond, cfg, guided)
            with torch.no_grad():
                latents = sample(
                    velocity, noise, encoded.latent_shape, preset, init_latents=init_latents, denoise=denoise,
                    device=self.device, progress=progress,
                )
        latents = latents[:, :, encoded.num_reference_frames :].float().cpu()
        # The velocity closures hold the transformer: drop them first, or the release frees nothing (a 1.3B
        # run at 480p kept its 4.3 GB of weights through the VAE decode).
        del cond, uncond, velocity
        self._release_lazy("transformer")
        if not torch.isfinite(latents).all():
            raise VDOTInputError(
                "model", "the sampler produced NaN/inf latents", "try another precision (bf16/fp32) or check the weights"
            )
        return latents

    def generate(
        self,
        vcu: VCU,
        *,
        seed: int = 0,
        num_videos: int = 1,
        preset: SamplerPreset | str = DEFAULT_PRESET,
        cfg: float = 1.0,
        cfg_start: float = 0.0,
        cfg_end: float = 1.0,
        control_scale: float = 1.0,
        denoise: float = 1.0,
        init_frames: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_embeds: torch.Tensor | None = None,
        progress: Progress | ProgressFn | None = None,
        cancel: CancelFn | None = None,
        return_latents: bool = False,
        vae_progress=None,
    ) -> torch.Tensor:
        """Generate ``num_videos`` videos for one VCU (seeds ``seed, seed+1, …``).

        ``preset``: a row of :data:`~vdot_nodes.core.sampling.SAMPLER_PRESETS` (by name) or a preset from
        :func:`~vdot_nodes.core.sampling.get_preset` with steps/shift overrides; default ``"vdot"``, the
        official 4-step sampler. ``cfg`` > 1 runs the negative prompt too (VDOT's guidance is distilled, so
        1 is its default); ``cfg_start`` / ``cfg_end`` (0 and 1: every step) guide only that part of the
        denoising, as ComfyUI's start/end percent (:func:`~vdot_nodes.core.sampling.cfg_timestep_range`),
        and an interval without a step is refused before anything loads. Returns frames ``[num_videos, F, H, W, 3]`` in 0..1.
        ``progress``: a :class:`~vdot_nodes.core.progress.Progress` (or the callback ``progress(done, total)``)
        counting sampler steps; it is asked to cancel between steps, phases and VAE chunks, and VAE chunks
        show as its notes. ``vae_progress``: a Progress of its own for VAE chunks (one update per chunk), or
        the callback ``vae_progress(phase, chunks_done)``. ``progress.preview`` receives each step's
        :class:`~vdot_nodes.core.progress.SamplerStep` without the reference frames.
        """
        if isinstance(preset, str):
            preset = get_preset(preset)
        check_cfg_interval(preset, cfg, cfg_start, cfg_end, denoise)
        prompt_embeds, negative_embeds = self.prepare_prompt_embeds(vcu, cfg, prompt_embeds, negative_embeds)
        self._release_lazy("text_encoder")  # before the transformer loads: one large component at a time
        progress = as_progress(progress, cancel)
        # VAE chunks: cancel honoured and reported between chunks (a note on the step bar unless the caller
        # gives the VAE its own Progress or a chunk callback).
        vae_report = progress.status() if vae_progress is None else vae_progress
        vae_cancel = None if vae_progress is None else (lambda: progress.check_cancel() or False)  # status() cancels
        # Cancel is honoured between every phase, not only between steps: at 832x480x81 the VAE
        # encode and decode take as long as several transformer calls.
        progress.check_cancel()
        with self.codec.chunks(vae_cancel, vae_report):
            encoded = self.encode_vcu(vcu)
        progress.check_cancel()
        noise = SeededNoise([seed + i for i in range(num_videos)])
        with self.codec.chunks(vae_cancel, vae_report):
            init_latents = self.prepare_init_latents(init_frames, denoise, encoded)
        latents = self.sample_latents(encoded, prompt_embeds, negative_embeds, noise, preset, cfg=cfg,
                                      control_scale=control_scale, init_latents=init_latents, denoise=denoise,
                                      progress=progress, cfg_start=cfg_start, cfg_end=cfg_end)
        if return_latents:
            return latents
        progress.check_cancel()
        with self.codec.chunks(vae_cancel, vae_report):
            return self.decode(latents)
