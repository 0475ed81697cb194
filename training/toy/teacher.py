"""Flow-matching pre-training of the toy-world VACE teacher (and its text-only Wan T2V twin).

The teacher is a small diffusers ``WanVACETransformer3DModel`` — the class of Wan2.1-VACE-14B — trained
on every task of the toy manifest through the same VCU → VACE context path the pipeline uses at
inference (``sample_to_vcu`` → ``VDOTPipeline.encode_vcu``). Objective (rectified flow, Wan's
convention)::

    σ = shift(u, s) = s·u / (1 + (s − 1)·u),  u ~ U(0, 1)
    x_t = (1 − σ)·x0 + σ·ε,                    ε ~ N(0, I)
    L   = E ‖v_θ(x_t, 1000·σ, text, VACE context) − (ε − x0)‖²

``x0`` = [reference latents | video latents] (each reference image is one latent frame in front, as
``encode_vcu`` lays out the context). With probability ``text_dropout`` the caption is replaced by the
empty prompt, so the teacher supports classifier-free guidance. AdamW, EMA (``training.ema``),
atomic safetensors checkpoints (``training.checkpoint``), tqdm progress and a JSONL metrics file.

VAE and text encoder are frozen: each manifest row is encoded once (VCU draws fixed by a per-row
seed) and cached in memory (and on disk with ``encode_cache``) — on a CPU the VAE would otherwise cost more than the teacher's step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vdot_nodes.core.errors import VDOTCancelled, VDOTInputError
from vdot_nodes.core.sampling import shift_sigma
from vdot_nodes.core.tasks import TASKS
from vdot_nodes.core.text_encoding import compact_padded_text, cross_attention_bias
from vdot_nodes.core.tiny import TINY_TRANSFORMER_CONFIG, build_tiny_transformer

# Toy teacher: 4 Wan blocks of width 128 (4 heads × 32; rope split 12/10/10 over t/h/w), a VACE block on
# each, text width 32 = the toy UMT5's d_model. 4×4 patches on the 2×-compressed, 4-channel latent (64
# tokens per latent frame at 64×64, one per 8×8 pixels, 64 values each), so a spatial control can say where
# an object goes; with 16×16-pixel tokens (16 per frame) an earlier toy teacher could not localise (object
# IoU 0.09). The VACE context is 4 + 4 latent channels + a 2×2-unshuffled mask (4) = 12.
TOY_TEACHER_CONFIG = dict(
    TINY_TRANSFORMER_CONFIG,
    patch_size=(1, 4, 4),
    in_channels=4,
    out_channels=4,
    vace_in_channels=12,
    num_attention_heads=4,
    attention_head_dim=32,
    freq_dim=64,
    ffn_dim=256,
    num_layers=4,
    vace_layers=[0, 1, 2, 3],
)


def build_toy_teacher(seed: int = 0, **overrides):
    """The toy VACE teacher, in training mode."""
    return build_tiny_transformer(seed, **{**TOY_TEACHER_CONFIG, **overrides}).train()


def build_t2v_teacher(vace_teacher):
    """The text-only ``WanTransformer3DModel`` with the same Wan blocks (for stage-1 T2V distillation):
    every non-VACE weight is copied name for name."""
    from diffusers import WanTransformer3DModel

    from training.init import t2v_config_from_vace, vace_only_keys

    t2v = WanTransformer3DModel(**t2v_config_from_vace(vace_teacher.config))
    state = vace_teacher.state_dict()
    skip = set(vace_only_keys(state))
    missing, unexpected = t2v.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"T2V twin does not match the VACE teacher: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return t2v.eval()


def sample_sigmas(batch: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training noise levels: u ~ U(0, 1) warped by Wan's shift (s > 1 favours the noisy end)."""
    u = torch.rand(batch, generator=generator)
    return shift_sigma(u, shift).clamp(1e-3, 1.0)


