"""DOLLAR's latent reward model: steer the generator with any reward, differentiable or not.

A reward ``r(frames)`` (an aesthetic scorer, a VBench metric, a user's script) usually needs the
decoded video and often has no gradient. DOLLAR fits a small *latent* reward model ``R_φ`` that
reads VAE latents ``z`` [B, 16, f, h, w] directly,

    φ* = argmin_φ  E_z [ (R_φ(z) - r(D(z)))² ]          (train_reward_model; D = VAE decoder, no grad)

and then fine-tunes the generator ``G_θ`` through ``R_φ`` alone, never decoding:

    L_reward(θ) = -E[ R_φ(G_θ(noise)) ]                 (reward_loss; φ frozen)

so the reward's gradient costs one small network instead of the VAE decoder plus the scorer.

Two ways to fit ``R_φ``: :func:`train_reward_model` calls a reward function on latents it draws
(rewards you can compute), :func:`fit_reward_model` regresses on fixed labelled latents (scores you
have, e.g. human ratings) — the latter is what ``python -m training.reward`` runs on a manifest whose
lines carry a ``reward``. :func:`save_reward_model` / :func:`load_reward_model` store the model as one
``.safetensors`` file (weights + its constructor config in the metadata; never pickle), the file the
trainer's ``models.reward_model`` reads (``loss.reward_weight``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError, one_line_parser_class, run_subcommand
from vdot_nodes.core.seeding import seeded

__all__ = [
    "LatentRewardModel", "fit_reward_model", "load_reward_model", "reward_loss", "reward_main", "reward_model_loss",
    "save_reward_model", "train_reward_model",
]

METADATA_KEY = "vdot_reward_model"
"""Safetensors metadata entry of a reward-model file: JSON ``{"format": 1, "class": ..., "config": {...}}``."""
FORMAT_VERSION = 1
TRAIN_HINT = "train one with `python -m training.reward --manifest M --out reward.safetensors` (see training/README.md)"


class LatentRewardModel(nn.Module):
    """``R_φ(z)``: Conv3d features over the latent video, global average pooling, an MLP to one scalar.

    Two 3-D convolutions (the second halving h and w) see local spatio-temporal structure; pooling
    makes the model independent of the latent's size, so one reward model serves every resolution
    and length. Inputs are cast to the model's dtype; output is ``[B]`` float32.
    """

    def __init__(self, in_channels: int = 16, hidden: int = 64, mlp_hidden: int = 128):
        super().__init__()
        self.in_channels = in_channels
        self.config = {"in_channels": int(in_channels), "hidden": int(hidden), "mlp_hidden": int(mlp_hidden)}
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
    :func:`reward_model_loss`. ``progress``: True for a tqdm bar, a ``fn(done, total)`` callback or a
    :class:`~vdot_nodes.core.progress.Progress`.
    ``cancel()`` is checked between steps (raises :class:`VDOTCancelled`).
    """
    if steps < 1:
        raise VDOTInputError("steps", f"must be at least 1, got {steps}", "train the reward model for some steps")
    optimizer = optimizer or torch.optim.AdamW(reward_model.parameters(), lr=lr, weight_decay=0.0)

    def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        latents = sample_latents(step).detach()
        with torch.no_grad():
            return latents, reward_fn(decode(latents) if decode is not None else latents)

    return _regress(reward_model, next_batch, steps, optimizer, progress, cancel)


def _regress(reward_model: nn.Module, next_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]], steps: int,
             optimizer: torch.optim.Optimizer, progress: bool | Callable[[int, int], None],
             cancel: Callable[[], bool] | None) -> list[float]:
    """``steps`` optimizer steps of :func:`reward_model_loss` on ``next_batch(step)`` = (latents, rewards);
    returns every step's loss and leaves the model in eval mode with no gradients."""
    from vdot_nodes.core.progress import Progress, TqdmProgress, as_progress

    if progress is True:
        bar = TqdmProgress(steps, "reward model")
    else:
        bar = as_progress(progress if isinstance(progress, Progress) or callable(progress) else None)
        bar.set_total(steps)
    losses: list[float] = []
    reward_model.train()
    try:
        for step in range(steps):
            if cancel is not None and cancel():
                raise VDOTCancelled(f"reward-model training cancelled after {step} of {steps} steps")
            bar.check_cancel()
            latents, rewards = next_batch(step)
            loss = reward_model_loss(reward_model, latents, rewards)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.note(f"mse={losses[-1]:.4g}")
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)  # no stale gradients left on a model that is then frozen
        reward_model.eval()
    return losses


