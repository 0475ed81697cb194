"""Samplers for Wan flow-matching models: the VDOT 4-step sampler and multi-step teacher samplers.

Conventions (Wan2.1, rectified flow): ``x_t = (1 - σ)·x0 + σ·ε`` with σ = t / 1000, and the network
predicts the velocity ``v = ε - x0``, so ``x0 = x_t - σ·v``. A shift ``s`` warps σ towards the noisy
end: ``σ' = s·σ / (1 + (s - 1)·σ)``.

Samplers take a *velocity function* ``velocity_fn(x_t, timestep) -> v`` that already carries the
conditioning (text, VACE context); classifier-free guidance is composed with :func:`cfg_velocity`.
Samplers never touch models or conditioning themselves, so training (rollout), the pipeline, the CLI
and the nodes share them unchanged.

Noise is drawn on the CPU from one ``torch.Generator`` per sample (:class:`SeededNoise`), so a seed
gives the same video on any device and a sample does not change when the batch around it does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .errors import VDOTCancelled, VDOTInputError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

VDOT_TIMESTEPS: tuple[int, ...] = (1000, 750, 500, 250)
VDOT_SHIFT = 5.0
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(sigma: float | torch.Tensor, shift: float) -> float | torch.Tensor:
    """Wan's timestep shift: σ' = s·σ / (1 + (s − 1)·σ)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def few_step_sigmas(timesteps: Sequence[float] = VDOT_TIMESTEPS, shift: float = VDOT_SHIFT) -> list[float]:
    """σ for each step of the few-step sampler: [1000, 750, 500, 250] with shift 5 → [1, .9375, .8333, .625]."""
    if len(timesteps) == 0:
        raise VDOTInputError("steps", "the step list is empty", "give at least one timestep, e.g. 1000,750,500,250")
    previous = float("inf")
    for t in timesteps:
        if not 0 < t <= NUM_TRAIN_TIMESTEPS:
            raise VDOTInputError(
                "steps", f"timestep {t} is outside (0, {NUM_TRAIN_TIMESTEPS}]", "use timesteps like 1000,750,500,250"
            )
        if t >= previous:
            raise VDOTInputError("steps", f"timesteps {list(timesteps)} are not strictly decreasing", "sort them from 1000 down")
        previous = t
    if shift <= 0:
        raise VDOTInputError("shift", f"shift must be positive, got {shift}", "use 5.0 (VDOT's default) or another value > 0")
    return [float(shift_sigma(t / NUM_TRAIN_TIMESTEPS, shift)) for t in timesteps]


def vdot_timesteps_for(num_steps: int) -> tuple[int, ...]:
    """Evenly spaced few-step timesteps: 4 → (1000, 750, 500, 250), 2 → (1000, 500)."""
    if num_steps < 1:
        raise VDOTInputError("steps", f"need at least one step, got {num_steps}", "use 4 (VDOT was distilled for 4)")
    return tuple(int(round(NUM_TRAIN_TIMESTEPS * (1 - k / num_steps))) for k in range(num_steps))