def flow_matching_loss(model, x0: torch.Tensor, text: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                       control: torch.Tensor | None = None, control_scale: float = 1.0) -> torch.Tensor:
    """L = mean ‖v_θ(x_t, 1000σ, text, control) − (ε − x0)‖², x_t = (1 − σ)·x0 + σ·ε.

    ``x0`` / ``noise`` ``[B, 16, f, h, w]``; ``sigma`` ``[B]``; ``text`` ``[B, L, D]``; ``control`` the VACE
    context ``[B, 96, f, h, w]`` (None for a T2V ``WanTransformer3DModel``).
    """
    s = sigma.view(-1, 1, 1, 1, 1).to(x0)
    x_t = (1 - s) * x0 + s * noise
    kwargs = {}
    if control is not None:
        num_vace = len(model.config.vace_layers)
        kwargs = {"control_hidden_states": control,
                  "control_hidden_states_scale": torch.full((num_vace,), control_scale, dtype=x0.dtype, device=x0.device)}
    # The same cross-attention over the prompts' tokens and at least one pad row instead of 512 rows, most of
    # them identical pads: 1.25× the toy teacher's steps per second, same loss and gradients (to rounding).
    text, bias = compact_padded_text(text)
    with cross_attention_bias(model, bias):
        v = model(hidden_states=x_t, timestep=sigma * 1000, encoder_hidden_states=text, return_dict=False, **kwargs)[0]
    return F.mse_loss(v.float(), (noise - x0).float())


@dataclass
class TeacherExample:
    """One encoded manifest row: target latents, VACE context and caption embedding (batch dim 1)."""

    task: str
    x0: torch.Tensor  # [1, 16, R + f, h, w]
    control: torch.Tensor  # [1, 2·16 + s² (96 for Wan, 48 for the toy VAE), R + f, h, w]
    text: torch.Tensor  # [1, L, D]


