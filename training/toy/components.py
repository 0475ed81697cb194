"""Tiny toy-world components: UMT5 text encoder + tokenizer over the caption grammar, and a Wan VAE
trained for reconstruction on toy frames.

Same classes as Wan2.1-VACE-14B (transformers ``UMT5EncoderModel``, diffusers ``AutoencoderKLWan``)
and saved with the same savers (``vdot_nodes.core.models``), so the loaders, the pipeline and ComfyUI
read them like the real weights.

- Tokenizer: a SentencePiece-style unigram vocabulary (``T5Tokenizer(vocab=...)``): specials, one
  ``▁word`` piece per grammar word (one token per word for every toy caption), and letters as a
  fallback for anything else.
- Text encoder: randomly initialised and frozen, except that each self-attention head reads one fixed
  neighbour (:func:`attend_to_neighbours`). With random relative-position biases every head averages over
  the whole caption, so each word's output is its own embedding plus nearly the same sentence mean: in
  "moves left …, the camera pans right" and "moves right …, pans left" the two "left"s came out at cosine
  0.996 — the teacher could not tell the object's motion from the camera's. Reading neighbours makes a
  word's output carry the words around it (cosine 0.60). Wan's UMT5 is frozen too; the teacher learns to
  read it.
- VAE: ``AutoencoderKLWan`` (:data:`TOY_VAE_CONFIG`: width 16, 2× spatial, no temporal compression, 4 latent
  channels, each frame coded alone: :func:`start_per_frame`), trained with L1 + MSE reconstruction of the
  posterior mode (object pixels and silhouette edges weighted up) and a tiny KL on random crops of single
  frames of fresh toy clips and of their control videos (``control_share``: VACE encodes the depth, flow,
  pose, grey and scribble videos with the same VAE). Afterwards the
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
from vdot_nodes.core.tiny import TINY_VAE_CONFIG, build_tiny_text_encoder, build_tiny_vae

from .captions import caption_vocabulary
from .world import WorldConfig, make_clip

# The toy VAE: the Wan VAE class (AutoencoderKLWan) with 2× spatial and no temporal compression, 4 latent
# channels, width 16 (32 after the first stage), one residual block per stage, and the class's
# ``is_residual`` down/up blocks (Wan2.2's layout: parameter-free space-to-depth / depth-to-space shortcuts
# around the resampling stage). Why so little compression: a linear code (PCA) of 4×4×4-pixel blocks in 16
# channels bounds reconstruction at 26.1 dB, of 4×4×1 blocks at 30.2 dB; the previous 4×/4× toy VAE reached
# 21.7 dB in a CPU build (22.8 dB with 20× the pixels per step on a GPU), a 4×/1× one 20.1 dB after phase 1
# where this one gets 23.4 dB. Why 4 channels, not Wan's 16: a token of the toy teacher (8×8 pixels) then
# carries 4·4·4 = 64 latent values, half its width of 128, as before. With 16 channels it would carry 256,
# and a 128-wide transformer cannot even pass the noise of a 256-value token through, let alone remove it
# (its loss at step 200 was 2.5× the old teacher's). The world's clips are 5 frames, so the latent has 5 frames.
# Training decodes without the final clamp to [-1, 1] (:func:`decode_unclamped`): a clamped pixel gets no
# gradient, so a decoder that overshoots white or a saturated colour could never come back; inference keeps
# diffusers' clamp. Diffusers' AutoencoderKLWan carries the factors as ``scale_factor_spatial`` /
# ``scale_factor_temporal`` and the pipeline reads them and ``z_dim`` from its config, so the same code
# serves Wan's 8×/4×, 16-channel VAE.
TOY_VAE_CONFIG = dict(TINY_VAE_CONFIG, base_dim=16, z_dim=4, num_res_blocks=1, dim_mult=[2, 2],
                      temperal_downsample=[False], scale_factor_spatial=2, scale_factor_temporal=1, is_residual=True)


def build_toy_vae(seed: int = 0, **overrides):
    """The toy-world VAE (randomly initialised; :func:`train_vae` trains it and measures its latent
    statistics). Until then the statistics are the identity, one per latent channel (diffusers' defaults
    are Wan's 16)."""
    config = {**TOY_VAE_CONFIG, **overrides}
    z_dim = config["z_dim"]
    vae = build_tiny_vae(seed, **{"latents_mean": [0.0] * z_dim, "latents_std": [1.0] * z_dim, **config})
    return start_per_frame(vae)


def start_per_frame(vae):
    """Zero the taps of every causal convolution that read earlier frames, so the VAE codes each frame on
    its own (exactly: with no temporal compression nothing else mixes frames). Trained on single frames
    (``train_frames=1``) those taps only ever see the causal zero padding, get no gradient and stay zero, so
    what the VAE learns on frames holds for clips. Single frames of many clips teach a small VAE far more per
    step than 5-frame clips of a few (27.5 dB after 400 steps of 60 frames where 12 clips gave 18.3)."""
    with torch.no_grad():
        for conv in vae.modules():
            if isinstance(conv, torch.nn.Conv3d) and conv.kernel_size[0] > 1:
                conv.weight[:, :, :-1] = 0  # causal: the last tap reads the current frame
    return vae


def toy_vocab() -> list[tuple[str, float]]:
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), (",", -1.0)]
    pieces += [("▁" + w, -1.0) for w in caption_vocabulary()]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.'-"]
    return pieces


