"""What VDOT computes in one iteration: the generator's loss and the critic's loss, every term in one place.

:class:`VDOTObjective` holds the networks (generator, frozen real score, fake score, discriminator head)
and the trainer's seeded random generator; :class:`training.trainer.Trainer` keeps only the loop, the
optimisers, checkpoints and logging (the split Self-Forcing has between ``model/dmd.py`` and
``trainer/distillation.py``).

Generator objectives (``schedule.generator_objectives``):

- DM: roll the few-step sampler out to its exit step (x̂0, grad through that step's call), noise x̂0 to a
  random σ, ``f`` = fake-score and ``r`` = real-score (CFG, negative prompt) x0-predictions, then
  :func:`~training.losses.dmd_loss` or :func:`~training.losses.otd_loss`; plus DOLLAR's optional
  consistency-distillation and reward terms.
- ADV: ``L_G = softplus(−(D(x_t^fake) − D(x_t^real)))``, D reading the fake score's hidden states.

Critic: a no-grad rollout; the fake score's flow-matching denoising loss on x̂0, plus (when the GAN is on)
``L_D = softplus(−(D(x_t^real) − D(x_t^fake)))`` on the same forward's features, and optional R1/R2.
"""

from __future__ import annotations

import torch
from torch import nn

from vdot_nodes.core.errors import VDOTInputError
from vdot_nodes.core.sampling import cfg_velocity, few_step_sigmas, shift_sigma

from . import distributed as D
from .batches import EncodedBatch
from .config import TrainConfig
from .discriminator import capture_block_hidden_states
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
from .models import velocity_fn
from .reward import reward_loss
from .rollout import draw_exit_step, rollout

__all__ = ["VDOTObjective", "generator_objective"]


def generator_objective(step: int, ttur: int, objectives: list[str]) -> str | None:
    """The generator's objective at iteration ``step`` (None: critic-only iteration)."""
    if step % ttur:
        return None
    return objectives[(step // ttur) % len(objectives)]


class VDOTObjective:
    """The losses of one VDOT iteration; every random draw comes from ``rng`` (saved with the checkpoint)."""

    def __init__(self, cfg: TrainConfig, *, generator: nn.Module, teacher: nn.Module, fake_score: nn.Module,
                 discriminator: nn.Module | None, negative_embeds: torch.Tensor | None,
                 reward_model: nn.Module | None, rng: torch.Generator, device: torch.device):
        self.cfg = cfg
        self.generator, self.teacher, self.fake_score = generator, teacher, fake_score
        self.discriminator = discriminator
        self.negative_embeds = negative_embeds
        self.reward_model = reward_model
        self.rng = rng
        self.device = device

    # ------------------------------------------------------------------ draws
    def _seeds(self, n: int) -> list[int]:
        return torch.randint(0, 2**31 - 1, (n,), generator=self.rng).tolist()

    def _sigma(self, n: int) -> torch.Tensor:
        """Per-sample σ: u ~ U[min_t, max_t], shifted (Self-Forcing's timestep sampling)."""
        lo, hi = self.cfg.loss.min_t, self.cfg.loss.max_t
        u = lo + (hi - lo) * torch.rand(n, generator=self.rng, dtype=torch.float64)
        return shift_sigma(u, self.cfg.loss.timestep_shift).float().to(self.device)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.rng, dtype=torch.float32).to(self.device)

    # ------------------------------------------------------------------ network calls
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

    # ------------------------------------------------------------------ the two losses
    def generator_loss(self, enc: EncodedBatch, objective: str) -> tuple[torch.Tensor, dict]:
        """The generator's loss for ``objective`` (``dm``, ``adv`` or ``dm+adv``) and its logs."""
        cfg, logs = self.cfg, {}
        terms = objective.split("+")
        cd_on = "dm" in terms and cfg.loss.consistency_weight > 0
        x0, k, x_k = self._generate(enc, grad=True, return_input=cd_on)
        logs["exit_step"] = k
        loss = x0.new_zeros((), dtype=torch.float64)
        if "dm" in terms:
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
        if "adv" in terms:
            sigma, eps = self._sigma(x0.shape[0]), self._noise(x0)
            d_fake, _ = self._disc_logits(flow_matching_noise(x0, eps, sigma), sigma, enc)
            with torch.no_grad():
                d_real, _ = self._disc_logits(flow_matching_noise(self._real_x0(enc, x0), eps, sigma), sigma, enc)
            g_loss = gan_g_loss(d_fake, d_real)
            loss = loss + cfg.loss.gan_weight * g_loss
            logs["loss_gan_g"] = g_loss
        logs["loss_generator"] = loss
        return loss, logs

    def critic_loss(self, enc: EncodedBatch) -> tuple[torch.Tensor, dict]:
        """The critic's loss (fake-score denoising + discriminator) and its logs."""
        cfg, logs = self.cfg, {}
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
        logs["loss_critic_denoise"] = denoise
        logs["loss_critic"] = loss
        return loss, logs