class EncodedManifest:
    """Manifest rows encoded by the frozen VAE / text encoder, lazily, cached in memory.

    Row i's open VCU choices (outpaint sides, extension clip, ...) come from a generator seeded with
    ``seed + line``, so the cache is reproducible. ``tasks`` keeps only rows of those tasks.
    ``encode_cache`` (a folder) also keeps the encodings on disk (:class:`training.encode_cache.EncodeCache`),
    where the distillation trainer finds them under ``data.encode_cache`` with the same seed.
    """

    def __init__(self, pipe, manifest, num_frames: int, height: int, width: int, *, seed: int = 0, tasks=None,
                 encode_cache: str | Path | None = None):
        from training.data.manifest import ManifestDataset
        from training.encode_cache import EncodeCache

        self.pipe, self.seed = pipe, int(seed)
        self.dataset = ManifestDataset(manifest, num_frames, height, width, tasks=tasks)
        self.disk = EncodeCache(encode_cache, pipe, seed=self.seed) if encode_cache is not None else None
        self.cache: dict[int, TeacherExample] = {}
        self._text_cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def encode_all(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Encode every row now, in manifest order: a clip's rows are adjacent there, so the encode
        cache's pixel memo runs the VAE once for what they share (see :mod:`training.encode_cache`)."""
        for i in range(len(self)):
            self[i]
            if progress is not None:
                progress(i + 1, len(self))

    def text(self, caption: str) -> torch.Tensor:
        if caption not in self._text_cache:
            self._text_cache[caption] = self.pipe.encode_prompt([caption])
        return self._text_cache[caption]

    def __getitem__(self, i: int) -> TeacherExample:
        if i not in self.cache:
            from training.encode_cache import encode_row, row_generator

            sample = self.dataset[i]
            if self.disk is not None:
                row = self.disk.get(sample)
            else:
                row = encode_row(self.pipe, sample, row_generator(self.seed, sample))
            vcu = row.vcu
            refs = vcu.control[:, : vcu.latent_shape[0], : vcu.num_reference_frames]  # the references' own latents
            self.cache[i] = TeacherExample(sample["task"], torch.cat([refs, row.real], dim=2), vcu.control,
                                           self.text(sample["caption"]))
        return self.cache[i]


def task_row_weights(tasks: list[str], weights: dict | None) -> torch.Tensor | None:
    """Each row's chance to be drawn (``tasks``: the rows' tasks), from ``teacher.task_weights`` (task →
    weight, 1 for tasks not named; None when unset or empty: rows are drawn uniformly, as before the key
    existed). Needs only the manifest's tasks, so a bad key can fail before any model loads. A task with no
    rows in the manifest is allowed (the recipe's weights name t2v, inpaint and outpaint, and a world may leave
    them out with ``world.tasks``); a name that is no task is an error, as for stage 2's ``data.task_weights``."""
    if not weights:
        return None
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise VDOTInputError("teacher.task_weights", f"unknown task(s) {unknown}",
                             f"use tasks of the manifest: {', '.join(sorted(set(tasks)))}")
    if any(float(w) < 0 for w in weights.values()) or not any(float(weights.get(t, 1.0)) > 0 for t in tasks):
        raise VDOTInputError("teacher.task_weights", f"{weights} has a negative weight or leaves no row to draw",
                             "give weights ≥ 0, at least one task above 0")
    return torch.tensor([float(weights.get(t, 1.0)) for t in tasks], dtype=torch.float64)


class TeacherTrainer:
    """Flow-matching training of a VACE teacher over an :class:`EncodedManifest`.

    ``train_cfg`` keys (defaults in ``training/configs/toy_teacher.yaml``): lr, weight_decay, betas,
    batch_size (rows per step; rows are run one by one and their losses averaged, since reference
    counts differ), shift, text_dropout, ema_decay, grad_clip, checkpoint_every, keep_last, seed,
    task_weights (task → relative chance of its rows being drawn; unset: uniform over rows).
    """

    def __init__(self, model, data: EncodedManifest, out_dir: str | Path, train_cfg: dict):
        from training.ema import EMA

        self.model, self.data, self.cfg = model, data, dict(train_cfg)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.opt = torch.optim.AdamW(model.parameters(), lr=float(self.cfg.get("lr", 3e-4)),
                                     betas=tuple(self.cfg.get("betas", (0.9, 0.99))),
                                     weight_decay=float(self.cfg.get("weight_decay", 0.01)))
        self.ema = EMA(model, decay=float(self.cfg.get("ema_decay", 0.999)))
        self.generator = torch.Generator().manual_seed(int(self.cfg.get("seed", 0)))
        self.step = 0
        self.row_weights = task_row_weights([sample.task for sample in data.dataset.samples], self.cfg.get("task_weights"))
        self.empty_text = data.text("")
        # Training runs where the model is; the draws stay on the CPU generator, so a GPU run sees the
        # same σ, ε and dropout as a CPU run.
        self.device = next(model.parameters()).device

    def loss_on(self, examples: list[TeacherExample], generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean flow-matching loss over ``examples`` (fresh σ, ε and text dropout from ``generator``)."""
        g = self.generator if generator is None else generator
        shift, drop = float(self.cfg.get("shift", 3.0)), float(self.cfg.get("text_dropout", 0.1))
        draws = []
        for ex in examples:  # the same draws, in the same order, however the rows are grouped below
            sigma = sample_sigmas(1, shift, g)
            noise = torch.randn(ex.x0.shape, generator=g)
            text = self.empty_text if float(torch.rand((), generator=g)) < drop else ex.text
            draws.append((ex, sigma, noise, text))
        # Rows of one shape (same reference count, same text length) run as one batch: one forward
        # instead of one per row, several times faster on a CPU; the loss is the same mean over rows.
        groups: dict[tuple, list] = {}
        for d in draws:
            groups.setdefault((tuple(d[0].x0.shape), tuple(d[0].control.shape), tuple(d[3].shape)), []).append(d)
        on = lambda parts: torch.cat([t.to(self.device) for t in parts])  # noqa: E731
        total = 0.0
        for group in groups.values():
            loss = flow_matching_loss(self.model, on([d[0].x0 for d in group]), on([d[3] for d in group]),
                                      on([d[1] for d in group]), on([d[2] for d in group]),
                                      on([d[0].control for d in group]))
            total = total + loss * len(group)
        return total / len(draws)

    def train_step(self, examples: list[TeacherExample]) -> float:
        self.model.train()
        loss = self.loss_on(examples)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.cfg.get("grad_clip", 1.0)))
        self.opt.step()
        self.ema.update(self.model)
        self.step += 1
        return float(loss.detach())

    def next_batch(self) -> list[TeacherExample]:
        n, size = len(self.data), int(self.cfg.get("batch_size", 4))
        if self.row_weights is None:
            idx = torch.randint(0, n, (size,), generator=self.generator).tolist()
        else:
            idx = torch.multinomial(self.row_weights, size, replacement=True, generator=self.generator).tolist()
        return [self.data[i] for i in idx]

    def save(self) -> Path:
        from training.checkpoint import save_checkpoint

        return save_checkpoint(self.out_dir / "checkpoints", self.step, models={"teacher": self.model},
                               optimizers={"teacher": self.opt}, emas={"teacher": self.ema},
                               generators={"teacher_data": self.generator},
                               extra={"model_config": json.loads(json.dumps(dict(self.model.config), default=list))},
                               keep_last=int(self.cfg.get("keep_last", 2)))

    def resume(self) -> bool:
        """Continue from ``out_dir/checkpoints/latest`` if there is one."""
        from training.checkpoint import find_latest_checkpoint, load_checkpoint

        if find_latest_checkpoint(self.out_dir / "checkpoints") is None:
            return False
        self.step, _, _ = load_checkpoint(self.out_dir / "checkpoints", {"teacher": self.model}, {"teacher": self.opt},
                                          {"teacher": self.ema}, generators={"teacher_data": self.generator})
        return True

    def export(self, path: str | Path) -> Path:
        """Write the EMA weights as a transformer file the loaders read (``save_transformer``)."""
        from vdot_nodes.core.models import save_transformer

        snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.ema.copy_to(self.model)
        try:
            return save_transformer(self.model, path)
        finally:
            self.model.load_state_dict(snapshot)

    def train(self, steps: int, *, progress: Callable[[int, int, dict], None] | None = None,
              cancel: Callable[[], bool] | None = None, time_limit_s: float | None = None) -> list[dict]:
        """Train until ``steps`` total steps (or the time limit); checkpoints every ``checkpoint_every``."""
        every = int(self.cfg.get("checkpoint_every", 200))
        lr0 = float(self.cfg.get("lr", 3e-4))
        warmup = int(self.cfg.get("warmup", 50))
        start, history, first = time.perf_counter(), [], self.step
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as log:
            while self.step < steps:
                if cancel is not None and cancel():
                    self.save()
                    raise VDOTCancelled("teacher training cancelled (checkpoint saved)")
                # Linear warm-up then cosine decay to 10 %.
                frac = min(self.step / max(steps, 1), 1.0)
                scale = min(1.0, (self.step + 1) / max(warmup, 1)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
                for group in self.opt.param_groups:
                    group["lr"] = lr0 * scale
                batch = self.next_batch()
                loss = self.train_step(batch)
                record = {"phase": "teacher", "step": self.step, "loss": loss, "lr": lr0 * scale,
                          "tasks": [ex.task for ex in batch], "seconds": round(time.perf_counter() - start, 2)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                history.append(record)
                if progress is not None:
                    progress(self.step, steps, record)
                if self.step % every == 0:
                    self.save()
                if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
                    break
        if self.step > first and self.step % every:
            self.save()
        return history


def check_teacher_data(manifest: Path) -> None:
    if not Path(manifest).is_file():
        raise VDOTInputError("data", f"manifest {manifest} not found", "run `vdot toy world --out DIR` first")
