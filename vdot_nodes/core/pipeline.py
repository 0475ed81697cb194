"""VCU → VACE conditioning → sampling → decoded frames.

One pipeline serves the CLI, the ComfyUI nodes and training: text encoding, VACE context encoding
(inactive / reactive latents + 8×8-unshuffled mask, references prepended as extra latent frames),
the velocity function the samplers call, and decoding. Frames come back in ComfyUI layout
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
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .errors import VDOTInputError
from .sampling import (
    DEFAULT_PRESET,
    CancelFn,
    ProgressFn,
    SamplerPreset,
    SeededNoise,
    VelocityFn,
    cfg_velocity,
    check_cancel,
    get_preset,
    sample,
)
from .vcu import VCU

MAX_TEXT_TOKENS = 512  # Wan2.1 pads/truncates prompts to 512 UMT5 tokens
VAE_SPATIAL = 8  # Wan2.1 VAE compression; a VAE whose config says otherwise (scale_factor_*) wins
VAE_TEMPORAL = 4
OFFLOAD_MODES = ("none", "model")


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: unescape HTML entities, collapse whitespace."""
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


@contextlib.contextmanager
def on_device(module: torch.nn.Module | None, device: torch.device, offload: bool) -> Iterator[None]:
    """Run a block with ``module`` on ``device``; with offload, move it back to the CPU afterwards."""
    if module is None:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        if offload and torch.device(device).type != "cpu":
            module.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


@dataclass
class EncodedVCU:
    """What the transformer needs from a VCU besides the prompt."""

    control: torch.Tensor  # [1, 96, R + f, h, w] VACE context (R reference frames first)
    num_reference_frames: int
    latent_shape: tuple[int, int, int, int]  # per-sample noise shape [16, R + f, h, w]


