"""Training data → what the networks take: text embeddings, VACE context, noise shape, real latents.

Stage 1 reads captions (a text file, or a manifest's captions and — for the GAN — its videos) and
conditions on text only. Stage 2 turns each manifest sample into its task's VCU
(:func:`training.data.manifest.sample_to_vcu`) and encodes it with inference's own steps
(:class:`training.models.Encoders`: the VACE context step, the VAE step for real videos, the text step).
With ``data.encode_cache``
stage 2 reads both from :class:`training.encode_cache.EncodeCache` (each row encoded once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vdot_nodes.core.errors import VDOTInputError
from .config import TrainConfig
from .encode_cache import EncodeCache
from .models import Encoders
from .data.manifest import ManifestDataset, ResumableLoader, ResumableSampler, sample_to_vcu

__all__ = ["CaptionDataset", "EncodedBatch", "build_loader", "encode_batch"]


class CaptionDataset(Dataset):
    """Stage-1 captions from a text file, one per line (blank lines skipped), as manifest-style items."""

    def __init__(self, path: str | Path, num_frames: int, height: int, width: int):
        path = Path(path)
        if not path.is_file():
            raise VDOTInputError("data.captions", f"{path} not found", "give a text file with one caption per line")
        self.captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not self.captions:
            raise VDOTInputError("data.captions", f"{path} holds no captions", "write one caption per line")
        self.shape = {"num_frames": num_frames, "height": height, "width": width}

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        return {"index": index, "caption": self.captions[index], "task": "t2v", "video": None, "references": [],
                "meta": {}, **self.shape}


def build_loader(cfg: TrainConfig) -> ResumableLoader:
    d = cfg.data
    if d.captions is not None:
        dataset = CaptionDataset(cfg.resolve(d.captions), d.num_frames, d.height, d.width)
    else:
        tasks = d.tasks if cfg.stage == 2 else None
        dataset = ManifestDataset(cfg.resolve(d.manifest), d.num_frames, d.height, d.width, tasks=tasks,
                                  gt_dir=cfg.resolve(d.gt_dir))
    weights = None
    if d.task_weights is not None:  # stage 2 only (validated): a manifest's rows, each weighted by its task
        weights = [float(d.task_weights.get(s.task, 1.0)) for s in dataset.samples]
    sampler = ResumableSampler(dataset, seed=cfg.seed, shuffle=d.shuffle, weights=weights)
    return ResumableLoader(dataset, sampler, batch_size=d.batch_size, max_skipped=d.max_skipped_rows,
                           num_workers=d.num_workers)


@dataclass
class EncodedBatch:
    prompt_embeds: torch.Tensor  # [B, 512, text_dim]
    control: torch.Tensor | None  # [B, 96, R + f, h, w] (stage 2) or None
    latent_shape: tuple[int, ...]  # per-sample [16, R + f, h, w]
    num_reference_frames: int
    real_latents: torch.Tensor | None  # [B, 16, f, h, w] VAE latents of the real clips (GAN), or None


def encode_batch(cfg: TrainConfig, encoders: Encoders, batch: list[dict], generator: torch.Generator,
                 need_real: bool, cache: EncodeCache | None = None) -> EncodedBatch:
    """Encode one batch of dataset items (all must give the same latent shape). With ``cache`` (stage 2),
    VAE encodings come from / go to it and ``generator`` is not drawn from."""
    prompt_embeds = encoders.encode_prompt([s["caption"] for s in batch])
    control, refs = None, 0
    rows = None
    if cfg.stage == 2:
        if cache is not None:
            rows = [cache.get(s) for s in batch]
            encoded = [r.vcu for r in rows]
        else:
            encoded = [encoders.encode_vcu(sample_to_vcu(s, generator=generator, negative_prompt=cfg.guidance.negative_prompt))
                       for s in batch]
        shapes = {tuple(e.latent_shape) for e in encoded}
        if len(shapes) > 1:
            raise VDOTInputError("data.batch_size", f"samples of one batch have different latent shapes {sorted(shapes)} "
                                 "(reference images add latent frames)", "use batch_size: 1, or one task family per run")
        control = torch.cat([e.control for e in encoded])
        latent_shape, refs = encoded[0].latent_shape, encoded[0].num_reference_frames
    else:
        latent_shape = encoders.latent_shape(cfg.data.num_frames, cfg.data.height, cfg.data.width)
    real = None
    if need_real:
        missing = [s.get("line", s.get("index")) for s in batch if s.get("video") is None]
        if missing:
            raise VDOTInputError("data", f"samples {missing} have no video, and the GAN needs real clips",
                                 "give every manifest line a video, or train without adv")
        real = torch.cat([r.real for r in rows] if rows is not None else [encoders.encode_latents(s["video"]) for s in batch])
    return EncodedBatch(prompt_embeds, control, tuple(latent_shape), refs, real)
