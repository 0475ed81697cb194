"""Distribution Matching Distillation (DMD) loss.

Conventions (Wan flow matching): ``x_t = (1 - σ)·x0 + σ·ε``, the networks predict ``v = ε - x0``
and ``x0 = x_t - σ·v``. ``x̂0`` is the generator output; ``f`` and ``r`` are the fake- and
real-score x0-predictions at the same noised ``x_t`` (the real one with CFG and the negative prompt).

The DMD gradient (paper eqs. 4-6, DMD2 / Self-Forcing normalisation) is, per sample b,

    g_b = (f_b - r_b) / mean_{c,f,h,w} |x̂0_b - r_b|

and the loss is the stop-gradient MSE whose gradient w.r.t. ``x̂0`` equals ``g / numel``:

    L_DMD = ½ · mean((x̂0 - sg(x̂0 - g))²)

The released VDOT code instead weights by the noise level (``normalizer="sigma"``, its
``bi_dmd_gan.py`` ``_compute_kl_grad``): ``g_b = (f_b − r_b)·σ_b`` with ``σ_b = t_b/1000``, no mean-abs term.

Everything is computed in fp64 by default (fp32 at least): the normaliser and the difference of two
nearly equal predictions are precision-sensitive, and bf16 here visibly biases the update.
"""

from __future__ import annotations

import torch

__all__ = ["DMD_NORMALIZERS", "dmd_normalizer", "dmd_gradient", "stopgrad_mse", "dmd_loss"]

DMD_NORMALIZERS = ("meanabs", "sigma")


def dmd_normalizer(x0_gen: torch.Tensor, real_x0: torch.Tensor, *, eps: float = 1e-8,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Per-sample ``mean|x̂0 - r|`` over all non-batch dims, shaped to broadcast ``[B, 1, ...]``.

    Detached; clamped below by ``eps`` so a generator that already matches the teacher exactly does
    not divide by zero.
    """
    diff = (x0_gen.detach().to(dtype) - real_x0.detach().to(dtype)).abs()
    dims = tuple(range(1, diff.ndim))
    norm = diff.mean(dim=dims, keepdim=True) if dims else diff
    return norm.clamp_min(eps)


def dmd_gradient(x0_gen: torch.Tensor, fake_x0: torch.Tensor, real_x0: torch.Tensor, *,
                 eps: float = 1e-8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``g = (f - r) / mean|x̂0 - r|`` per sample (detached, in ``dtype``)."""
    norm = dmd_normalizer(x0_gen, real_x0, eps=eps, dtype=dtype)
    g = (fake_x0.detach().to(dtype) - real_x0.detach().to(dtype)) / norm
    return torch.nan_to_num(g)


def stopgrad_mse(x0_gen: torch.Tensor, grad: torch.Tensor, *,
                 dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``½ · mean((x̂0 - sg(x̂0 - g))²)``: a scalar whose gradient w.r.t. ``x̂0`` is ``g / numel``."""
    x = x0_gen.to(dtype)
    target = (x - grad.to(dtype)).detach()
    return 0.5 * (x - target).square().mean()


def dmd_loss(x0_gen: torch.Tensor, fake_x0: torch.Tensor, real_x0: torch.Tensor, *,
             normalizer: str = "meanabs", sigma: torch.Tensor | None = None,
             eps: float = 1e-8, dtype: torch.dtype = torch.float64
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DMD generator loss ``L = ½·mean((x̂0 - sg(x̂0 - g))²)``.

    Args:
        x0_gen: generator output x̂0 ``[B, ...]`` (carries the generator's graph).
        fake_x0, real_x0: fake / real score x0-predictions at the same x_t (treated as constants).
        normalizer: ``"meanabs"`` — ``g = (f - r)/mean|x̂0 - r|`` per sample (DMD paper, Self-Forcing);
            ``"sigma"`` — ``g = (f - r)·σ`` per sample (the released VDOT code), ``sigma`` ``[B]`` required.
        eps: floor of the mean-abs normaliser.
        dtype: compute dtype (fp64 default; pass fp32 to save memory, never bf16).

    Returns:
        ``(loss, logs)``: the scalar loss in ``dtype`` and detached diagnostics
        ``dmd_grad_norm`` (‖g‖₂ over the batch), ``dmd_grad_abs_mean`` (mean|g|) and
        ``dmd_normalizer`` (mean over samples of the factor dividing ``f - r``).
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dmd_loss must be computed in fp32 or fp64, got {dtype}")
    if not (x0_gen.shape == fake_x0.shape == real_x0.shape):
        raise ValueError(f"shape mismatch: {tuple(x0_gen.shape)}, {tuple(fake_x0.shape)}, "
                         f"{tuple(real_x0.shape)}")
    diff = fake_x0.detach().to(dtype) - real_x0.detach().to(dtype)
    if normalizer == "meanabs":
        norm = dmd_normalizer(x0_gen, real_x0, eps=eps, dtype=dtype)
        g = torch.nan_to_num(diff / norm)
    elif normalizer == "sigma":
        if sigma is None:
            raise ValueError("normalizer='sigma' needs the per-sample sigma")
        s = torch.as_tensor(sigma, dtype=dtype, device=diff.device).reshape(-1, *([1] * (diff.ndim - 1)))
        norm = 1.0 / s
        g = torch.nan_to_num(diff * s)
    else:
        raise ValueError(f"normalizer must be one of {DMD_NORMALIZERS}, got {normalizer!r}")
    loss = stopgrad_mse(x0_gen, g, dtype=dtype)
    logs = {
        "dmd_grad_norm": g.norm().detach(),
        "dmd_grad_abs_mean": g.abs().mean().detach(),
        "dmd_normalizer": norm.mean().detach(),
    }
    return loss, logs
