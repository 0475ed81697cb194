"""On-disk cache of what the frozen VAE makes of a manifest row: its VACE context and its real latents.

The VAE is frozen in both the teacher pre-training and the distillation, yet encoding a row (its
inactive and reactive halves plus the real clip: three VAE passes) costs more than a whole trainer step
on a CPU, and a large share of one on a GPU. With ``data.encode_cache: DIR`` every row is encoded once
and read back on later visits, by later runs (the toy build's four stage-2 students) and by the toy
teacher.

What changes when it is on: the choices a row's task leaves open (outpaint sides, extension clip, a
random box, ...) are drawn once, from a generator seeded with ``seed + line``, instead of afresh on
every visit. A file is named by a hash of everything that determines its content — the VAE's weights,
the seed, the line number, the clip size and the row's loaded tensors, caption and task — so a changed
VAE, manifest row or seed never reads a stale entry; it encodes anew under a new name. Files are written
atomically (temp file + rename), so parallel ranks and a kill mid-write leave no torn entry.

Rows that share pixels share their VAE pass (:class:`PixelMemoCodec`): a clip's rows of different tasks
have the same real video, and a control row's inactive half (the frames outside an all-ones mask) is the
same all-zero video in every row, so encoding a toy manifest in line order needs about a third of the
VAE passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from vdot_nodes.core.atomic import atomic_save_safetensors
from vdot_nodes.core.vace_context import EncodedVCU
from vdot_nodes.core.vae_codec import VAECodec

from .models import Encoders

__all__ = ["EncodeCache", "EncodedRow", "PixelMemoCodec", "encode_row", "row_generator", "vae_fingerprint"]


@dataclass
class EncodedRow:
    """One manifest row through the frozen VAE (batch dim 1)."""

    vcu: EncodedVCU  # VACE context [1, 2·z + s², R + f, h, w], reference-frame count, latent shape
    real: torch.Tensor | None  # [1, z, f, h, w] latents of the row's video, None without one


def row_generator(seed: int, sample: dict) -> torch.Generator:
    """The generator of a row's open VCU choices when they are drawn once per row: ``seed + line``."""
    return torch.Generator().manual_seed(int(seed) + int(sample.get("line", sample.get("index", 0))))


def encode_row(encoders, sample: dict, generator: torch.Generator, negative_prompt: str = "") -> EncodedRow:
    """Encode one dataset item: its VCU (open choices from ``generator``) and its video (if any).
    ``encoders``: :class:`training.models.Encoders` (or a ``VDOTPipeline``: the same two methods)."""
    from .data.manifest import sample_to_vcu

    encoded = encoders.encode_vcu(sample_to_vcu(sample, generator=generator, negative_prompt=negative_prompt))
    real = encoders.encode_latents(sample["video"]) if sample.get("video") is not None else None
    return EncodedRow(encoded, real)


class PixelMemoCodec(VAECodec):
    """A :class:`VAECodec` that remembers the latents of its last ``size`` distinct pixel inputs and
    returns them for identical pixels instead of running the VAE again. The frozen VAE's encoding is a
    pure function of the pixels, so the result is the same tensor a pass would give (±0 are merged: a
    masked-out pixel is −0.0 or +0.0 by the sign it had)."""

    def __init__(self, codec: VAECodec, size: int = 8):
        super().__init__(codec.vae, device=codec.device, offload=codec.offload, tiling=codec.tiling)
        self.size, self.passes, self.reuses = int(size), 0, 0
        self._latents: OrderedDict[str, torch.Tensor] = OrderedDict()

    def encode_pixels(self, video: torch.Tensor) -> torch.Tensor:
        pixels = (video.detach().float().cpu() + 0.0).contiguous()  # + 0.0 turns −0.0 into +0.0
        key = hashlib.sha256(f"{tuple(pixels.shape)}".encode() + pixels.numpy().tobytes()).hexdigest()
        if key in self._latents:
            self._latents.move_to_end(key)
            self.reuses += 1
            return self._latents[key].clone()
        latents = super().encode_pixels(video)
        self.passes += 1
        self._latents[key] = latents.detach().clone()
        if len(self._latents) > self.size:
            self._latents.popitem(last=False)
        return latents


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """SHA-256 over the VAE's config and every weight (a few seconds for Wan's 127 M parameters)."""
    h = hashlib.sha256(json.dumps(dict(getattr(vae, "config", {})), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _row_hash(sample: dict) -> str:
    h = hashlib.sha256(json.dumps({k: sample.get(k) for k in ("caption", "task", "meta", "line", "num_frames", "height",
                                                              "width")}, sort_keys=True, default=str).encode())
    for key in ("video", "control", "mask", "first_frame"):
        t = sample.get(key)
        h.update(key.encode() + (b"-" if t is None else t.contiguous().numpy().tobytes()))
    for ref in sample.get("references") or []:
        h.update(ref.contiguous().numpy().tobytes())
    return h.hexdigest()


class EncodeCache:
    """``folder`` of encoded rows for one VAE; ``get(sample)`` encodes on a miss and stores the result."""

    def __init__(self, folder: str | os.PathLike, encoders, seed: int = 0, negative_prompt: str = ""):
        self.folder, self.encoders, self.seed, self.negative_prompt = Path(folder), encoders, int(seed), negative_prompt
        self.folder.mkdir(parents=True, exist_ok=True)
        self.vae_id = vae_fingerprint(encoders.vae)
        self.hits = self.misses = 0
        # Misses are encoded through a pixel memo: rows read in line order share their clip's VAE passes.
        self.codec = PixelMemoCodec(encoders.codec)
        self._memo_encoders = Encoders(getattr(encoders, "text", None), self.codec)

    def path(self, sample: dict) -> Path:
        key = hashlib.sha256(f"{self.vae_id}|{self.seed}|{_row_hash(sample)}".encode()).hexdigest()[:32]
        return self.folder / f"row-{key}.safetensors"

    def get(self, sample: dict) -> EncodedRow:
        path = self.path(sample)
        if path.is_file():
            try:
                with safe_open(path, framework="pt") as f:
                    meta = f.metadata() or {}
                    if "latent_shape" in meta:  # written by this module; anything else is encoded anew below
                        vcu = EncodedVCU(f.get_tensor("control"), int(meta["num_reference_frames"]),
                                         tuple(json.loads(meta["latent_shape"])))
                        self.hits += 1
                        return EncodedRow(vcu, f.get_tensor("real") if "real" in f.keys() else None)
            except Exception as exc:  # a damaged entry (full disk, partial copy) is derived data: encode it again
                logging.getLogger(__name__).warning(f"encode cache: {path.name} is unreadable ({type(exc).__name__}); "
                                                    "encoding the row again")
        self.misses += 1
        row = encode_row(self._memo_encoders, sample, row_generator(self.seed, sample), self.negative_prompt)
        tensors = {"control": row.vcu.control.contiguous()}
        if row.real is not None:
            tensors["real"] = row.real.contiguous()
        # overwrite: a damaged entry found above is replaced; two processes encoding the same row write the same bytes.
        atomic_save_safetensors(tensors, path, {"num_reference_frames": str(row.vcu.num_reference_frames),
                                                "latent_shape": json.dumps(list(row.vcu.latent_shape))}, overwrite=True)
        return row
