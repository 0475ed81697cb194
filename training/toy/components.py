"""Tiny toy-world components: UMT5 text encoder + tokenizer over the caption grammar, and a Wan VAE
trained for reconstruction on toy frames.

Same classes as Wan2.1-VACE-14B (transformers ``UMT5EncoderModel``, diffusers ``AutoencoderKLWan``)
and saved with the same savers (``vdot_nodes.core.models``), so the loaders, the pipeline and ComfyUI
read them like the real weights.

- Tokenizer: a SentencePiece-style unigram vocabulary (``T5Tokenizer(vocab=...)``): specials, one
  ``▁word`` piece per grammar word (one token per word for every toy caption), and letters as a
  fallback for anything else.
- Text encoder: randomly initialised and frozen. A random UMT5 already maps different captions to
  different, stable embeddings; the teacher learns to read them (Wan's UMT5 is frozen too).
- VAE: ``AutoencoderKLWan`` (``base_dim=4``, the smallest the single-file converter accepts), trained
  with L1 + MSE reconstruction and a tiny KL on random 17-frame toy clips. Afterwards the
  per-channel latent mean / std are measured and written into ``latents_mean`` / ``latents_std`` of
  its config, so the pipeline's normalised latents are ≈ N(0, 1) as with Wan's VAE.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vdot_nodes.core.errors import VDOTCancelled
from vdot_nodes.core.tiny import build_tiny_text_encoder

from .captions import caption_vocabulary
from .world import WorldConfig, make_clip

def toy_vocab() -> list[tuple[str, float]]:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), (",", -1.0)]
    pieces += [("▁" + w, -1.0) for w in caption_vocabulary()]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.'-"]
    return pieces


def build_toy_tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=toy_vocab(), extra_ids=0)


def build_toy_text_encoder(seed: int = 0, **overrides):
    """The tiny UMT5 (d_model 32 = the toy teacher's text_dim) over the caption grammar's vocabulary."""
    return build_tiny_text_encoder(seed, **{"vocab_size": len(toy_vocab()), **overrides})


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two 0..1 images/videos."""
    mse = float(F.mse_loss(a.float(), b.float()))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _clip_tensor(seed: int, config: WorldConfig) -> torch.Tensor:
    """A toy clip as ``[1, 3, F, H, W]`` in [-1, 1] (the VAE's input layout)."""
    frames = torch.from_numpy(make_clip(seed, config).frames)
    return frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1


@torch.no_grad()
def vae_reconstruction_psnr(vae, seeds, config: WorldConfig) -> float:
    """Mean PSNR (dB, 0..1 pixels) of encode → decode (posterior mode) over the clips of ``seeds``."""
    vae.eval()
    values = []
    for s in seeds:
        x = _clip_tensor(s, config)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        values.append(psnr((rec + 1) / 2, (x + 1) / 2))
    return float(np.mean(values))


@torch.no_grad()
def set_latent_statistics(vae, seeds, config: WorldConfig) -> tuple[list[float], list[float]]:
    """Measure per-channel mean/std of the posterior mode on toy clips and store them in the config."""
    zs = [vae.encode(_clip_tensor(s, config)).latent_dist.mode() for s in seeds]
    z = torch.cat([v.flatten(2) for v in zs], dim=2)[0]  # [C, N]
    mean = z.mean(dim=1).tolist()
    std = z.std(dim=1).clamp_min(1e-3).tolist()
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std


def train_vae(
    vae,
    *,
    steps: int,
    config: WorldConfig | None = None,
    lr: float = 1e-3,
    batch_size: int = 1,
    kl_weight: float = 1e-6,
    seed: int = 0,
    train_frames: int | None = 5,
    eval_seeds=range(10_000_000, 10_000_004),
    stat_seeds=range(20_000_000, 20_000_008),
    metrics_path: str | Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    log_every: int = 10,
) -> dict:
    """Reconstruction training on fresh random toy clips (clip seeds drawn from ``seed``).

    Afterwards the latent statistics are measured on ``stat_seeds`` (:func:`set_latent_statistics`).
    Clips have ``train_frames`` frames (eval clips the full ``config.num_frames``). Loss = L1 + MSE between the clip and the decoded posterior sample, + ``kl_weight``·KL. Eval clips
    (``eval_seeds``) are never trained on. Returns ``{"psnr_before", "psnr_after", "seconds", ...}``.
    """
    config = config or WorldConfig()
    # The Wan VAE is causal and convolutional: short clips (4k+1 frames) teach it the same thing, cheaper.
    train_world = dataclasses.replace(config, num_frames=train_frames) if train_frames else config
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    before = vae_reconstruction_psnr(vae, eval_seeds, config)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
    start = time.perf_counter()
    log = open(metrics_path, "a", encoding="utf-8") if metrics_path else None
    try:
        for step in range(1, steps + 1):
            if cancel is not None and cancel():
                raise VDOTCancelled("VAE training cancelled")
            vae.train()
            x = torch.cat([_clip_tensor(int(rng.integers(0, 2**31 - 1)), train_world) for _ in range(batch_size)])
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
            rec = vae.decode(z).sample
            kl = posterior.kl().mean() / x[0].numel()
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            sched.step()
            record = {"step": step, "loss": float(loss.detach()), "train_psnr": psnr((rec.detach().clamp(-1, 1) + 1) / 2, (x + 1) / 2),
                      "seconds": round(time.perf_counter() - start, 2)}
            if log is not None and (step % log_every == 0 or step == steps):
                log.write(json.dumps({"phase": "vae", **record}) + "\n")
                log.flush()
            if progress is not None:
                progress(step, steps, record)
    finally:
        if log is not None:
            log.close()
    vae.eval()
    after = vae_reconstruction_psnr(vae, eval_seeds, config)
    set_latent_statistics(vae, stat_seeds, config)
    return {"psnr_before": before, "psnr_after": after, "seconds": time.perf_counter() - start, "steps": steps}
