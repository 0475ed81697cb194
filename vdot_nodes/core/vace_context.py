"""The VACE-context step: a VCU → what the transformer needs besides the prompt.

Context channels: [inactive z | reactive z | s×s-unshuffled mask] (96 for Wan2.1: 16 + 16 + 64),
reference images first as extra latent frames. Needs only the VAE step (:class:`~.vae_codec.VAECodec`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .vae_codec import VAECodec
from .vcu import VCU


@dataclass
class EncodedVCU:
    """What the transformer needs from a VCU besides the prompt."""

    control: torch.Tensor  # [1, 96, R + f, h, w] VACE context (R reference frames first)
    num_reference_frames: int
    latent_shape: tuple[int, int, int, int]  # per-sample noise shape [16, R + f, h, w]


@torch.no_grad()
def encode_vcu(codec: VAECodec, vcu: VCU) -> EncodedVCU:
    """VACE context: [inactive 16 | reactive 16 | mask 64] channels, reference frames first.

    inactive = frames·(1 − m), reactive = frames·m, in [-1, 1], each VAE-encoded; the mask is
    8×8 pixel-unshuffled to 64 channels (s×s to s² for a VAE with spatial factor s) and resampled to the
    latent frame count (nearest-exact). Each reference image is one extra latent frame: its latent, zeros
    as "reactive", mask zeros.
    """
    from .vcu import validate_vcu

    validate_vcu(vcu)
    frames = vcu.frames.permute(3, 0, 1, 2).unsqueeze(0).float() * 2 - 1  # [1, 3, F, H, W]
    mask = vcu.masks.unsqueeze(0).unsqueeze(0).float()  # [1, 1, F, H, W]
    with codec.on_device():
        inactive = codec.encode_pixels(frames * (1 - mask))
        reactive = codec.encode_pixels(frames * mask)
        context = torch.cat([inactive, reactive], dim=1)
        refs = []
        for image in vcu.references:
            ref = image.permute(2, 0, 1)[None, :, None].float() * 2 - 1  # [1, 3, 1, H, W]
            ref_latent = codec.encode_pixels(ref)
            refs.append(torch.cat([ref_latent, torch.zeros_like(ref_latent)], dim=1))
    context = torch.cat([*refs, context], dim=2).cpu()
    latent_frames = context.shape[2] - len(refs)
    s = codec.spatial
    h, w = vcu.height // s, vcu.width // s
    # VACE thresholds the mask (> 0.5) for inactive/reactive but unshuffles the soft one.
    soft = vcu.soft_masks if vcu.soft_masks is not None else vcu.masks
    mask64 = unshuffle_mask(soft, latent_frames, s)
    if refs:
        mask64 = torch.cat([torch.zeros_like(mask64[:, :, : len(refs)]), mask64], dim=2)
    control = torch.cat([context, mask64], dim=1)
    return EncodedVCU(control, len(refs), (codec.z_dim, control.shape[2], h, w))


def check_vae_fits_transformer(config, codec: VAECodec) -> None:
    """The transformer's latent width (and VACE context width) must be what this VAE produces."""
    z, s = codec.z_dim, codec.spatial
    expected = {"in_channels": z}
    if getattr(config, "vace_in_channels", None) is not None:
        expected["vace_in_channels"] = 2 * z + s * s  # inactive + reactive latents + s×s-unshuffled mask
    for key, want in expected.items():
        have = int(getattr(config, key))
        if have != want:
            from .errors import VDOTInputError

            raise VDOTInputError(
                "vae", f"the transformer expects {key}={have}, but this VAE ({z} latent channels, {s}× spatial "
                f"compression) gives {want}", "load the VAE that belongs to this transformer (the Wan2.1 VAE for "
                "Wan2.1-VACE; the toy VAE for the toy model)")


def unshuffle_mask(masks: torch.Tensor, latent_frames: int, s: int) -> torch.Tensor:
    """``[F, H, W]`` mask → ``[1, s·s, latent_frames, H/s, W/s]``: s×s pixel-unshuffle (channel
    ``s·dy + dx``), then nearest-exact resampling of the frames (81 → 21 takes frames 1, 5, 9, …)."""
    f, h, w = masks.shape[0], masks.shape[1] // s, masks.shape[2] // s
    mask = masks.float().view(f, h, s, w, s).permute(2, 4, 0, 1, 3).flatten(0, 1)  # [s·s, F, h, w]
    return torch.nn.functional.interpolate(mask.unsqueeze(0), size=(latent_frames, h, w), mode="nearest-exact")


__all__ = ["EncodedVCU", "check_vae_fits_transformer", "encode_vcu", "unshuffle_mask"]
