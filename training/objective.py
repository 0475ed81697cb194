"""What VDOT computes in one iteration: the generator's loss and the critic's loss, every term in one place.

:class:`VDOTObjective` holds the networks (generator, frozen real score, fake score, discriminator head)
and the trainer's seeded random generator; :class:`training.trainer.Trainer` keeps only the loop, the
optimisers, checkpoints and logging (the split Self-Forcing has between ``model/dmd.py`` and
``trainer/distillation.py``).

Generator objectives (``schedule.generator_objectives``):

- DM (``loss.dm``): roll the few-step sampler out to its exit step (x̂0, grad through that step's call;
  schedule ``rollout.preset``), noise x̂0 to a random σ (:func:`draw_sigmas`), ``f`` = fake-score and ``r`` =
  real-score (CFG, negative prompt) x0-predictions, then

  - ``dmd``: :func:`~training.losses.dmd_loss`, g = (f − r)/mean|x̂0 − r| or (f − r)·σ (``loss.dmd_normalizer``);
  - ``otd``: :func:`~training.losses.otd_loss` (sample / frame clouds) or, with ``otd_cloud: pooled_positions``,
    :func:`~training.losses.pooled_otd_loss` (the released OT: per-frame pooled positions, 60 unrolled sweeps);
  - ``dmd+otd``: ``dm_mix[0]·L_DMD + dm_mix[1]·L_OT``, each with its own σ, ε and score forwards (VDOT: 0.2 / 0.8);

  plus DOLLAR's optional consistency-distillation and reward terms.
- ADV: ``L_G = softplus(−(D(x_t^fake) − D(x_t^real)))`` at a GAN σ (``gan.*``), D reading the fake score's hidden
  states (``gan.head``); the real clip noised with the fake's ε or an independent one (``gan.generator_real_noise``).

Critic (``schedule.critic_objectives``, by iteration): a no-grad rollout; ``denoise`` — the fake score's
flow-matching loss on x̂0 at a DM σ; ``disc`` — ``L_D = softplus(−(D(x_t^real) − D(x_t^fake)))`` at a GAN σ, the
same ε for real and fake, back-propagated into the whole fake score; ``denoise+disc`` — both on one forward (DM σ),
plus optional R1/R2.
"""

from __future__ import annotations

import torch
from torch import nn

from vdot_nodes.core.errors import VDOTInputError
import dataclasses

from vdot_nodes.core.sampling import NUM_TRAIN_TIMESTEPS, cfg_velocity, get_preset, preset_schedule, shift_sigma

from . import distributed as D
from .batches import EncodedBatch
from .config import TrainConfig
from .discriminator import VDOTGanHead, capture_block_hidden_states, capture_time_embedding
from .losses import (
    approx_r1_penalty,
    consistency_distillation_loss,
    critic_denoising_loss,
    dmd_loss,
    flow_matching_noise,
    gan_d_loss,
    gan_g_loss,
    otd_loss,
    pooled_otd_loss,
)
from .models import velocity_fn
from .reward import reward_loss
from .rollout import draw_exit_step, rollout

__all__ = ["VDOTObjective", "critic_objective", "draw_sigmas", "generator_objective"]


