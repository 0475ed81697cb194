r"""Relativistic GAN losses (paper eqs. 11-12) and an approximate R1 penalty.

``D`` is the register-token discriminator on fake-score features (:mod:`training.discriminator`);
real videos are VAE-encoded and noised at the same t as the generator samples::

    L_D = softplus(−(D(x_t^real) − D(x_t^fake))).mean()     (discriminator / critic step)
    L_G = softplus(−(D(x_t^fake) − D(x_t^real))).mean()     (generator step)

softplus(−z) = −log σ(z): the relativistic pairing (Jolicoeur-Martineau 2019; R3GAN) compares each
fake with a real of the same batch position, so both logit tensors must be paired ``[B]``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["gan_d_loss", "gan_g_loss", "approx_r1_penalty"]


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"relativistic losses need paired logits, got {tuple(a.shape)} vs {tuple(b.shape)}")


def gan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``softplus(−(D(real_t) − D(fake_t))).mean()``; minimising raises ``D(real) − D(fake)``."""
    _check(d_real, d_fake)
    return F.softplus(-(d_real.float() - d_fake.float())).mean()


def gan_g_loss(d_fake: torch.Tensor, d_real: torch.Tensor) -> torch.Tensor:
    """``softplus(−(D(fake_t) − D(real_t))).mean()``; minimising raises ``D(fake) − D(real)``.

    ``d_real`` may be detached (the generator step does not train D); gradients reach the generator
    through ``d_fake``.
    """
    _check(d_fake, d_real)
    return F.softplus(-(d_fake.float() - d_real.float())).mean()


def approx_r1_penalty(d_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                      sigma_noise: float = 0.01, d_x: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    r"""Approximate R1 (or R2 when ``x`` is fake): ``mean((D(x) − D(x + σ_n·ε))²)``.

    The exact R1 ``‖∇_x D(x)‖²`` needs a double backward through the 14B fake score, which FSDP and
    flash attention do not support well. A finite difference with a small Gaussian perturbation
    penalises the same local sensitivity, since ``E_ε (D(x+σε) − D(x))² ≈ σ²‖∇D(x)‖²`` — the
    "approximate R1" of Seaweed-APT2 / Self-Forcing-Plus. It is not divided by ``σ_n²``: scale
    the weight accordingly (those works use σ_n ≈ 0.01 and a weight of order 100-1000).

    Args:
        d_fn: maps inputs to logits ``[B]`` (e.g. fake-score forward + discriminator head).
        x: the (noised) inputs of D; real for R1, fake for R2. Treated as constants.
        d_x: ``D(x)`` if already computed (keeps its graph, saves one forward).
        noise: the perturbation ε (e.g. drawn from a trainer's resumable RNG); else drawn with ``generator``.
    """
    x = x.detach()
    if d_x is None:
        d_x = d_fn(x)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    d_pert = d_fn(x + sigma_noise * noise.to(x.dtype))
    return (d_x.float() - d_pert.float()).square().mean()
