"""The VDOT distillation loop: optimisers, the two-time-scale schedule, checkpoints, exports and logging.

What is computed per iteration — every term of the recipe — lives in :mod:`training.objective`
(:class:`~training.objective.VDOTObjective`: ``generator_loss`` and ``critic_loss``). Here:

1. *Generator* (only when ``step % ttur == 0``; objective from ``schedule.generator_objectives``):
   zero grads, the objective's loss on each of ``optim.grad_accumulation`` micro-batches (divided by their
   number), backward, grad clipping, AdamW step, EMA update.
2. *Critic* (every step; objective from ``schedule.critic_objectives``): the same for the fake score +
   discriminator head (one optimiser), on the same micro-batches.

With ``schedule.shared_exit_step`` one rollout exit step is drawn per iteration for all of these passes.

Sharding: FSDP2 ``fully_shard`` per block (:func:`training.distributed.shard_model`) for generator,
fake score, teacher and discriminator head; in one process the same code runs unsharded. Every random
draw comes from seeded per-rank generators saved in the checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.seeding import seeded

from . import distributed as D
from .batches import EncodedBatch, build_loader, encode_batch
from .encode_cache import EncodeCache
from .checkpoint import load_checkpoint, read_data_state, save_checkpoint
from .config import TrainConfig, config_to_dict
from .divergence import check_finite_metrics
from .ema import EMA
from .models import build_networks, is_vace
from .objective import VDOTObjective, critic_objective, generator_objective
from .reward import load_reward_model
from .run_dir import export_target, new_run_id, prepare_run_folder

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "generator_objective"]


def _to_float(v) -> float:
    if isinstance(v, torch.Tensor):
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        return float(v.detach().float().cpu())
    return float(v)


class Trainer:
    """Builds the networks, optimisers, EMA and data from a :class:`TrainConfig`; :meth:`train` runs it."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False):
        """``resume``: continue from the newest whole checkpoint in ``out/checkpoints``; ``overwrite``: move an
        old run in ``out`` aside and start afresh; neither: refuse a folder holding a run (:mod:`training.run_dir`)."""
        self.cfg = cfg
        self.info = D.init_distributed()
        self.device = self._device()
        self.out = Path(cfg.resolve(cfg.out) if not os.path.isabs(cfg.out) else cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        resume_from = prepare_run_folder(self.out, resume=resume, overwrite=overwrite)  # before any model loads
        self.run_id = D.broadcast_object(new_run_id())  # one id for all ranks
        self.loader = build_loader(cfg)
        if resume_from is not None:  # a resume over other data or another seed is refused before any model loads
            self.loader.load_state_dict(read_data_state(resume_from))
        with seeded(cfg.seed):  # identical initial weights (discriminator head) on every rank
            nets = build_networks(cfg, self.device)
        self.encoders = nets.encoders
        self.init_report = nets.init_report
        rt = cfg.runtime
        if rt.gradient_checkpointing:
            D.enable_gradient_checkpointing(nets.generator)
            D.enable_gradient_checkpointing(nets.fake_score)
        shard = dict(mixed_precision=rt.mixed_precision, cpu_offload=rt.cpu_offload)
        models = [nets.generator, nets.fake_score, nets.teacher] + ([nets.discriminator] if nets.discriminator else [])
        if not (D.is_distributed() and rt.cpu_offload):
            for m in models:
                m.to(self.device)
        self.generator = D.shard_model(nets.generator, **shard)
        self.fake_score = D.shard_model(nets.fake_score, **shard)
        self.teacher = D.shard_model(nets.teacher, **shard)
        self.discriminator = (D.shard_model(nets.discriminator, block_attrs=("attns",), **shard)
                              if nets.discriminator is not None else None)
        critic = {"fake_score": self.fake_score}
        if self.discriminator is not None:
            critic["discriminator"] = self.discriminator
        self.critic = nn.ModuleDict(critic)  # one optimiser, one checkpoint entry

        o = cfg.optim
        adamw = dict(betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.gen_opt = torch.optim.AdamW([p for p in self.generator.parameters() if p.requires_grad], lr=o.lr, **adamw)
        self.critic_opt = torch.optim.AdamW([p for p in self.critic.parameters() if p.requires_grad], lr=o.critic_lr, **adamw)
        self.ema = EMA(self.generator, decay=o.ema_decay)
        self.reward_model = self._reward_model(int(nets.generator.config.in_channels))  # frozen; None if unset

        rank = self.info.rank
        self.rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17 * rank + 1)  # noise, σ, exit steps
        self.data_rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17 * rank + 2)  # VCU draws
        self.encode_cache = None
        if cfg.stage == 2 and cfg.data.encode_cache:
            self.encode_cache = EncodeCache(cfg.resolve(cfg.data.encode_cache), self.encoders, seed=cfg.seed,
                                            negative_prompt=cfg.guidance.negative_prompt)
        self.step = 0
        if resume_from is not None:
            self.step, _, extra = load_checkpoint(  # its data state was loaded above
                resume_from, self._models(), self._optimizers(), {"generator": self.ema},
                generators={"trainer": self.rng, "data": self.data_rng},
            )
            self.run_id = extra.get("run_id") or self.run_id  # checkpoints from before run ids: a new one
            self._log(f"resumed from {resume_from} at step {self.step}")
        self._batches = None
        self.negative_embeds = None
        if cfg.guidance.cfg_scale != 1.0:
            self.negative_embeds = self.encoders.encode_prompt([cfg.guidance.negative_prompt])
        self.objective = VDOTObjective(cfg, generator=self.generator, teacher=self.teacher, fake_score=self.fake_score,
                                       discriminator=self.discriminator, negative_embeds=self.negative_embeds,
                                       reward_model=self.reward_model, rng=self.rng, device=self.device)

    # ------------------------------------------------------------------ plumbing
    def _device(self) -> torch.device:
        want = self.cfg.runtime.device
        if want == "cuda" and not torch.cuda.is_available():
            raise VDOTInputError("runtime.device", "cuda was asked for but no GPU is visible", "use device: auto or cpu")
        if want == "cpu":
            return torch.device("cpu")
        return self.info.device

    def _reward_model(self, latent_channels: int) -> nn.Module | None:
        if not self.cfg.models.reward_model:
            return None
        model = load_reward_model(self.cfg.resolve(self.cfg.models.reward_model), input_name="models.reward_model",
                                  device=self.device)
        if model.in_channels != latent_channels:
            raise VDOTInputError("models.reward_model", f"the reward model reads {model.in_channels}-channel latents, the "
                                 f"generator makes {latent_channels}-channel ones", "fit the reward model on latents of "
                                 "this run's VAE (python -m training.reward --vae ...)")
        return model

    def _models(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "critic": self.critic}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.gen_opt, "critic": self.critic_opt}

    def _autocast(self):
        # Sharded runs get bf16 from FSDP2's MixedPrecisionPolicy; one process uses autocast.
        if self.cfg.runtime.mixed_precision == "bf16" and not D.is_distributed():
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _log(self, msg: str) -> None:
        if D.is_main_process():
            logger.info(msg)

    def _clip(self, params) -> float:
        params = [p for p in params if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        return _to_float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    # ------------------------------------------------------------------ updates
    def generator_step(self, encs: list[EncodedBatch], objective: str, exit_step: int | None = None) -> dict:
        self.gen_opt.zero_grad(set_to_none=True)
        logs = self._accumulate(encs, lambda enc: self.objective.generator_loss(enc, objective, exit_step))
        logs["grad_norm_generator"] = self._clip(self.generator.parameters())
        self.gen_opt.step()
        self.ema.update(self.generator)
        self.critic_opt.zero_grad(set_to_none=True)  # ADV's backward went through the fake score
        return logs

    def critic_step(self, encs: list[EncodedBatch], objective: str = "denoise+disc", exit_step: int | None = None) -> dict:
        self.critic_opt.zero_grad(set_to_none=True)
        logs = self._accumulate(encs, lambda enc: self.objective.critic_loss(enc, objective, exit_step))
        logs["grad_norm_critic"] = self._clip(self.critic.parameters())
        self.critic_opt.step()
        return logs

    def _accumulate(self, encs: list[EncodedBatch], loss_fn) -> dict:
        """Backward of ``loss / len(encs)`` per micro-batch; returns the logs averaged over micro-batches."""
        merged: dict = {}
        for enc in encs:
            with self._autocast():
                loss, logs = loss_fn(enc)
            (loss / len(encs) if len(encs) > 1 else loss).backward()
            for k, v in logs.items():
                merged.setdefault(k, []).append(v)
        return {k: (v[0] if len(v) == 1 or isinstance(v[0], (str, int)) else sum(_to_float(x) for x in v) / len(v))
                for k, v in merged.items()}

    def train_step(self) -> dict:
        """One iteration; returns its metrics (floats)."""
        cfg = self.cfg
        if self._batches is None:
            self._batches = iter(self.loader)
        start = time.perf_counter()
        encs = []
        for _ in range(cfg.optim.grad_accumulation):
            batch = next(self._batches)
            encs.append(encode_batch(cfg, self.encoders, batch, self.data_rng, need_real=self.discriminator is not None,
                                     cache=self.encode_cache))
        objective = generator_objective(self.step, cfg.schedule.ttur, cfg.schedule.generator_objectives)
        c_objective = critic_objective(self.step, cfg.schedule.critic_objectives)
        exit_step = self.objective.draw_exit_step() if cfg.schedule.shared_exit_step else None
        metrics: dict = {"step": self.step, "objective": objective or "critic", "critic_objective": c_objective}
        t0 = time.perf_counter()
        if objective is not None:
            metrics.update(self.generator_step(encs, objective, exit_step))
        t1 = time.perf_counter()
        metrics.update(self.critic_step(encs, c_objective, exit_step))
        t2 = time.perf_counter()
        metrics.update(time_data_s=t0 - start, time_generator_s=t1 - t0, time_critic_s=t2 - t1, time_step_s=t2 - start)
        self.step += 1
        out = {}
        for k, v in metrics.items():
            out[k] = v if isinstance(v, (str, int)) else _to_float(v)
        check_finite_metrics(out, self.step - 1, cfg.optim, cfg.runtime.mixed_precision)  # before anything is saved
        return out

    # ------------------------------------------------------------------ saving
    def save(self) -> Path:
        return save_checkpoint(
            self.ckpt_dir, self.step, models=self._models(), optimizers=self._optimizers(), emas={"generator": self.ema},
            generators={"trainer": self.rng, "data": self.data_rng}, data_state=self.loader.state_dict(),
            extra={"stage": self.cfg.stage, "config": config_to_dict(self.cfg), "run_id": self.run_id},
            keep_last=self.cfg.logging.keep_last,
        )

    def export(self) -> Path | None:
        """Write the EMA generator to ``out/exports/``. Stage 2: a Wan-VACE file in ComfyUI layout, or a
        diffusers folder (``logging.export_layout``; ``training.export.export_generator``); stage 1: the T2V generator with diffusers names, which
        stage 2's ``generator_init`` reads. Collective when sharded; returns the path (rank 0)."""
        from .export import export_generator, generator_state_dict

        vace = is_vace(self.generator)
        folder = vace and self.cfg.logging.export_layout == "diffusers"
        name = f"generator_{'vace' if vace else 't2v'}_step{self.step:06d}" + ("" if folder else ".safetensors")
        path = self.out / "exports" / name
        precision = self.cfg.logging.export_precision
        if D.is_distributed():  # gather on all ranks (collectives), write on rank 0
            weights = D.full_model_state_dict(self.generator)  # rank 0 only (cpu_offload full state dict)
            shadow = self.ema.state_dict(rank0_only=True)
            if not D.is_main_process():
                D.barrier()
                return None
            from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

            cls = WanVACETransformer3DModel if vace else WanTransformer3DModel
            with torch.device("meta"):
                model = cls.from_config(dict(self.generator.config))
            model.load_state_dict(weights, strict=False, assign=True)
            ema = shadow
        else:
            model, ema = self.generator, self.ema
        path, ours = export_target(path, self.run_id)  # another run's file is never reported as this one's
        if ours:
            self._log(f"{path} exists (this run, same step, after a resume); kept as it is")
        elif vace:
            export_generator(model, path, ema=ema, layout=self.cfg.logging.export_layout, precision=precision,
                             metadata={"vdot_step": str(self.step), "vdot_stage": "2", "vdot_run_id": self.run_id,
                                       **({"vdot_inference_preset": self.cfg.rollout.inference_preset}
                                          if self.cfg.rollout.inference_preset else {})})
        else:
            from vdot_nodes.core.atomic import atomic_save_safetensors

            from .export import EXPORT_PRECISIONS

            state = generator_state_dict(model, ema)
            dtype = EXPORT_PRECISIONS[precision]
            tensors = {k: (v.to(dtype) if v.is_floating_point() else v).cpu().contiguous() for k, v in state.items()}
            config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(model.config).items() if not k.startswith("_")}
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_safetensors(tensors, path, metadata={"vdot_transformer_config": json.dumps(config),
                                                             "vdot_step": str(self.step), "vdot_run_id": self.run_id})
        if D.is_distributed():
            D.barrier()
        return path

    # ------------------------------------------------------------------ loop
    def train(self, max_steps: int | None = None, progress: bool = True, progress_fn=None, cancel=None) -> dict:
        """Run up to ``max_steps`` iterations in total (default: the config's); checkpoint, export, log.

        ``progress_fn(done, total)`` is called after every iteration (e.g. the toy world's progress);
        ``cancel()`` is polled between iterations: when it returns True a checkpoint is saved (resume
        with ``--resume``) and :class:`VDOTCancelled` is raised. Under torchrun rank 0 decides.
        """
        from vdot_nodes.core.atomic import atomic_write_text
        from vdot_nodes.core.errors import VDOTCancelled
        from vdot_nodes.core.progress import TqdmProgress

        cfg, lg = self.cfg, self.cfg.logging
        total = cfg.max_steps if max_steps is None else max_steps
        main = D.is_main_process()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            import yaml

            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False), overwrite=True)
        metrics_file = open(self.out / "metrics.jsonl", "a", encoding="utf-8") if main else None
        bar = TqdmProgress(total, f"VDOT stage {cfg.stage}", initial=self.step, disable=not (main and progress))
        last: dict = {}
        gen_loss = "-"  # the generator updates every ttur-th iteration: show its latest loss meanwhile
        try:
            while self.step < total:
                last = self.train_step()
                if "loss_generator" in last:
                    gen_loss = f"{last['loss_generator']:.4g} ({last['objective']})"
                if metrics_file is not None and (self.step % lg.log_every == 0 or self.step == total):
                    metrics_file.write(json.dumps(last) + "\n")
                    metrics_file.flush()
                bar.update(1)
                bar.note(f"critic={last['loss_critic']:.4g}, gen={gen_loss}")
                if lg.checkpoint_every and self.step % lg.checkpoint_every == 0 and self.step < total:
                    self.save()
                if lg.export_every and self.step % lg.export_every == 0 and self.step < total:
                    self.export()
                if progress_fn is not None:
                    progress_fn(self.step, total)
                if cancel is not None and D.broadcast_object(bool(cancel())):
                    self.save()
                    raise VDOTCancelled(f"training stopped at step {self.step}; a checkpoint was saved in {self.ckpt_dir}")
            last["checkpoint"] = str(self.save())
            exported = self.export()
            last["export"] = str(exported) if exported is not None else None
        finally:
            bar.close()
            if metrics_file is not None:
                metrics_file.close()
        return last
