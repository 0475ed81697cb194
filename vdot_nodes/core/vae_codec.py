"""The VAE step: frames ↔ normalised latents, with diffusers' spatial tiling above 480p
(``vae_tiling.py``) and an optional Progress per chunk (``vae_tiling.vae_chunks``).

Used by the pipeline (VACE context, video-to-video start, decoding), training (real-video latents) and
the reward model; it needs only the VAE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import VDOTInputError
from .placement import compute_device, on_device

VAE_SPATIAL = 8  # Wan2.1 VAE compression; a VAE whose config says otherwise (scale_factor_*) wins
VAE_TEMPORAL = 4


class VAECodec:
    """An ``AutoencoderKLWan`` on ``device`` (offloaded to the CPU between uses with ``offload``).

    Latents are normalised with the VAE's ``latents_mean`` / ``latents_std``, as the transformer sees
    them. ``tiling``: ``auto`` (tiles above 480p), ``on`` or ``off``.
    """

    def __init__(self, vae, *, device: str | torch.device | None = None, offload: bool = False, tiling: str = "auto"):
        self.vae, self.device, self.offload, self.tiling = vae, compute_device(device), offload, tiling

    # ------------------------------------------------------------------ geometry
    @property
    def z_dim(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def spatial(self) -> int:
        """Pixels per latent pixel (8 for Wan2.1's VAE; diffusers keeps it in ``scale_factor_spatial``)."""
        return int(getattr(self.vae.config, "scale_factor_spatial", None) or VAE_SPATIAL)

    @property
    def temporal(self) -> int:
        """Frames per latent frame after the first (4 for Wan2.1's VAE)."""
        return int(getattr(self.vae.config, "scale_factor_temporal", None) or VAE_TEMPORAL)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[C, f, h, w]`` of the normalised latents of a ``num_frames``×``height``×``width`` video."""
        return (self.z_dim, (num_frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial)

    def latent_stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=device).view(1, cfg.z_dim, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=device).view(1, cfg.z_dim, 1, 1, 1)
        return mean, std

    # ------------------------------------------------------------------ running
    def on_device(self) -> contextlib.AbstractContextManager:
        """The VAE on the device for a block of :meth:`encode_pixels` calls."""
        return on_device(self.vae, self.device, self.offload)

    @contextlib.contextmanager
    def chunks(self, cancel=None, progress=None) -> Iterator[None]:
        """Within the block every VAE chunk honours ``cancel`` and reports ``progress`` (``vae_tiling.vae_chunks``)."""
        from .vae_tiling import vae_chunks

        with vae_chunks(self.vae, cancel, progress):
            yield

    def encode_pixels(self, video: torch.Tensor) -> torch.Tensor:
        """[1, 3, F, H, W] in [-1, 1] → normalised latents [1, 16, f, h, w] (posterior mode, deterministic).
        The VAE must be on the device (:meth:`on_device`)."""
        from .vae_tiling import vae_tiling

        dtype = next(self.vae.parameters()).dtype
        with vae_tiling(self.vae, self.tiling, video.shape[-2], video.shape[-1]):
            z = self.vae.encode(video.to(self.device, dtype)).latent_dist.mode().float()
        mean, std = self.latent_stats(z.device)
        return (z - mean) / std

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[F, H, W, 3]`` 0..1 → normalised latents ``[1, 16, f, h, w]`` on the CPU."""
        video = frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
        with self.on_device():
            return self.encode_pixels(video).cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, 16, f, h, w]`` → frames ``[B, F, H, W, 3]`` float32 in 0..1."""
        from .vae_tiling import vae_tiling

        videos = []
        s = self.spatial
        with self.on_device(), vae_tiling(self.vae, self.tiling, latents.shape[-2] * s, latents.shape[-1] * s):
            dtype = next(self.vae.parameters()).dtype
            mean, std = self.latent_stats(self.device)
            for latent in latents:
                z = latent.unsqueeze(0).to(self.device, torch.float32) * std + mean
                video = self.vae.decode(z.to(dtype)).sample.float()
                if not torch.isfinite(video).all():  # fp16/bf16 VAEs overflow; clamp would make it black
                    raise VDOTInputError("vae", "VAE produced NaN/inf while decoding",
                                         "decode in fp32 (VAE precision fp32)")
                video = video.clamp(-1, 1)
                videos.append(((video[0] + 1) / 2).permute(1, 2, 3, 0).cpu())
        return torch.stack(videos)


__all__ = ["VAECodec", "VAE_SPATIAL", "VAE_TEMPORAL"]