class VDOTPipeline:
    """Wan2.1-VACE components plus the VDOT samplers.

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
        self.text_encoder_loader, self.prompt_cache = text_encoder_loader, prompt_cache
        self.resident_blocks, self.vae_tiling = resident_blocks, vae_tiling
        self.release_after_use = release_after_use
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.offload = offload == "model"
        self.lora_reports: list = []  # what load_pipeline(loras=...) applied (vdot_nodes.core.lora)
        if (transformer is not None or transformer_config is not None) and vae is not None:
            self._check_vae_matches_transformer()

    # ---------------------------------------------------------------- lazily loaded components
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
        import gc

        if not self.release_after_use:
            return
        if name == "text_encoder" and self.text_encoder_loader is not None and self.text_encoder is not None:
            self.text_encoder = self.tokenizer = None
        elif name == "transformer" and self._transformer_loader is not None and self._transformer is not None:
            self._transformer = None
        else:
            return
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

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

    def _check_vae_matches_transformer(self) -> None:
        """The transformer's latent width and VACE context width must be what this VAE produces."""
        t, z, s = self.transformer_config, int(self.vae.config.z_dim), self.vae_spatial
        expected = {"in_channels": z}
        if getattr(t, "vace_in_channels", None) is not None:
            expected["vace_in_channels"] = 2 * z + s * s  # inactive + reactive latents + s×s-unshuffled mask
        for key, want in expected.items():
            have = int(getattr(t, key))
            if have != want:
                raise VDOTInputError(
                    "vae", f"the transformer expects {key}={have}, but this VAE ({z} latent channels, {s}× spatial "
                    f"compression) gives {want}", "load the VAE that belongs to this transformer (the Wan2.1 VAE for "
                    "Wan2.1-VACE; the toy VAE for the toy model)")

    # ---------------------------------------------------------------- text
    @property
    def text_dim(self) -> int:
        return int(self.transformer_config.text_dim)

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str], max_length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
        """UMT5 embeddings ``[B, max_length, D]``: each prompt's tokens, then zeros (Wan's convention).

        With a ``prompt_cache`` a prompt seen before is read from disk and the encoder is not touched
        (nor loaded, when it comes from ``text_encoder_loader``).
        """
        if self.prompt_cache is not None:
            cached = [self.prompt_cache.get(clean_prompt(p), max_length) for p in prompts]
            if all(c is not None for c in cached):
                return torch.stack(cached)
        if self.text_encoder is None and self.text_encoder_loader is not None:
            self.text_encoder, self.tokenizer = self.text_encoder_loader()
        if self.text_encoder is None or self.tokenizer is None:
            raise VDOTInputError(
                "text_encoder", "no text encoder is loaded", "load a UMT5 text encoder or pass prompt embeddings"
            )
        prompts = [clean_prompt(p) for p in prompts]
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        lengths = tokens.attention_mask.gt(0).sum(dim=1)
        with on_device(self.text_encoder, self.device, self.offload):
            hidden = self.text_encoder(
                tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
            ).last_hidden_state
        hidden = hidden.float().cpu()
        embeds = torch.zeros_like(hidden)
        for i, n in enumerate(lengths.tolist()):
            embeds[i, :n] = hidden[i, :n]
            if self.prompt_cache is not None:
                self.prompt_cache.put(prompts[i], max_length, embeds[i], n)
        return embeds

    # ---------------------------------------------------------------- VAE
    @property
    def vae_spatial(self) -> int:
        """Pixels per latent pixel (8 for Wan2.1's VAE; diffusers keeps it in ``scale_factor_spatial``)."""
        return int(getattr(self.vae.config, "scale_factor_spatial", None) or VAE_SPATIAL)

    @property
    def vae_temporal(self) -> int:
        """Frames per latent frame after the first (4 for Wan2.1's VAE)."""
        return int(getattr(self.vae.config, "scale_factor_temporal", None) or VAE_TEMPORAL)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[C, f, h, w]`` of the normalised latents of a ``num_frames``×``height``×``width`` video."""
        return (int(self.vae.config.z_dim), (num_frames - 1) // self.vae_temporal + 1,
                height // self.vae_spatial, width // self.vae_spatial)

    def _latent_stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=device).view(1, cfg.z_dim, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=device).view(1, cfg.z_dim, 1, 1, 1)
        return mean, std

    def _encode_pixels(self, video: torch.Tensor) -> torch.Tensor:
        """[1, 3, F, H, W] in [-1, 1] → normalised latents [1, 16, f, h, w] (posterior mode, deterministic)."""
        from .vae_tiling import vae_tiling

        dtype = next(self.vae.parameters()).dtype
        with vae_tiling(self.vae, self.vae_tiling, video.shape[-2], video.shape[-1]):
            z = self.vae.encode(video.to(self.device, dtype)).latent_dist.mode().float()
        mean, std = self._latent_stats(z.device)
        return (z - mean) / std

    @torch.no_grad()
    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[F, H, W, 3]`` 0..1 → normalised latents ``[1, 16, f, h, w]`` (for denoise < 1, training)."""
        video = frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
        with on_device(self.vae, self.device, self.offload):
            return self._encode_pixels(video).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, 16, f, h, w]`` → frames ``[B, F, H, W, 3]`` float32 in 0..1."""
        from .vae_tiling import vae_tiling

        videos = []
        s = self.vae_spatial
        with on_device(self.vae, self.device, self.offload), \
                vae_tiling(self.vae, self.vae_tiling, latents.shape[-2] * s, latents.shape[-1] * s):
            dtype = next(self.vae.parameters()).dtype
            mean, std = self._latent_stats(self.device)
            for latent in latents:
                z = latent.unsqueeze(0).to(self.device, torch.float32) * std + mean
                video = self.vae.decode(z.to(dtype)).sample.float()
                if not torch.isfinite(video).all():  # fp16/bf16 VAEs overflow; clamp would make it black
                    raise VDOTInputError("vae", "VAE produced NaN/inf while decoding",
                                         "decode in fp32 (VAE precision fp32)")
                video = video.clamp(-1, 1)
                videos.append(((video[0] + 1) / 2).permute(1, 2, 3, 0).cpu())
        return torch.stack(videos)

    @torch.no_grad()
    def encode_vcu(self, vcu: VCU) -> EncodedVCU:
        """VACE context: [inactive 16 | reactive 16 | mask 64] channels, reference frames first.

        inactive = frames·(1 − m), reactive = frames·m, in [-1, 1], each VAE-encoded; the mask is
        8×8 pixel-unshuffled to 64 channels (s×s to s² for a VAE with spatial factor s) and resampled to the latent frame count (nearest-exact).
        Each reference image is one extra latent frame: its latent, zeros as "reactive", mask zeros.
        """
        from .vcu import validate_vcu

        validate_vcu(vcu)
        frames = vcu.frames.permute(3, 0, 1, 2).unsqueeze(0).float() * 2 - 1  # [1, 3, F, H, W]
        mask = vcu.masks.unsqueeze(0).unsqueeze(0).float()  # [1, 1, F, H, W]
        with on_device(self.vae, self.device, self.offload):
            inactive = self._encode_pixels(frames * (1 - mask))
            reactive = self._encode_pixels(frames * mask)
            context = torch.cat([inactive, reactive], dim=1)
            refs = []
            for image in vcu.references:
                ref = image.permute(2, 0, 1)[None, :, None].float() * 2 - 1  # [1, 3, 1, H, W]
                ref_latent = self._encode_pixels(ref)
                refs.append(torch.cat([ref_latent, torch.zeros_like(ref_latent)], dim=1))
        context = torch.cat([*refs, context], dim=2).cpu()
        latent_frames = context.shape[2] - len(refs)
        s = self.vae_spatial
        h, w = vcu.height // s, vcu.width // s
        # VACE thresholds the mask (> 0.5) for inactive/reactive but unshuffles the soft one.
        soft = vcu.soft_masks if vcu.soft_masks is not None else vcu.masks
        mask64 = self.unshuffle_mask(soft, latent_frames, s)
        if refs:
            mask64 = torch.cat([torch.zeros_like(mask64[:, :, : len(refs)]), mask64], dim=2)
        control = torch.cat([context, mask64], dim=1)
        return EncodedVCU(control, len(refs), (int(self.vae.config.z_dim), control.shape[2], h, w))

    @staticmethod
    def unshuffle_mask(masks: torch.Tensor, latent_frames: int, s: int) -> torch.Tensor:
        """``[F, H, W]`` mask → ``[1, s·s, latent_frames, H/s, W/s]``: s×s pixel-unshuffle (channel
        ``s·dy + dx``), then nearest-exact resampling of the frames (81 → 21 takes frames 1, 5, 9, …)."""
        f, h, w = masks.shape[0], masks.shape[1] // s, masks.shape[2] // s
        mask = masks.float().view(f, h, s, w, s).permute(2, 4, 0, 1, 3).flatten(0, 1)  # [s·s, F, h, w]
        return torch.nn.functional.interpolate(mask.unsqueeze(0), size=(latent_frames, h, w), mode="nearest-exact")

    # ---------------------------------------------------------------- transformer
    def velocity_fn(
        self, prompt_embeds: torch.Tensor, control: torch.Tensor, control_scale: float = 1.0
    ) -> VelocityFn:
        """``v(x_t, t)`` for a batch: the transformer with fixed text and VACE context."""
        transformer = self.transformer
        # The patch embedding is never stored in fp8 (diffusers skips it in layerwise casting), so its
        # dtype is the compute dtype for every precision, fp8 storage included.
        dtype = transformer.patch_embedding.weight.dtype
        num_vace = len(transformer.config.vace_layers)

        def velocity(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            batch = x_t.shape[0]
            text = prompt_embeds.to(self.device, dtype)
            if text.shape[0] == 1 and batch > 1:
                text = text.expand(batch, -1, -1)
            ctx = control.to(self.device, dtype).expand(batch, -1, -1, -1, -1)
            out = transformer(
                hidden_states=x_t.to(dtype),
                timestep=timestep,
                encoder_hidden_states=text,
                control_hidden_states=ctx,
                control_hidden_states_scale=torch.full((num_vace,), control_scale, device=self.device, dtype=dtype),
                return_dict=False,
            )[0]
            return out.float()

        return velocity

    def generate(
        self,
        vcu: VCU,
        *,
        seed: int = 0,
        num_videos: int = 1,
        preset: SamplerPreset | str = DEFAULT_PRESET,
        cfg: float = 1.0,
        control_scale: float = 1.0,
        denoise: float = 1.0,
        init_frames: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_embeds: torch.Tensor | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        return_latents: bool = False,
        vae_progress=None,
    ) -> torch.Tensor:
        """Generate ``num_videos`` videos for one VCU (seeds ``seed, seed+1, …``).

        ``preset``: a row of :data:`~vdot_nodes.core.sampling.SAMPLER_PRESETS` (by name) or a preset from
        :func:`~vdot_nodes.core.sampling.get_preset` with steps/shift overrides; default ``"vdot"``, the
        official 4-step sampler. ``cfg`` > 1 runs the negative prompt too (VDOT's guidance is distilled, so
        1 is its default). Returns frames ``[num_videos, F, H, W, 3]`` in 0..1.
        ``vae_progress(phase, chunks_done)`` is called before every VAE chunk ("encode" / "decode").
        """
        if isinstance(preset, str):
            preset = get_preset(preset)
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt([vcu.prompt])
        if cfg != 1.0 and negative_embeds is None:
            negative_embeds = self.encode_prompt([vcu.negative_prompt])
        for name, embeds in (("prompt_embeds", prompt_embeds), ("negative_embeds", negative_embeds)):
            if embeds is not None and (embeds.ndim != 3 or embeds.shape[-1] != self.text_dim):
                raise VDOTInputError(
                    name, f"text embeddings of shape {tuple(embeds.shape)} do not fit this model "
                    f"(it takes [batch, tokens, {self.text_dim}])",
                    "encode the prompt with the text encoder that belongs to this model (UMT5-XXL for Wan2.1)",
                )
            if embeds is not None and not torch.isfinite(embeds).all():
                raise VDOTInputError(name, "text embeddings contain NaN/inf", "re-encode the prompt; check the text encoder weights")
        self._release_lazy("text_encoder")  # before the transformer loads: one large component at a time
        from .vae_tiling import vae_chunks
        # Cancel is honoured between every phase, not only between steps: at 832x480x81 the VAE
        # encode and decode take as long as several transformer calls.
        check_cancel(cancel)
        with vae_chunks(self.vae, cancel, vae_progress):  # cancel honoured between VAE chunks too
            encoded = self.encode_vcu(vcu)
        check_cancel(cancel)
        noise = SeededNoise([seed + i for i in range(num_videos)])
        init_latents = None
        if denoise < 1.0:
            if init_frames is None:
                raise VDOTInputError("denoise", f"denoise {denoise} < 1 needs input frames", "connect a video or set 1.0")
            with vae_chunks(self.vae, cancel, vae_progress):
                init_latents = self.encode_latents(init_frames)
            if encoded.num_reference_frames:
                ref = torch.zeros_like(init_latents[:, :, : encoded.num_reference_frames])
                init_latents = torch.cat([ref, init_latents], dim=2)
        with self._transformer_on_device():
            cond = self.velocity_fn(prompt_embeds, encoded.control, control_scale)
            uncond = self.velocity_fn(negative_embeds, encoded.control, control_scale) if cfg != 1.0 else None
            velocity = cfg_velocity(cond, uncond, cfg)
            with torch.no_grad():
                latents = sample(
                    velocity, noise, encoded.latent_shape, preset, init_latents=init_latents, denoise=denoise,
                    device=self.device, progress=progress, cancel=cancel,
                )
        latents = latents[:, :, encoded.num_reference_frames :].float().cpu()
        self._release_lazy("transformer")
        if not torch.isfinite(latents).all():
            raise VDOTInputError(
                "model", "the sampler produced NaN/inf latents", "try another precision (bf16/fp32) or check the weights"
            )
        if return_latents:
            return latents
        check_cancel(cancel)
        with vae_chunks(self.vae, cancel, vae_progress):
            return self.decode(latents)