class SeededNoise:
    """Gaussian noise from one CPU generator per sample: device-independent and batch-independent."""

    def __init__(self, seeds: Sequence[int]):
        if len(seeds) == 0:
            raise VDOTInputError("seed", "no seeds given", "give one seed per video")
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]

    def draw(self, sample_shape: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
        """A ``[len(seeds), *sample_shape]`` float32 tensor of fresh N(0, 1) noise."""
        noise = [torch.randn(tuple(sample_shape), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(noise).to(device)


def cfg_velocity(cond_fn: VelocityFn, uncond_fn: VelocityFn | None, guidance_scale: float) -> VelocityFn:
    """Classifier-free guidance ``v = v_u + w·(v_c − v_u)``; with w = 1 only the conditional model runs."""
    if guidance_scale == 1.0 or uncond_fn is None:
        if guidance_scale != 1.0:
            raise VDOTInputError("cfg", f"cfg {guidance_scale} needs a negative/unconditional prompt", "set cfg to 1")
        return cond_fn

    def guided(x_t: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        v_cond = cond_fn(x_t, timestep)
        v_uncond = uncond_fn(x_t, timestep)
        return v_uncond + guidance_scale * (v_cond - v_uncond)

    return guided


def check_cancel(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise VDOTCancelled("generation interrupted by the user")


def _timestep_batch(sigma: float, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), sigma * NUM_TRAIN_TIMESTEPS, device=device, dtype=torch.float32)


def sample_vdot(
    velocity_fn: VelocityFn,
    noise: SeededNoise,
    sample_shape: Sequence[int],
    *,
    timesteps: Sequence[float] = VDOT_TIMESTEPS,
    shift: float = VDOT_SHIFT,
    init_latents: torch.Tensor | None = None,
    denoise: float = 1.0,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    exit_step: int | None = None,
) -> torch.Tensor:
    """The VDOT few-step sampler (Self-Forcing style, bidirectional); returns the last x0.

    For each step k: ``x0 = x_t − σ_k·v(x_t, t_k)``; if k is not the last step,
    ``x_t = (1 − σ_{k+1})·x0 + σ_{k+1}·ε_fresh``. Every step is evaluated — the last one too — so the
    model runs exactly ``len(timesteps)`` times. The model sees the *warped* timestep σ_k·1000.

    ``denoise < 1`` scales the timesteps and starts from ``init_latents`` noised to the first σ
    (video-to-video re-generation); the default 1 starts from pure noise.

    ``exit_step`` (training rollout, Self-Forcing's backward simulation): stop after step
    ``exit_step`` and return its x0; the steps before it run without grad and only that step keeps
    the caller's grad mode, so backprop goes through exactly one model call.
    """
    if not 0 < denoise <= 1:
        raise VDOTInputError("denoise", f"must be in (0, 1], got {denoise}", "use 1.0 to generate from noise")
    if denoise < 1 and init_latents is None:
        raise VDOTInputError("denoise", f"denoise {denoise} < 1 needs input latents to start from", "set denoise to 1.0")
    sigmas = few_step_sigmas([t * denoise for t in timesteps], shift)
    batch = len(noise.seeds)
    x_t = noise.draw(sample_shape, device)
    if denoise < 1:
        init = init_latents.to(device=device, dtype=torch.float32)
        x_t = (1 - sigmas[0]) * init + sigmas[0] * x_t
    last = len(sigmas) - 1 if exit_step is None else int(exit_step)
    if not 0 <= last < len(sigmas):
        raise VDOTInputError("exit_step", f"{exit_step} is not a step of this {len(sigmas)}-step sampler",
                             f"use 0..{len(sigmas) - 1}")
    grad_enabled = torch.is_grad_enabled()
    x0 = x_t
    for k, sigma in enumerate(sigmas[: last + 1]):
        check_cancel(cancel)
        with torch.set_grad_enabled(grad_enabled and (exit_step is None or k == last)):
            v = velocity_fn(x_t, _timestep_batch(sigma, batch, device)).float()
            x0 = x_t - sigma * v
        if k < last:
            next_sigma = sigmas[k + 1]
            x_t = (1 - next_sigma) * x0 + next_sigma * noise.draw(sample_shape, device)
        if progress is not None:
            progress(k + 1, len(sigmas))
    return x0


def teacher_sigmas(num_steps: int, shift: float) -> list[float]:
    """Euler schedule of the multi-step teacher: σ from 1 to 0 in ``num_steps`` uniform steps, shifted."""
    if num_steps < 1:
        raise VDOTInputError("steps", f"need at least one step, got {num_steps}", "use e.g. 50 for the teacher")
    return [float(shift_sigma(1 - i / num_steps, shift)) for i in range(num_steps + 1)]


def sample_teacher(
    velocity_fn: VelocityFn,
    noise: SeededNoise,
    sample_shape: Sequence[int],
    *,
    num_steps: int = 50,
    shift: float = VDOT_SHIFT,
    solver: str = "euler",
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Multi-step flow-matching ODE sampler (the 50/100-step teacher baseline).

    ``solver="euler"``: ``x ← x + (σ_{i+1} − σ_i)·v``. ``solver="unipc"``: diffusers'
    ``UniPCMultistepScheduler`` in flow-prediction mode, the scheduler Wan itself ships with.
    Compose CFG into ``velocity_fn`` with :func:`cfg_velocity` (two model calls per step).
    """
    batch = len(noise.seeds)
    x = noise.draw(sample_shape, device)
    if solver == "euler":
        sigmas = teacher_sigmas(num_steps, shift)
        for i in range(num_steps):
            check_cancel(cancel)
            v = velocity_fn(x, _timestep_batch(sigmas[i], batch, device)).float()
            x = x + (sigmas[i + 1] - sigmas[i]) * v
            if progress is not None:
                progress(i + 1, num_steps)
        return x
    if solver == "unipc":
        from diffusers import UniPCMultistepScheduler

        scheduler = UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
        )
        scheduler.set_timesteps(num_steps, device=device)
        for i, t in enumerate(scheduler.timesteps):
            check_cancel(cancel)
            timestep = torch.full((batch,), float(t), device=device, dtype=torch.float32)
            v = velocity_fn(x, timestep).float()
            x = scheduler.step(v, t, x, return_dict=False)[0]
            if progress is not None:
                progress(i + 1, num_steps)
        return x
    raise VDOTInputError("sampler", f"unknown teacher solver {solver!r}", "use 'euler' or 'unipc'")
