r"""Fake-score (critic) denoising loss on generator samples (paper eq. 13, appendix 8.2).

The fake score ``s_fake`` is kept on the generator's distribution by ordinary flow-matching
training on (detached) generator outputs ``x̂0``::

    x_t = (1 − σ)·x̂0 + σ·ε,        target v = ε − x̂0
    L_critic = mean(w(σ) · (v_pred − (ε − x̂0))²)

Weighting choice: uniform in v-space (``weighting="none"``, the Wan / Self-Forcing "flow" loss).
Since ``x0_pred = x_t − σ·v_pred``, an x0-space MSE equals the v-space MSE times ``σ²``; the
v-space loss therefore up-weights low-noise timesteps relative to x0-matching (``"x0"``, i.e.
``w = σ²``), which is what the DMD gradient consumes at the timesteps where the fake and real
scores disagree in detail. ``weighting="x0"`` is available for experiments; when the network
output is an x0-prediction (``pred_type="x0"``) it is converted to ``v = (x_t − x0)/σ`` first
(σ is floored at ``min_sigma``).
"""

from __future__ import annotations

import torch

__all__ = ["critic_denoising_loss", "flow_matching_noise"]


def _expand(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float32, device=like.device)
    if s.ndim == 0:
        return s
    return s.reshape(s.shape[0], *([1] * (like.ndim - 1)))


def flow_matching_noise(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """``x_t = (1 − σ)·x0 + σ·ε`` with σ a scalar or per-sample ``[B]``."""
    s = _expand(sigma, x0).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def critic_denoising_loss(pred: torch.Tensor, x0_gen: torch.Tensor, noise: torch.Tensor, sigma,
                          *, pred_type: str = "v", weighting: str = "none",
                          min_sigma: float = 1e-3) -> torch.Tensor:
    """Flow-matching MSE of the fake score on generator samples (computed in fp32).

    Args:
        pred: fake-score output at ``x_t = (1−σ)x̂0 + σε`` — a velocity (``pred_type="v"``) or an
            x0-prediction (``"x0"``).
        x0_gen: generator samples x̂0 (detached here: this loss trains the critic only).
        noise: the ε used to build x_t.
        sigma: σ ∈ (0, 1], scalar or ``[B]``.
        weighting: ``"none"`` — ``mean((v − (ε − x̂0))²)`` (default); ``"x0"`` — ``σ²``-weighted,
            i.e. ``mean((x0_pred − x̂0)²)``.
    """
    x0 = x0_gen.detach().float()
    eps = noise.detach().float()
    s = _expand(sigma, x0)
    if pred_type == "v":
        v_pred = pred.float()
    elif pred_type == "x0":
        x_t = (1 - s) * x0 + s * eps
        v_pred = (x_t - pred.float()) / s.clamp_min(min_sigma)
    else:
        raise ValueError(f"pred_type must be 'v' or 'x0', got {pred_type!r}")
    err = (v_pred - (eps - x0)).square()
    if weighting == "none":
        return err.mean()
    if weighting == "x0":
        return (s.square() * err).mean()
    raise ValueError(f"weighting must be 'none' or 'x0', got {weighting!r}")