def build_toy_tokenizer():
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=toy_vocab(), extra_ids=0)


# The relative offset (tokens) each of the toy text encoder's 4 heads reads, in every layer: the previous
# word, the next, the 2–5 words before (one T5 bucket), itself. A bias of 8 over the other buckets puts
# nearly all of a head's attention there.
NEIGHBOUR_OFFSETS = (-1, 1, -2, 0)
NEIGHBOUR_BIAS = 8.0


def attend_to_neighbours(encoder, offsets=NEIGHBOUR_OFFSETS, bias: float = NEIGHBOUR_BIAS):
    """Set every self-attention layer's relative-position bias so head ``h`` attends to offset ``offsets[h]``.
    Only the ``relative_attention_bias`` weights change, so the encoder saves and loads as any UMT5."""
    with torch.no_grad():
        for block in encoder.encoder.block:
            attention = block.layer[0].SelfAttention
            if len(offsets) != attention.n_heads:
                raise ValueError(f"{len(offsets)} offsets for {attention.n_heads} heads")
            table = attention.relative_attention_bias.weight  # [buckets, heads]
            table.zero_()
            for head, bucket in enumerate(attention._relative_position_bucket(torch.tensor(offsets)).tolist()):
                table[bucket, head] = bias
    return encoder


def build_toy_text_encoder(seed: int = 0, **overrides):
    """The tiny UMT5 (d_model 32 = the toy teacher's text_dim) over the caption grammar's vocabulary, its
    heads reading fixed neighbours (:func:`attend_to_neighbours`)."""
    return attend_to_neighbours(build_tiny_text_encoder(seed, **{"vocab_size": len(toy_vocab()), **overrides}))


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """PSNR in dB of two 0..1 images/videos, optionally only where ``where`` (bool, ``a``'s shape without
    the channel axis) holds."""
    err = (a.float() - b.float()) ** 2
    mse = float(err[where].mean()) if where is not None else float(err.mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _clip_tensor(seed: int, config: WorldConfig) -> torch.Tensor:
    """A toy clip as ``[1, 3, F, H, W]`` in [-1, 1] (the VAE's input layout)."""
    return _clip_tensors(seed, config)[0]


def _clip_tensors(seed: int, config: WorldConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy clip ``[1, 3, F, H, W]`` in [-1, 1] and its object pixels ``[1, 1, F, H, W]`` (1 = an object)."""
    x, objects, _ = _clip_sample(seed, config)
    return x, objects


def _clip_sample(seed: int, config: WorldConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_clip_tensors` and the clip's silhouette-edge pixels ``[1, 1, F, H, W]`` (1 = an edge)."""
    clip = make_clip(seed, config)
    frames = torch.from_numpy(clip.frames)
    objects = torch.from_numpy(clip.ids > 0).float()[None, None]
    edges = torch.from_numpy(clip.edges).float()[None, None]
    return frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1, objects, edges


def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan.decode`` without its final clamp to [-1, 1], for training only: a clamped pixel
    gets no gradient, so a decoder that overshoots white or a saturated colour can never come back
    (the small toy VAE stalled near the mean colour that way). Same decoder calls, frame by frame."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, 2)


def _control_sample(seed: int, config: WorldConfig, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame of one of a clip's control videos (:func:`training.toy.dataset.control_video`, the kind drawn
    from ``rng``) as ``[1, 3, 1, H, W]`` in [-1, 1], with the clip's object and silhouette-edge pixels of that
    frame (where a depth, flow or scribble control changes and a pose control draws). The clip is rendered
    at full length: a flow control needs two frames."""
    from .dataset import CONTROL_KINDS, control_video

    clip = make_clip(seed, config)
    kind = CONTROL_KINDS[int(rng.integers(len(CONTROL_KINDS)))]
    t = int(rng.integers(config.num_frames))
    frame = control_video(clip, kind)[t]  # [H, W, 3] 0..1
    objects = torch.from_numpy(clip.ids[t] > 0).float()[None, None, None]
    edges = torch.from_numpy(clip.edges[t]).float()[None, None, None]
    return frame.permute(2, 0, 1)[None, :, None] * 2 - 1, objects, edges


def _random_crop(pair: tuple[torch.Tensor, torch.Tensor], size: int, rng: np.random.Generator):
    """The same random ``size``×``size`` window of a clip and of its loss weights."""
    h, w = pair[0].shape[-2:]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return tuple(t[..., y:y + size, x:x + size] for t in pair)


def _round_trip(vae, x: torch.Tensor) -> torch.Tensor:
    """Encode → decode (posterior mode) of ``[1, 3, F, H, W]`` in [-1, 1], clamped as inference does."""
    return vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)


@torch.no_grad()
def vae_reconstruction_psnr(vae, seeds, config: WorldConfig, objects_only: bool = False) -> float:
    """Mean PSNR (dB, 0..1 pixels) of encode → decode (posterior mode) over the clips of ``seeds``
    (``objects_only``: on the object pixels alone — colour and shape of what moves)."""
    vae.eval()
    values = []
    for s in seeds:
        x, objects = _clip_tensors(s, config)
        rec = _round_trip(vae, x)
        where = objects[:, 0].bool().unsqueeze(1).expand_as(x) if objects_only else None
        values.append(psnr((rec + 1) / 2, (x + 1) / 2, where))
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
    latent_noise: float = 0.05,
    object_weight: float = 0.0,
    edge_weight: float = 0.0,
    seed: int = 0,
    train_frames: int | None = 5,
    crop: int | None = None,
    control_share: float = 0.0,
    eval_seeds=range(10_000_000, 10_000_004),
    stat_seeds=range(20_000_000, 20_000_008),
    metrics_path: str | Path | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    log_every: int = 10,
) -> dict:
    """Reconstruction training on fresh random toy clips (clip seeds drawn from ``seed``).

    Afterwards the latent statistics are measured on ``stat_seeds`` (:func:`set_latent_statistics`).
    Clips have ``train_frames`` frames (eval clips the full ``config.num_frames``). Loss = L1 + MSE between the clip and the decoded posterior mode (plus ``latent_noise`` relative jitter),
    each weighted per pixel by ``1 + object_weight`` on object pixels ``+ edge_weight`` on silhouette
    edges (normalised by the mean weight), + ``kl_weight``·KL. Objects cover ~10 % of a toy frame; without
    the weight a small VAE learns the grey/brown backgrounds first and renders the saturated objects in
    background colours. Silhouette edges are ~6 % of the pixels and, unweighted, 70 % of a trained VAE's
    squared error (it blurs them). ``train_frames=1``: each sample is one frame of its own clip (see
    :func:`start_per_frame`). ``control_share`` (with ``train_frames=1``): that share of the samples is a frame
    of one of the clip's control videos (depth, flow, pose, grey, scribble) instead: VACE encodes the
    controls with the same VAE, and one that saw only world frames codes them as world colours (toy10's: a
    flow control round-trips at 18 dB, a depth control's black as the world's dark blue). Eval clips
    (``eval_seeds``) are never trained on. Returns ``{"psnr_before", "psnr_after", "object_psnr_after",
    "control_psnr_after", "seconds", "steps"}`` (``control_psnr_after``: :func:`control_reconstruction_psnr`,
    per control kind).
    """
    if control_share and train_frames != 1:
        raise ValueError("control_share needs train_frames=1 (control frames are single frames)")
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
            pairs = []
            for _ in range(batch_size):
                clip_seed = int(rng.integers(0, 2**31 - 1))
                if control_share and rng.random() < control_share:  # no extra draw without controls: same clips
                    clip, objects, edges = _control_sample(clip_seed, config, rng)
                else:
                    clip, objects, edges = _clip_sample(clip_seed, train_world)
                pairs.append((clip, 1 + object_weight * objects + edge_weight * edges))  # weights [1, 1, F, H, W]
            if crop:  # the VAE is convolutional: random crops teach it the same edges, cheaper
                pairs = [_random_crop(p, crop, rng) for p in pairs]
            x = torch.cat([p[0] for p in pairs])
            weight = torch.cat([p[1] for p in pairs])
            posterior = vae.encode(x).latent_dist
            # The pipeline encodes with the posterior mode, so train the mode. Sampling with the
            # untrained posterior std (≈ 1 at init, far above the mean's scale) drowns the signal and
            # stalls training; a small relative jitter keeps the decoder tolerant of imprecise latents.
            z = posterior.mode()
            z = z + latent_noise * z.detach().std() * torch.randn(z.shape, generator=generator)
            rec = decode_unclamped(vae, z)
            kl = posterior.kl().mean() / x[0].numel()
            err = rec - x
            loss = ((err.abs() + err ** 2) * weight).mean() / weight.mean() + kl_weight * kl
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
    objects_after = vae_reconstruction_psnr(vae, eval_seeds, config, objects_only=True)
    set_latent_statistics(vae, stat_seeds, config)
    return {"psnr_before": before, "psnr_after": after, "object_psnr_after": objects_after,
            "control_psnr_after": control_reconstruction_psnr(vae, eval_seeds, config),
            "seconds": time.perf_counter() - start, "steps": steps}


@torch.no_grad()
def control_reconstruction_psnr(vae, seeds, config: WorldConfig) -> dict[str, float]:
    """Mean PSNR (dB) of encode → decode of each control video of the clips of ``seeds``, per control kind."""
    from .dataset import clip_controls

    vae.eval()
    values: dict[str, list[float]] = {}
    for s in seeds:
        for kind, video in clip_controls(make_clip(s, config)).items():
            video = video.permute(3, 0, 1, 2)[None]  # [1, 3, F, H, W] 0..1
            values.setdefault(kind, []).append(psnr((_round_trip(vae, video * 2 - 1) + 1) / 2, video))
    return {kind: float(np.mean(v)) for kind, v in values.items()}
