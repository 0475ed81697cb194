"""DOLLAR's latent reward model: steer the generator with any reward, differentiable or not.

A reward ``r(frames)`` (an aesthetic scorer, a VBench metric, a user's script) usually needs the
decoded video and often has no gradient. DOLLAR fits a small *latent* reward model ``R_φ`` that
reads VAE latents ``z`` [B, 16, f, h, w] directly,

    φ* = argmin_φ  E_z [ (R_φ(z) - r(D(z)))² ]          (train_reward_model; D = VAE decoder, no grad)

and then fine-tunes the generator ``G_θ`` through ``R_φ`` alone, never decoding:

    L_reward(θ) = -E[ R_φ(G_θ(noise)) ]                 (reward_loss; φ frozen)

so the reward's gradient costs one small network instead of the VAE decoder plus the scorer.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError

__all__ = ["LatentRewardModel", "reward_loss", "reward_model_loss", "train_reward_model"]


class LatentRewardModel(nn.Module):
    """``R_φ(z)``: Conv3d features over the latent video, global average pooling, an MLP to one scalar.

    Two 3-D convolutions (the second halving h and w) see local spatio-temporal structure; pooling
    makes the model independent of the latent's size, so one reward model serves every resolution
    and length. Inputs are cast to the model's dtype; output is ``[B]`` float32.
    """

    def __init__(self, in_channels: int = 16, hidden: int = 64, mlp_hidden: int = 128):
        super().__init__()
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, hidden, kernel_size=3, padding=1),
            nn.SiLU(),
            nn.Conv3d(hidden, hidden, kernel_size=3, stride=(1, 2, 2), padding=1),
            nn.SiLU(),
        )
        self.pool = nn.AdaptiveAvgPool3d(1)
        # The raw channel means go to the head too: rewards that are (close to) linear in the latent,
        # like brightness, are then exactly representable whatever the convolutions learn.
        self.head = nn.Sequential(nn.Linear(hidden + in_channels, mlp_hidden), nn.SiLU(), nn.Linear(mlp_hidden, 1))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.in_channels:
            raise VDOTInputError("latents", f"expected [B, {self.in_channels}, f, h, w], got {list(latents.shape)}",
                                 "pass VAE latents (16 channels for Wan2.1)")
        z = latents.to(self.head[0].weight.dtype)
        pooled = torch.cat([self.pool(self.features(z)).flatten(1), z.mean(dim=(2, 3, 4))], dim=1)
        return self.head(pooled).squeeze(1).float()


def reward_model_loss(reward_model: nn.Module, latents: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """``mean((R_φ(z) - r)²)`` — the regression that teaches the reward model."""
    pred = reward_model(latents)
    target = torch.as_tensor(rewards, dtype=pred.dtype, device=pred.device).reshape(pred.shape)
    return (pred - target.detach()).square().mean()


def reward_loss(reward_model: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``L_reward = -mean(R_φ(z))``: minimise to raise the predicted reward of generated latents.

    Gradients flow into ``latents`` (hence the generator); keep ``reward_model`` frozen
    (``requires_grad_(False)``) so this loss does not move it.
    """
    return -reward_model(latents).mean()


def train_reward_model(
    reward_model: nn.Module,
    sample_latents: Callable[[int], torch.Tensor],
    reward_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    steps: int,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    progress: bool | Callable[[int, int], None] = True,
    cancel: Callable[[], bool] | None = None,
) -> list[float]:
    """Fit ``R_φ`` to a (possibly non-differentiable) reward; returns the loss of every step.

    Each step draws ``z = sample_latents(step)`` (e.g. latents from the current generator, or
    VAE-encoded data), scores ``r = reward_fn(decode(z))`` without gradient (``decode`` defaults to
    the identity: rewards defined on latents), and takes one optimizer step on
    :func:`reward_model_loss`. ``progress``: True for a tqdm bar, or a ``fn(done, total)`` callback.
    ``cancel()`` is checked between steps (raises :class:`VDOTCancelled`).
    """
    if steps < 1:
        raise VDOTInputError("steps", f"must be at least 1, got {steps}", "train the reward model for some steps")
    optimizer = optimizer or torch.optim.AdamW(reward_model.parameters(), lr=lr, weight_decay=0.0)
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="reward model", unit="step")
    losses: list[float] = []
    reward_model.train()
    try:
        for step in range(steps):
            if cancel is not None and cancel():
                raise VDOTCancelled(f"reward-model training cancelled after {step} of {steps} steps")
            latents = sample_latents(step).detach()
            with torch.no_grad():
                rewards = reward_fn(decode(latents) if decode is not None else latents)
            loss = reward_model_loss(reward_model, latents, rewards)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(mse=f"{losses[-1]:.4g}")
            elif callable(progress):
                progress(step + 1, steps)
    finally:
        if bar is not None:
            bar.close()
        optimizer.zero_grad(set_to_none=True)  # no stale gradients left on a model that is then frozen
        reward_model.eval()
    return losses