def fit_reward_model(
    reward_model: nn.Module,
    latents: torch.Tensor,
    rewards: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool | Callable[[int, int], None] = True,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Fit ``R_φ`` to labelled latents ``[N, C, f, h, w]`` / rewards ``[N]`` by minibatch regression.

    A seeded ``val_fraction`` of the samples (at least one when there are ≥ 2 and the fraction is > 0) is
    held out: the returned dict has ``train_losses`` (per step), ``val_mse`` and ``val_baseline_mse`` —
    the MSE of predicting the training mean, the number a useful reward model must beat — plus the
    label statistics (``n_train``, ``n_val``, ``reward_mean``, ``reward_std``). Leaves the model in eval mode.
    """
    latents = torch.as_tensor(latents).float()
    rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    n = latents.shape[0]
    if n != rewards.shape[0] or n < 1:
        raise VDOTInputError("rewards", f"{n} latents but {rewards.shape[0]} rewards", "give one reward per latent")
    if steps < 1:
        raise VDOTInputError("steps", f"must be at least 1, got {steps}", "train the reward model for some steps")
    if not 0 <= val_fraction < 1:
        raise VDOTInputError("val_fraction", f"must be in [0, 1), got {val_fraction}", "use e.g. 0.1, or 0 for no validation")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=gen)
    n_val = min(n - 1, max(1, round(n * val_fraction))) if val_fraction > 0 and n >= 2 else 0
    val, train = order[:n_val], order[n_val:]
    device = next(reward_model.parameters()).device
    optimizer = torch.optim.AdamW(reward_model.parameters(), lr=lr, weight_decay=0.0)

    def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pick = train[torch.randperm(len(train), generator=gen)[:batch_size]]
        return latents[pick].to(device), rewards[pick].to(device)

    losses = _regress(reward_model, next_batch, steps, optimizer, progress, cancel)
    result = {"train_losses": losses, "n_train": len(train), "n_val": n_val,
              "reward_mean": float(rewards[train].mean()), "reward_std": float(rewards[train].std()) if len(train) > 1 else 0.0,
              "val_mse": None, "val_baseline_mse": None}
    if n_val:
        with torch.no_grad():
            pred = torch.cat([reward_model(latents[val[i:i + batch_size]].to(device)).cpu()
                              for i in range(0, n_val, batch_size)])
        result["val_mse"] = float((pred - rewards[val]).square().mean())
        result["val_baseline_mse"] = float((rewards[train].mean() - rewards[val]).square().mean())
    return result


# ------------------------------------------------------------------------------------------------
# Files


def save_reward_model(reward_model: LatentRewardModel, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``reward_model`` as one ``.safetensors`` file: fp32 weights, its config in the metadata.

    ``metadata``: extra string-able entries (e.g. training statistics), stored as JSON under ``vdot_reward_info``.
    Written atomically (a temporary file renamed into place); replaces an existing file. Returns the path.
    """
    from vdot_nodes.core.atomic import atomic_save_safetensors

    config = getattr(reward_model, "config", None)
    if not isinstance(reward_model, LatentRewardModel) or not isinstance(config, dict):
        raise VDOTInputError("reward_model", f"expected a LatentRewardModel, got {type(reward_model).__name__}",
                             "save the model training.reward.LatentRewardModel builds")
    path = Path(path)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in reward_model.state_dict().items()}
    meta = {METADATA_KEY: json.dumps({"format": FORMAT_VERSION, "class": "LatentRewardModel", "config": config})}
    if metadata:
        meta["vdot_reward_info"] = json.dumps(metadata, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save_safetensors(tensors, path, meta, overwrite=True)


def load_reward_model(path: str | os.PathLike, *, input_name: str = "reward_model", device="cpu") -> LatentRewardModel:
    """Read a file written by :func:`save_reward_model`: a frozen (``requires_grad=False``), eval-mode model.

    Every problem — missing file, not safetensors, no reward-model metadata, wrong or missing weights —
    is a :class:`VDOTInputError` naming ``input_name`` (e.g. ``models.reward_model``) and the fix.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise VDOTInputError(input_name, f"{path} not found", f"check the path, or {TRAIN_HINT}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a file that is not safetensors
        raise VDOTInputError(input_name, f"{path} is not a readable .safetensors file ({exc})",
                             f"give a file written by training.reward.save_reward_model; {TRAIN_HINT}") from None
    if METADATA_KEY not in metadata:
        raise VDOTInputError(input_name, f"{path} is not a VDOT latent reward model (no {METADATA_KEY!r} metadata)",
                             f"give a file written by training.reward.save_reward_model; {TRAIN_HINT}")
    try:
        info = json.loads(metadata[METADATA_KEY])
        config = {k: int(info["config"][k]) for k in ("in_channels", "hidden", "mlp_hidden")}
    except (ValueError, KeyError, TypeError) as exc:
        raise VDOTInputError(input_name, f"{path}: its {METADATA_KEY!r} metadata is unreadable ({exc!r})",
                             f"re-save the model with training.reward.save_reward_model; {TRAIN_HINT}") from None
    if int(info.get("format", 0)) > FORMAT_VERSION:
        raise VDOTInputError(input_name, f"{path} has reward-model format {info.get('format')}, this code reads "
                             f"{FORMAT_VERSION}", "update ComfyUI-VDOT")
    model = LatentRewardModel(**config)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label} {keys[:5]}{' ...' if len(keys) > 5 else ''}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)) if keys]
        raise VDOTInputError(input_name, f"{path} does not hold a LatentRewardModel{config}: " + "; ".join(parts),
                             f"give the file save_reward_model wrote, unmodified; {TRAIN_HINT}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).requires_grad_(False).eval()


# ------------------------------------------------------------------------------------------------
# CLI: vdot train-reward --manifest M --out F  (= python -m training.reward ...)


def _parser():
    p = one_line_parser_class()(
        prog="vdot train-reward",
        description="Fit a DOLLAR latent reward model to the \"reward\" labels of a manifest's videos (VAE latents → "
                    "reward); the output file is what a training config's models.reward_model reads.")
    p.add_argument("--manifest", required=True, help='JSONL manifest; every line needs "video" and a numeric "reward"')
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--vae", default="tiny", help="Wan2.1 VAE (file or folder) — the one the training run uses; "
                   "'tiny' = the random test VAE")
    p.add_argument("--tiny-seed", type=int, default=0, help="seed of the 'tiny' VAE (the training config's models.tiny_seed)")
    p.add_argument("--num-frames", type=int, default=81, help="frames per clip (4k+1), as data.num_frames")
    p.add_argument("--height", type=int, default=480, help="clip height (multiple of 16), as data.height")
    p.add_argument("--width", type=int, default=832, help="clip width (multiple of 16), as data.width")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=8, help="latents per step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--hidden", type=int, default=64, help="Conv3d width of the reward model")
    p.add_argument("--mlp-hidden", type=int, default=128, help="MLP width of the reward model")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of the clips (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the split and the minibatches")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def encode_manifest_rewards(manifest: str | os.PathLike, vae, *, num_frames: int, height: int, width: int,
                            device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """VAE latents ``[N, C, f, h, w]`` and rewards ``[N]`` of a manifest's labelled videos (held in memory:
    ~8.4 MB per 81×480×832 clip). Every line must have a ``video`` and a ``reward``."""
    from vdot_nodes.core.vae_codec import VAECodec

    from .data.manifest import ManifestDataset

    dataset = ManifestDataset(manifest, num_frames, height, width)
    missing = [(s.line, f) for s in dataset.samples for f in ("video", "reward") if getattr(s, f) is None]
    if missing:
        lines = sorted({ln for ln, _ in missing})
        fields = sorted({f for _, f in missing})
        raise VDOTInputError(str(manifest), f"line(s) {lines[:20]}{' ...' if len(lines) > 20 else ''} have no "
                             f"{' / '.join(repr(f) for f in fields)}",
                             'give every line a "video" and a numeric "reward" (the score of that video)')
    codec = VAECodec(vae, device=device)
    latents, rewards = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            latents.append(codec.encode(item["video"]))
            rewards.append(item["reward"])
    return torch.cat(latents), torch.tensor(rewards, dtype=torch.float32)


def reward_main(argv: list[str] | None = None) -> int:
    """``vdot train-reward`` (= ``python -m training.reward``): encode the manifest's videos, fit, save; exit 0 ok,
    2 bad input, 130 interrupted."""
    return run_subcommand("vdot train-reward", _parser(), argv, _train_reward, "interrupted; nothing was written")


def _train_reward(args) -> int:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VDOTInputError("--device", "cuda was asked for but no GPU is visible", "use --device auto or cpu")
    if args.vae == "tiny":
        from vdot_nodes.core.tiny import build_tiny_vae

        vae = build_tiny_vae(seed=args.tiny_seed)
    else:
        from vdot_nodes.core.models import load_vae

        vae = load_vae(args.vae, input_name="--vae")
    vae.requires_grad_(False).eval()
    latents, rewards = encode_manifest_rewards(args.manifest, vae, num_frames=args.num_frames, height=args.height,
                                               width=args.width, device=device)
    with seeded(args.seed):
        model = LatentRewardModel(latents.shape[1], hidden=args.hidden, mlp_hidden=args.mlp_hidden).to(device)
    result = fit_reward_model(model, latents, rewards, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              val_fraction=args.val_fraction, seed=args.seed, progress=not args.no_progress)
    info = {k: v for k, v in result.items() if k != "train_losses"}
    info.update(manifest=str(args.manifest), vae=str(args.vae), steps=args.steps,
                first_train_mse=result["train_losses"][0], final_train_mse=result["train_losses"][-1])
    path = save_reward_model(model, args.out, metadata=info)
    val = ("no validation split" if result["val_mse"] is None else
           f"held-out MSE {result['val_mse']:.4g} (predicting the mean: {result['val_baseline_mse']:.4g})")
    print(f"reward model: {result['n_train']} training / {result['n_val']} held-out clips, {val} → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(reward_main())