def draw_sigmas(n: int, generator: torch.Generator, *, min_t: float, max_t: float, shift: float,
                draw: str = "continuous", clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """``n`` noise levels σ ∈ [0, 1] (float64; the networks are told t = 1000·σ).

    ``continuous``: u ~ U[min_t, max_t); ``integer``: t ~ randint[int(1000·min_t), int(1000·max_t)), u = t/1000
    (the released ``_get_timestep``). Then the shift ``u' = s·u/(1 + (s−1)·u)`` and, with ``clamp = (lo, hi)``
    (fractions), a clamp of u' to [lo, hi].
    """
    if draw == "integer":
        lo, hi = int(round(1000 * min_t)), int(round(1000 * max_t))
        u = torch.randint(lo, hi, (n,), generator=generator, dtype=torch.int64).to(torch.float64) / 1000
    elif draw == "continuous":
        u = min_t + (max_t - min_t) * torch.rand(n, generator=generator, dtype=torch.float64)
    else:
        raise ValueError(f"draw must be 'continuous' or 'integer', got {draw!r}")
    u = shift_sigma(u, shift)
    if clamp is not None:
        u = u.clamp(clamp[0], clamp[1])
    return u


def critic_objective(step: int, objectives: list[str]) -> str:
    """The critic's objective at iteration ``step``: ``objectives[step % len]``."""
    return objectives[step % len(objectives)]


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
        # rollout.preset: a row of vdot_nodes.core.sampling.SAMPLER_PRESETS; none = renoise at sampler.timesteps/shift
        self.preset = (get_preset(cfg.rollout.preset) if cfg.rollout.preset else
                       get_preset("renoise", shift=cfg.sampler.shift, unshifted_timesteps=cfg.sampler.timesteps))
        self.schedule = preset_schedule(self.preset)

    # ------------------------------------------------------------------ draws
    def _seeds(self, n: int) -> list[int]:
        return torch.randint(0, 2**31 - 1, (n,), generator=self.rng).tolist()

    def _sigma(self, n: int, kind: str = "dm") -> torch.Tensor:
        """Per-sample σ of the DM / critic-denoising draws (``loss.*``) or of the GAN draws (``gan.*``)."""
        lc, g = self.cfg.loss, self.cfg.gan
        clamp = (lc.min_t, lc.max_t) if lc.timestep_clamp else None
        if kind == "gan":
            lo = lc.min_t if g.min_t is None else g.min_t
            hi = lc.max_t if g.max_t is None else g.max_t
            shift = lc.timestep_shift if g.timestep_shift is None else g.timestep_shift
        else:
            lo, hi, shift = lc.min_t, lc.max_t, lc.timestep_shift
        u = draw_sigmas(n, self.rng, min_t=lo, max_t=hi, shift=shift, draw=lc.timestep_draw, clamp=clamp)
        return u.float().to(self.device)

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.rng, dtype=torch.float32).to(self.device)

    # ------------------------------------------------------------------ network calls
    @staticmethod
    def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return sigma.view(-1, *([1] * (x.ndim - 1)))

    def _x0(self, velocity, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 = x_t − σ·v(x_t, σ·1000)."""
        return x_t - self._bcast(sigma, x_t) * velocity(x_t, sigma * 1000)

    def _velocity(self, model: nn.Module, enc: EncodedBatch, text: torch.Tensor | None = None):
        """``model``'s velocity function on ``enc`` (``runtime.timestep_bf16_quantize``: t rounded to bf16 first)."""
        v = velocity_fn(model, enc.prompt_embeds if text is None else text, enc.control, self.device)
        if not self.cfg.runtime.timestep_bf16_quantize:
            return v
        return lambda x_t, t: v(x_t, t.to(torch.bfloat16).to(t.dtype))

    def _real_velocity(self, enc: EncodedBatch):
        cond = self._velocity(self.teacher, enc)
        uncond = None
        if self.negative_embeds is not None:
            neg = self.negative_embeds.expand(enc.prompt_embeds.shape[0], -1, -1)
            uncond = self._velocity(self.teacher, enc, neg)
        g = self.cfg.guidance
        interval = None if (g.min_t, g.max_t) == (0.0, 1.0) else (NUM_TRAIN_TIMESTEPS * g.min_t, NUM_TRAIN_TIMESTEPS * g.max_t)
        return cfg_velocity(cond, uncond, g.cfg_scale, interval)

    def prepare(self, enc: EncodedBatch) -> EncodedBatch:
        """``data.reference_context: truncate`` (the released training): no reference noise frames, the VACE context
        cut to the video's frames (references align with the first output frames, the last control frames drop)."""
        r = enc.num_reference_frames
        if self.cfg.data.reference_context != "truncate" or not r:
            return enc
        frames = enc.latent_shape[1] - r
        return dataclasses.replace(enc, control=enc.control[:, :, :frames], num_reference_frames=0,
                                   latent_shape=(enc.latent_shape[0], frames, *enc.latent_shape[2:]))

    def draw_exit_step(self) -> int:
        """The rollout's exit step (the same on every rank)."""
        return draw_exit_step(self.schedule.steps, self.rng, self.cfg.sampler.last_step_only)

    def _generate(self, enc: EncodedBatch, grad: bool, return_input: bool = False, exit_step: int | None = None
                  ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """``(x̂0, k, x_k)``: the sample, its exit step (``exit_step`` or a fresh draw) and (``return_input``, else
        None) the exit step's noisy input."""
        k = self.draw_exit_step() if exit_step is None else int(exit_step)
        v = self._velocity(self.generator, enc)
        out = rollout(v, enc.latent_shape, self._seeds(enc.prompt_embeds.shape[0]), preset=self.preset, exit_step=k,
                      device=self.device, grad=grad, return_input=return_input)
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
        fake_v = self._velocity(self.fake_score, enc)
        if isinstance(self.discriminator, VDOTGanHead):
            with capture_block_hidden_states(self.fake_score, self.discriminator.tap_blocks) as feats, \
                    capture_time_embedding(self.fake_score) as temb:
                v = fake_v(x_t, sigma * 1000)
            return self.discriminator(feats, temb["e"]), v
        with capture_block_hidden_states(self.fake_score, self.discriminator.tap_blocks) as feats:
            v = fake_v(x_t, sigma * 1000)
        return self.discriminator(feats), v

    def _dollar_terms(self, enc: EncodedBatch, x0: torch.Tensor, k: int, x_k: torch.Tensor | None,
                      loss: torch.Tensor, logs: dict) -> torch.Tensor:
        """DOLLAR's optional DM-update objectives added to ``loss``: consistency distillation, latent reward."""
        lc = self.cfg.loss
        if lc.consistency_weight > 0:
            sigmas = list(self.schedule.sigmas)  # each step's input σ, then 0
            sigma_next = sigmas[k + 1] if k + 1 < len(sigmas) else 0.0  # after the last step: the teacher's x0
            student = self._velocity(self.generator, enc)  # target, no grad
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
    def _scores(self, x0: torch.Tensor, enc: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(σ, f, r)``: a DM σ, and the fake / real x0-predictions at x̂0 noised to it with a fresh ε."""
        sigma, eps = self._sigma(x0.shape[0]), self._noise(x0)
        with torch.no_grad():
            x_t = flow_matching_noise(x0.detach(), eps, sigma)
            fake = self._x0(self._velocity(self.fake_score, enc), x_t, sigma)
            real = self._x0(self._real_velocity(enc), x_t, sigma)
        return sigma, fake, real

    def _dmd_term(self, x0: torch.Tensor, enc: EncodedBatch) -> tuple[torch.Tensor, dict]:
        sigma, fake, real = self._scores(x0, enc)
        return dmd_loss(x0, fake, real, normalizer=self.cfg.loss.dmd_normalizer, sigma=sigma)

    def _otd_term(self, x0: torch.Tensor, enc: EncodedBatch) -> tuple[torch.Tensor, dict]:
        lc = self.cfg.loss
        _, fake, real = self._scores(x0, enc)
        if lc.otd_cloud == "pooled_positions":
            return pooled_otd_loss(x0, fake, real, eps=lc.otd_eps, iters=lc.otd_iters, pool=lc.otd_pool,
                                   gradient=lc.otd_gradient, step=lc.otd_step, frame_chunk=lc.otd_frame_chunk)
        gather = D.is_distributed() and lc.otd_cloud == "samples"
        return otd_loss(x0, fake, real, lc.otd_eps, variant=lc.otd_variant, cloud=lc.otd_cloud, gather=gather)

    def _dm_term(self, x0: torch.Tensor, enc: EncodedBatch) -> tuple[torch.Tensor, dict]:
        """The distribution-matching loss of ``loss.dm`` and its logs."""
        dm = self.cfg.loss.dm
        if dm == "dmd":
            return self._dmd_term(x0, enc)
        if dm == "otd":
            return self._otd_term(x0, enc)
        w_dmd, w_otd = self.cfg.loss.dm_mix
        l_dmd, logs = self._dmd_term(x0, enc)
        l_otd, otd_logs = self._otd_term(x0, enc)
        return w_dmd * l_dmd + w_otd * l_otd, {**logs, **otd_logs, "loss_dmd": l_dmd.detach(), "loss_otd": l_otd.detach()}

    def generator_loss(self, enc: EncodedBatch, objective: str, exit_step: int | None = None
                       ) -> tuple[torch.Tensor, dict]:
        """The generator's loss for ``objective`` (``dm``, ``adv`` or ``dm+adv``) and its logs."""
        cfg, logs = self.cfg, {}
        enc = self.prepare(enc)
        terms = objective.split("+")
        cd_on = "dm" in terms and cfg.loss.consistency_weight > 0
        x0, k, x_k = self._generate(enc, grad=True, return_input=cd_on, exit_step=exit_step)
        logs["exit_step"] = k
        loss = x0.new_zeros((), dtype=torch.float64)
        if "dm" in terms:
            dm, dm_logs = self._dm_term(x0, enc)
            loss = loss + cfg.loss.dm_weight * dm
            logs["loss_dm"] = dm
            logs.update(dm_logs)
            if cd_on or self.reward_model is not None:
                loss = self._dollar_terms(enc, x0, k, x_k, loss, logs)
        if "adv" in terms:
            sigma, eps = self._sigma(x0.shape[0], "gan"), self._noise(x0)
            eps_real = eps if cfg.gan.generator_real_noise == "shared" else self._noise(x0)
            d_fake, _ = self._disc_logits(flow_matching_noise(x0, eps, sigma), sigma, enc)
            with torch.no_grad():
                d_real, _ = self._disc_logits(flow_matching_noise(self._real_x0(enc, x0), eps_real, sigma), sigma, enc)
            g_loss = gan_g_loss(d_fake, d_real)
            loss = loss + cfg.loss.gan_weight * g_loss
            logs["loss_gan_g"] = g_loss
        logs["loss_generator"] = loss
        return loss, logs

    def critic_loss(self, enc: EncodedBatch, objective: str = "denoise+disc", exit_step: int | None = None
                    ) -> tuple[torch.Tensor, dict]:
        """The critic's loss for ``objective`` (``denoise``, ``disc`` or ``denoise+disc``) and its logs."""
        cfg, logs = self.cfg, {}
        enc = self.prepare(enc)
        terms = objective.split("+")
        disc = "disc" in terms and self.discriminator is not None
        with torch.no_grad():
            x0, _, _ = self._generate(enc, grad=False, exit_step=exit_step)
        sigma, eps = self._sigma(x0.shape[0], "dm" if "denoise" in terms else "gan"), self._noise(x0)
        x_t = flow_matching_noise(x0, eps, sigma)
        v, d_term, penalties = None, None, 0.0
        if disc:
            d_fake, v = self._disc_logits(x_t, sigma, enc)
            x_real_t = flow_matching_noise(self._real_x0(enc, x0), eps, sigma)  # the same ε (and σ) as the fake
            d_real, _ = self._disc_logits(x_real_t, sigma, enc)
            d_loss = gan_d_loss(d_real, d_fake)
            d_term = cfg.loss.gan_d_weight * d_loss
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
        if "denoise" in terms:
            if v is None:
                v = self._velocity(self.fake_score, enc)(x_t, sigma * 1000)
            denoise = critic_denoising_loss(v, x0, eps, sigma, weighting=cfg.loss.critic_weighting)
            logs["loss_critic_denoise"] = denoise
            loss = denoise if d_term is None else denoise + d_term
        else:
            loss = d_term
        loss = loss + penalties
        logs["loss_critic"] = loss
        return loss, logs
