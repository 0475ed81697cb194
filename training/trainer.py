"""The VDOT distillation loop: DMD / OTD + relativistic GAN, two-time-scale updates (after Self-Forcing / DMD2).

One iteration (``step`` counts from 0):

1. *Generator* (only when ``step % ttur == 0``): roll the 4-step sampler out to a random exit step
   (:mod:`training.rollout`), giving x̂0 with grad through that step's call. The objective cycles
   through ``schedule.generator_objectives`` over generator updates (``[dm, adv]``: DM, ADV, DM, ...):

   - DM: noise x̂0 to a random σ, ``f`` = fake-score and ``r`` = real-score (CFG, negative prompt)
     x0-predictions, then :func:`~training.losses.dmd_loss` or :func:`~training.losses.otd_loss`;
   - ADV: ``L_G = softplus(−(D(x_t^fake) − D(x_t^real)))``, D reading the fake score's hidden states,
     the real clip's latents noised with the same σ and ε; the gradient reaches x̂0 through the fake
     score (whose parameters are not stepped here).

   DM updates may add DOLLAR's optional objectives (each off at weight 0, and then not computed):
   consistency distillation (``loss.consistency_weight``: x̂0 vs the stop-grad student's x0 after one
   CFG-teacher ODE step to the next student σ, :func:`~training.losses.consistency_distillation_loss`)
   and the latent reward (``loss.reward_weight``: ``−mean R(x̂0)``, R = ``models.reward_model``, frozen).

   AdamW step with grad clipping, then the EMA.
2. *Critic* (every step): a fresh no-grad rollout; fake score trained with the flow-matching denoising
   loss on x̂0, plus (when ADV is scheduled) the discriminator loss
   ``L_D = softplus(−(D(x_t^real) − D(x_t^fake)))`` on the same forward's features.

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
from vdot_nodes.core.sampling import cfg_velocity, few_step_sigmas, shift_sigma

from . import distributed as D
from .batches import EncodedBatch, build_loader, encode_batch
from .encode_cache import EncodeCache
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict
from .discriminator import capture_block_hidden_states
from .divergence import check_finite_metrics
from .ema import EMA
from .losses import (
    approx_r1_penalty,
    consistency_distillation_loss,
    critic_denoising_loss,
    dmd_loss,
    flow_matching_noise,
    gan_d_loss,
    gan_g_loss,
    otd_loss,
)
from .models import build_networks, is_vace, velocity_fn
from .reward import load_reward_model, reward_loss
from .rollout import draw_exit_step, rollout
from .run_dir import export_target, new_run_id, prepare_run_folder

logger = logging.getLogger(__name__)

__all__ = ["Trainer", "generator_objective"]


def generator_objective(step: int, ttur: int, objectives: list[str]) -> str | None:
    """The generator's objective at iteration ``step`` (None: critic-only iteration)."""
    if step % ttur:
        return None
    return objectives[(step // ttur) % len(objectives)]


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
        torch.manual_seed(cfg.seed)  # identical initial weights (discriminator head) on every rank
        nets = build_networks(cfg, self.device)
        self.pipeline = nets.pipeline
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
        self.pipeline.transformer = self.teacher
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
        self.loader = build_loader(cfg)
        self.encode_cache = None
        if cfg.stage == 2 and cfg.data.encode_cache:
            self.encode_cache = EncodeCache(cfg.resolve(cfg.data.encode_cache), self.pipeline, seed=cfg.seed,
                                            negative_prompt=cfg.guidance.negative_prompt)
        self.step = 0
        if resume_from is not None:
            self.step, data_state, extra = load_checkpoint(
                resume_from, self._models(), self._optimizers(), {"generator": self.ema},
                generators={"trainer": self.rng, "data": self.data_rng},
            )
            self.loader.load_state_dict(data_state)
            self.run_id = extra.get("run_id") or self.run_id  # checkpoints from before run ids: a new one
            self._log(f"resumed from {resume_from} at step {self.step}")
        self._batches = None
        self.negative_embeds = None
        if cfg.guidance.cfg_scale != 1.0:
            self.negative_embeds = self.pipeline.encode_prompt([cfg.guidance.negative_prompt])

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

    def _seeds(self, n: int) -> list[int]:
        return torch.randint(0, 2**31 - 1, (n,), generator=self.rng).tolist()

    def _sigma(self, n: int) -> torch.Tensor:
        """Per-sample σ: u ~ U[min_t, max_t], shifted (Self-Forcing's timestep sampling)."""
        lo, hi = self.cfg.loss.min_t, self.cfg.loss.max_t
        u = lo + (hi - lo) * torch.rand(n, generator=self.rng, dtype=torch.float64)
        return shift_sigma(u, self.cfg.loss.timestep_shift).float().to(self.device)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.rng, dtype=torch.float32).to(self.device)

    @staticmethod
    def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sigma.view(-1, *([1] * (x.ndim - 1)))

    def _x0(self, velocity, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 = x_t − σ·v(x_t, σ·1000)."""
        return x_t - self._bcast(sigma, x_t) * velocity(x_t, sigma * 1000)

    def _real_velocity(self, enc: EncodedBatch):
        cond = velocity_fn(self.teacher, enc.prompt_embeds, enc.control, self.device)
        uncond = None
        if self.negative_embeds is not None:
            neg = self.negative_embeds.expand(enc.prompt_embeds.shape[0], -1, -1)
            uncond = velocity_fn(self.teacher, neg, enc.control, self.device)
        return cfg_velocity(cond, uncond, self.cfg.guidance.cfg_scale)

    def _generate(self, enc: EncodedBatch, grad: bool, return_input: bool = False
                  ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """``(x̂0, k, x_k)``: the sample, its exit step and (``return_input``, else None) the exit step's noisy input."""
        s = self.cfg.sampler
        k = draw_exit_step(len(s.timesteps), self.rng, s.last_step_only)
        v = velocity_fn(self.generator, enc.prompt_embeds, enc.control, self.device)
        out = rollout(v, enc.latent_shape, self._seeds(enc.prompt_embeds.shape[0]), timesteps=s.timesteps,
                      shift=s.shift, exit_step=k, device=self.device, grad=grad, return_input=return_input)
        return (out[0], k, out[1]) if return_input else (out, k, None)

    def _real_x0(self, enc: EncodedBatch, fake_x0: torch.Tensor) -> torch.Tensor:
        """Real clips' latents laid out like x̂0: reference-frame slots copied from x̂0 (D compares the video)."""
        real = enc.real_latents.to(self.device)
        if enc.num_reference_frames:
            real = torch.cat([fake_x0[:, :, : enc.num_reference_frames].detach(), real], dim=2)
        if real.shape != fake_x0.shape:
            raise VDOTInputError("data", f"real latents {tuple(real.shape)} do not match generated {tuple(fake_x0.shape)}",
                                 "check data.num_frames / height / width against the clips")
        return real

    def _disc_logits(self, x_t: torch.Tensor, sigma: torch.Tensor, enc: EncodedBatch):
        """D(x_t) and the fake score's velocity from the same forward."""
        fake_v = velocity_fn(self.fake_score, enc.prompt_embeds, enc.control, self.device)
        with capture_block_hidden_states(self.fake_score, self.discriminator.tap_blocks) as feats:
            v = fake_v(x_t, sigma * 1000)
        return self.discriminator(feats), v

    def _clip(self, params) -> float:
        params = [p for p in params if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        return _to_float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def _dollar_terms(self, enc: EncodedBatch, x0: torch.Tensor, k: int, x_k: torch.Tensor | None,
                      loss: torch.Tensor, logs: dict) -> torch.Tensor:
        """DOLLAR's optional DM-update objectives added to ``loss``: consistency distillation, latent reward."""
        lc = self.cfg.loss
        if lc.consistency_weight > 0:
            sigmas = few_step_sigmas(self.cfg.sampler.timesteps, self.cfg.sampler.shift)
            sigma_next = sigmas[k + 1] if k + 1 < len(sigmas) else 0.0  # after the last step: the teacher's x0
            student = velocity_fn(self.generator, enc.prompt_embeds, enc.control, self.device)  # target, no grad
            cd = consistency_distillation_loss(x0, x_k, sigmas[k], sigma_next, self._real_velocity(enc), student,
                                               huber_c=lc.consistency_huber_c)
            loss = loss + lc.consistency_weight * cd
            logs["loss_consistency"] = cd
        if self.reward_model is not None:
            video = x0[:, :, enc.num_reference_frames:]  # reference-image latent frames are not the video
            if lc.reward_weight > 0:
                r_loss = reward_loss(self.reward_model, video)
                loss = loss + lc.reward_weight * r_loss
            else:  # weight 0: only logged
                with torch.no_grad():
                    r_loss = reward_loss(self.reward_model, video.detach())
            logs["reward"] = -r_loss.detach()
        return loss

    # ------------------------------------------------------------------ updates
    def generator_step(self, enc: EncodedBatch, objective: str) -> dict:
        cfg, logs = self.cfg, {}
        self.gen_opt.zero_grad(set_to_none=True)
        cd_on = "dm" in objective.split("+") and cfg.loss.consistency_weight > 0
        with self._autocast():
            x0, k, x_k = self._generate(enc, grad=True, return_input=cd_on)
            logs["exit_step"] = k
            loss = x0.new_zeros((), dtype=torch.float64)
            if "dm" in objective.split("+"):
                sigma, eps = self._sigma(x0.shape[0]), self._noise(x0)
                with torch.no_grad():
                    x_t = flow_matching_noise(x0.detach(), eps, sigma)
                    fake = self._x0(velocity_fn(self.fake_score, enc.prompt_embeds, enc.control, self.device), x_t, sigma)
                    real = self._x0(self._real_velocity(enc), x_t, sigma)
                if cfg.loss.dm == "otd":
                    gather = D.is_distributed() and cfg.loss.otd_cloud == "samples"
                    dm, dm_logs = otd_loss(x0, fake, real, cfg.loss.otd_eps, variant=cfg.loss.otd_variant,
                                           cloud=cfg.loss.otd_cloud, gather=gather)
                else:
                    dm, dm_logs = dmd_loss(x0, fake, real)
                loss = loss + cfg.loss.dm_weight * dm
                logs["loss_dm"] = dm
                logs.update(dm_logs)
                if cd_on or self.reward_model is not None:
                    loss = self._dollar_terms(enc, x0, k, x_k, loss, logs)
            if "adv" in objective.split("+"):
                sigma, eps = self._sigma(x0.shape[0]), self._noise(x0)
                d_fake, _ = self._disc_logits(flow_matching_noise(x0, eps, sigma), sigma, enc)
                with torch.no_grad():
                    d_real, _ = self._disc_logits(flow_matching_noise(self._real_x0(enc, x0), eps, sigma), sigma, enc)
                g_loss = gan_g_loss(d_fake, d_real)
                loss = loss + cfg.loss.gan_weight * g_loss
                logs["loss_gan_g"] = g_loss
        loss.backward()
        logs["grad_norm_generator"] = self._clip(self.generator.parameters())
        self.gen_opt.step()
        self.ema.update(self.generator)
        self.critic_opt.zero_grad(set_to_none=True)  # ADV's backward went through the fake score
        logs["loss_generator"] = loss
        return logs

    def critic_step(self, enc: EncodedBatch) -> dict:
        cfg, logs = self.cfg, {}
        self.critic_opt.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                x0, _, _ = self._generate(enc, grad=False)
            sigma, eps = self._sigma(x0.shape[0]), self._noise(x0)
            x_t = flow_matching_noise(x0, eps, sigma)
            penalties = 0.0
            if self.discriminator is not None:
                d_fake, v = self._disc_logits(x_t, sigma, enc)
                x_real_t = flow_matching_noise(self._real_x0(enc, x0), eps, sigma)
                d_real, _ = self._disc_logits(x_real_t, sigma, enc)
                d_loss = gan_d_loss(d_real, d_fake)
                logs["loss_gan_d"] = d_loss
                logs["d_real_minus_fake"] = (d_real - d_fake).mean().detach()
                # Approximate R1 (real inputs) / R2 (generated inputs): D's local sensitivity by a finite
                # difference, so no double backward through the fake score is needed.
                for name, weight, x_in, d_in in (("r1", cfg.loss.r1_weight, x_real_t, d_real),
                                                 ("r2", cfg.loss.r2_weight, x_t, d_fake)):
                    if weight > 0:
                        penalty = approx_r1_penalty(lambda x: self._disc_logits(x, sigma, enc)[0], x_in,
                                                    cfg.loss.r1_sigma, d_x=d_in, noise=self._noise(x_in))
                        penalties = penalties + weight * penalty
                        logs[f"loss_{name}"] = penalty
            else:
                v = velocity_fn(self.fake_score, enc.prompt_embeds, enc.control, self.device)(x_t, sigma * 1000)
                d_loss = 0.0
            denoise = critic_denoising_loss(v, x0, eps, sigma, weighting=cfg.loss.critic_weighting)
            loss = denoise + cfg.loss.gan_d_weight * d_loss + penalties
        loss.backward()
        logs["grad_norm_critic"] = self._clip(self.critic.parameters())
        self.critic_opt.step()
        logs["loss_critic_denoise"] = denoise
        logs["loss_critic"] = loss
        return logs

    def train_step(self) -> dict:
        """One iteration; returns its metrics (floats)."""
        cfg = self.cfg
        if self._batches is None:
            self._batches = iter(self.loader)
        start = time.perf_counter()
        batch = next(self._batches)
        enc = encode_batch(cfg, self.pipeline, batch, self.data_rng, need_real=self.discriminator is not None,
                           cache=self.encode_cache)
        objective = generator_objective(self.step, cfg.schedule.ttur, cfg.schedule.generator_objectives)
        metrics: dict = {"step": self.step, "objective": objective or "critic"}
        t0 = time.perf_counter()
        if objective is not None:
            metrics.update(self.generator_step(enc, objective))
        t1 = time.perf_counter()
        metrics.update(self.critic_step(enc))
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
                             metadata={"vdot_step": str(self.step), "vdot_stage": "2", "vdot_run_id": self.run_id})
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
        from tqdm import tqdm

        from vdot_nodes.core.atomic import atomic_write_text
        from vdot_nodes.core.errors import VDOTCancelled

        cfg, lg = self.cfg, self.cfg.logging
        total = cfg.max_steps if max_steps is None else max_steps
        main = D.is_main_process()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            import yaml

            atomic_write_text(self.out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False), overwrite=True)
        metrics_file = open(self.out / "metrics.jsonl", "a", encoding="utf-8") if main else None
        bar = tqdm(total=total, initial=self.step, desc=f"VDOT stage {cfg.stage}", disable=not (main and progress))
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
                bar.set_postfix(critic=f"{last['loss_critic']:.4g}", gen=gen_loss)
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
